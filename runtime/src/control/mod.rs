//! The control store: the cluster's node table with heartbeats. Sans-IO: the head's daemon feeds
//! it requests and the time, sends back what it answers, and saves [`ControlStore::snapshot`]
//! to the session directory whenever [`ControlStore::changed`] says so, so that a restarted head
//! knows its nodes again ([`ControlStore::recover`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prism_transport::{FromControl, NodeStatus, PendingDemand, ToControl};

/// What is kept of a node across a head restart.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedNode {
    /// The node's number.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Where it listens.
    pub addr: String,
    /// Its resources.
    pub total: Vec<(String, f64)>,
}

/// One registered node.
#[derive(Debug, Clone)]
struct NodeRecord {
    name: String,
    addr: String,
    total: Vec<(String, f64)>,
    available: Vec<(String, f64)>,
    last_seen: Instant,
}

/// The node table.
#[derive(Debug)]
pub struct ControlStore {
    nodes: BTreeMap<u32, NodeRecord>,
    next: u32,
    timeout: Duration,
    changed: bool,
    /// Each job's waiting demand, as of its last report (forgotten after the timeout).
    demands: BTreeMap<String, (Vec<PendingDemand>, Instant)>,
}

impl ControlStore {
    /// A store that counts a node dead after `timeout` without a heartbeat.
    pub fn new(timeout: Duration) -> Self {
        ControlStore {
            nodes: BTreeMap::new(),
            next: 1,
            timeout,
            changed: false,
            demands: BTreeMap::new(),
        }
    }

    /// A store that knows the `saved` nodes, each counted dead until it registers again.
    pub fn recover(timeout: Duration, saved: Vec<SavedNode>, now: Instant) -> Self {
        let mut store = Self::new(timeout);
        let long_ago = now.checked_sub(timeout * 2).unwrap_or(now);
        for node in saved {
            store.next = store.next.max(node.id + 1);
            store.nodes.insert(
                node.id,
                NodeRecord {
                    name: node.name,
                    addr: node.addr,
                    available: node.total.clone(),
                    total: node.total,
                    last_seen: long_ago,
                },
            );
        }
        store
    }

    /// What to save: every node's identity and resources.
    pub fn snapshot(&self) -> Vec<SavedNode> {
        self.nodes
            .iter()
            .map(|(id, n)| SavedNode {
                id: *id,
                name: n.name.clone(),
                addr: n.addr.clone(),
                total: n.total.clone(),
            })
            .collect()
    }

    /// Whether the node table changed since the last call (then save a snapshot).
    pub fn changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Handles one request at time `now`.
    pub fn handle(&mut self, request: ToControl, now: Instant) -> FromControl {
        match request {
            ToControl::Register {
                name,
                addr,
                resources,
            } => {
                let known = self.nodes.iter().find(|(_, n)| n.name == name);
                if let Some((id, node)) = known
                    && self.alive(node, now)
                {
                    return FromControl::Error(format!(
                        "a live node named {name} is already registered (node {id})"
                    ));
                }
                // A node that comes back under its name keeps its number.
                let id = match known {
                    Some((id, _)) => *id,
                    None => {
                        self.next += 1;
                        self.next - 1
                    }
                };
                self.changed = true;
                tracing::info!(node = id, name, addr, "node registered");
                self.nodes.insert(
                    id,
                    NodeRecord {
                        name,
                        addr,
                        available: resources.clone(),
                        total: resources,
                        last_seen: now,
                    },
                );
                FromControl::Registered(id)
            }
            ToControl::Heartbeat { node, available } => match self.nodes.get_mut(&node) {
                Some(record) => {
                    record.available = available;
                    record.last_seen = now;
                    FromControl::Ack
                }
                None => FromControl::Error(format!("node {node} is not registered")),
            },
            ToControl::Status => FromControl::Status(self.status(now)),
            ToControl::Demand { job, pending } => {
                if pending.is_empty() {
                    self.demands.remove(&job);
                } else {
                    self.demands.insert(job, (pending, now));
                }
                FromControl::Ack
            }
            ToControl::Demands => {
                let timeout = self.timeout;
                self.demands
                    .retain(|_, (_, at)| now.saturating_duration_since(*at) <= timeout);
                FromControl::Demands(
                    self.demands
                        .values()
                        .flat_map(|(pending, _)| pending.iter().cloned())
                        .collect(),
                )
            }
        }
    }

    fn alive(&self, node: &NodeRecord, now: Instant) -> bool {
        now.saturating_duration_since(node.last_seen) <= self.timeout
    }

    /// Every node, with whether it is alive at `now`.
    pub fn status(&self, now: Instant) -> Vec<NodeStatus> {
        self.nodes
            .iter()
            .map(|(id, n)| NodeStatus {
                id: *id,
                name: n.name.clone(),
                addr: n.addr.clone(),
                total: n.total.clone(),
                available: n.available.clone(),
                alive: self.alive(n, now),
                last_seen_ms: now.saturating_duration_since(n.last_seen).as_millis() as u64,
            })
            .collect()
    }
}

/// A node's resources as `name used/total`, each name passed through `escape` (for HTML).
pub fn usage_line(node: &NodeStatus, escape: impl Fn(&str) -> String) -> String {
    node.total
        .iter()
        .map(|(name, total)| {
            let free = node
                .available
                .iter()
                .find(|(k, _)| k == name)
                .map_or(0.0, |(_, v)| *v);
            format!("{} {}/{}", escape(name), total - free, total)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(store: &mut ControlStore, name: &str, now: Instant) -> FromControl {
        store.handle(
            ToControl::Register {
                name: name.into(),
                addr: "127.0.0.2:1".into(),
                resources: vec![("CPU".into(), 2.0)],
            },
            now,
        )
    }

    #[test]
    fn nodes_register_heartbeat_and_die_after_the_timeout() {
        let t0 = Instant::now();
        let mut store = ControlStore::new(Duration::from_secs(3));
        assert_eq!(register(&mut store, "a", t0), FromControl::Registered(1));
        assert_eq!(register(&mut store, "b", t0), FromControl::Registered(2));
        assert!(
            matches!(register(&mut store, "a", t0), FromControl::Error(e) if e.contains("already"))
        );
        let later = t0 + Duration::from_secs(2);
        let beat = ToControl::Heartbeat {
            node: 1,
            available: vec![("CPU".into(), 1.0)],
        };
        assert_eq!(store.handle(beat, later), FromControl::Ack);
        let status = store.status(t0 + Duration::from_secs(4));
        assert!(status[0].alive, "a beat at 2 s");
        assert_eq!(status[0].available, vec![("CPU".to_string(), 1.0)]);
        assert!(!status[1].alive, "b was last seen at 0 s");
        assert_eq!(status[1].last_seen_ms, 4000);
        // A dead node's name can be registered again (a restarted daemon): same number.
        assert!(store.changed());
        assert_eq!(
            register(&mut store, "b", t0 + Duration::from_secs(4)),
            FromControl::Registered(2)
        );
        assert!(
            store.changed() && !store.changed(),
            "one change, reported once"
        );
        assert_eq!(register(&mut store, "c", t0), FromControl::Registered(3));
        let unknown = ToControl::Heartbeat {
            node: 9,
            available: vec![],
        };
        assert!(matches!(store.handle(unknown, t0), FromControl::Error(_)));
    }

    #[test]
    fn a_recovered_store_knows_its_nodes_as_dead_until_they_return() {
        let t0 = Instant::now();
        let mut store = ControlStore::new(Duration::from_secs(3));
        register(&mut store, "a", t0);
        register(&mut store, "b", t0);
        let saved = store.snapshot();
        let json = serde_json::to_string(&saved).unwrap();
        let back: Vec<SavedNode> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, saved);

        let later = t0 + Duration::from_secs(60);
        let mut recovered = ControlStore::recover(Duration::from_secs(3), back, later);
        assert!(recovered.status(later).iter().all(|n| !n.alive));
        assert_eq!(
            register(&mut recovered, "b", later),
            FromControl::Registered(2)
        );
        assert_eq!(
            register(&mut recovered, "new", later),
            FromControl::Registered(3)
        );
        let status = recovered.status(later);
        assert_eq!(
            status.iter().map(|n| n.alive).collect::<Vec<_>>(),
            vec![false, true, true]
        );
    }
}
