//! The control store: the cluster's node table with heartbeats. Sans-IO: the head's daemon feeds
//! it requests and the time, and sends back what it answers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prism_transport::{FromControl, NodeStatus, ToControl};

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
}

impl ControlStore {
    /// A store that counts a node dead after `timeout` without a heartbeat.
    pub fn new(timeout: Duration) -> Self {
        ControlStore {
            nodes: BTreeMap::new(),
            next: 1,
            timeout,
        }
    }

    /// Handles one request at time `now`.
    pub fn handle(&mut self, request: ToControl, now: Instant) -> FromControl {
        match request {
            ToControl::Register {
                name,
                addr,
                resources,
            } => {
                if let Some((id, _)) = self
                    .nodes
                    .iter()
                    .find(|(_, n)| n.name == name && self.alive(n, now))
                {
                    return FromControl::Error(format!(
                        "a live node named {name} is already registered (node {id})"
                    ));
                }
                let id = self.next;
                self.next += 1;
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
        // A dead node's name can be registered again (a restarted daemon).
        assert_eq!(
            register(&mut store, "b", t0 + Duration::from_secs(4)),
            FromControl::Registered(3)
        );
        let unknown = ToControl::Heartbeat {
            node: 9,
            available: vec![],
        };
        assert!(matches!(store.handle(unknown, t0), FromControl::Error(_)));
    }
}
