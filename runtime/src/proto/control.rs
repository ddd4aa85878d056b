//! The control store: the cluster's node table with heartbeats, and the directory of its jobs
//! (their actors and placement groups, see [`crate::proto::directory`]). Sans-IO: the head's
//! daemon feeds it requests and the time, sends back what it answers, and saves
//! [`ControlStore::snapshot`] to the session directory whenever [`ControlStore::changed`] says
//! so, so that a restarted head knows its nodes and jobs again ([`ControlStore::recover`]).
//!
//! Membership changes (a node joins, leaves, stops being heard from, is heard from again, is
//! restarted) are numbered: each is a new version of the table, and a subscriber that says which
//! version it has gets what changed since ([`ControlStore::updates`]). The shell calls
//! [`ControlStore::tick`] often enough for a silent node to be counted dead on time.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::proto::board::TaskBoard;
use crate::proto::directory::{Directory, JOB_TIMEOUT, SavedJob};
use crate::proto::names::{NameClaims, SavedClaim};
use prism_graph::ActorId;
use prism_transport::{
    FromControl, JobEvents, MemberUpdate, NodeStatus, NodeUsage, NodeUse, PendingDemand, PullStats,
    ToControl,
};

/// How many membership changes the store remembers for subscribers (one further behind gets
/// the whole table).
const REMEMBERED: usize = 4096;

/// What is kept of a node across a head restart.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SavedNode {
    /// The node's number.
    pub(crate) id: u32,
    /// Its name.
    pub(crate) name: String,
    /// Where it listens.
    pub(crate) addr: String,
    /// Its resources.
    pub(crate) total: Vec<(String, f64)>,
    /// Its daemon's start identity.
    #[serde(default)]
    pub(crate) boot: u64,
}

/// What a restarted head recovers: the node table and the directory of jobs.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Saved {
    /// Every node.
    pub(crate) nodes: Vec<SavedNode>,
    /// Every job the head kept.
    #[serde(default)]
    pub(crate) jobs: Vec<SavedJob>,
    /// The actors' names the jobs claimed.
    #[serde(default)]
    pub(crate) names: Vec<SavedClaim>,
}

/// One registered node.
#[derive(Debug, Clone)]
struct NodeRecord {
    name: String,
    addr: String,
    total: Vec<(String, f64)>,
    available: Vec<(String, f64)>,
    last_seen: Instant,
    pulled: PullStats,
    usage: NodeUsage,
    /// The daemon's start identity (see [`ToControl::Register`]).
    boot: u64,
    /// Whether subscribers were last told the node is alive.
    told_alive: bool,
    /// It was asked to drain and leave.
    draining: bool,
}

/// A job's last report.
#[derive(Debug, Clone)]
struct JobReport {
    pending: Vec<PendingDemand>,
    used: Vec<NodeUse>,
    at: Instant,
}

/// The node table.
#[derive(Debug)]
pub(crate) struct ControlStore {
    nodes: BTreeMap<u32, NodeRecord>,
    next: u32,
    timeout: Duration,
    changed: bool,
    /// Each job's waiting demand and use, as of its last report (forgotten after the timeout).
    jobs: BTreeMap<String, JobReport>,
    /// Every job, its actors and placement groups.
    directory: Directory,
    /// The actors' names the jobs claimed.
    names: NameClaims,
    /// This head's incarnation: versions are numbered anew by each.
    epoch: u64,
    /// The membership version: how many changes this incarnation has seen.
    version: u64,
    /// The latest changes: the version each made and the node it concerned.
    log: VecDeque<(u64, u32)>,
    /// When the head last looked for silent nodes (see [`ControlStore::check`]).
    last_tick: Option<Instant>,
    /// What the drivers report of their tasks (not saved: drivers report again).
    board: TaskBoard,
}

impl ControlStore {
    /// A store that counts a node dead after `timeout` without a heartbeat; `epoch` tells this
    /// head incarnation's versions from another's (chosen at the head's start).
    pub(crate) fn new(timeout: Duration, epoch: u64) -> Self {
        ControlStore {
            nodes: BTreeMap::new(),
            next: 1,
            timeout,
            changed: false,
            jobs: BTreeMap::new(),
            directory: Directory::new(JOB_TIMEOUT),
            names: NameClaims::new(JOB_TIMEOUT),
            epoch,
            version: 0,
            log: VecDeque::new(),
            last_tick: None,
            board: TaskBoard::new(crate::proto::events::DEFAULT_CAPACITY),
        }
    }

    /// A store that knows the `saved` nodes and jobs. Each node is given `grace` beyond the
    /// timeout from `now` to be heard from again (the time a node takes to notice that the
    /// head it beat to is gone and to connect to this one, see [`reconnect_grace`]), so that
    /// drivers reading the table meanwhile do not count every node lost.
    pub(crate) fn recover(
        timeout: Duration,
        epoch: u64,
        saved: Saved,
        now: Instant,
        grace: Duration,
    ) -> Self {
        let mut store = Self::new(timeout, epoch);
        store.directory = Directory::recover(JOB_TIMEOUT, saved.jobs, now);
        store.names = NameClaims::recover(JOB_TIMEOUT, saved.names, now);
        for node in saved.nodes {
            store.next = store.next.max(node.id + 1);
            store.nodes.insert(
                node.id,
                NodeRecord {
                    name: node.name,
                    addr: node.addr,
                    available: node.total.clone(),
                    total: node.total,
                    // Counted as heard from until `grace` from now.
                    last_seen: now + grace,
                    pulled: PullStats::default(),
                    usage: NodeUsage::default(),
                    boot: node.boot,
                    told_alive: true,
                    draining: false,
                },
            );
        }
        store
    }

    /// What to save: every node's identity and resources, and the directory of jobs.
    pub(crate) fn snapshot(&self) -> Saved {
        let nodes = self.nodes.iter().map(|(id, n)| SavedNode {
            id: *id,
            name: n.name.clone(),
            addr: n.addr.clone(),
            total: n.total.clone(),
            boot: n.boot,
        });
        Saved {
            nodes: nodes.collect(),
            jobs: self.directory.snapshot(),
            names: self.names.snapshot(),
        }
    }

    /// Whether the node table or the directory changed since the last call (then save a
    /// snapshot).
    pub(crate) fn changed(&mut self) -> bool {
        let jobs = self.directory.changed();
        let names = self.names.changed();
        std::mem::take(&mut self.changed) || jobs || names
    }

    /// Every job's last summary of its tasks, objects and times (for `/metrics`).
    pub(crate) fn summaries(&self) -> Vec<prism_transport::JobSummary> {
        self.board.summaries()
    }

    /// The task records `query` asks for (for the dashboard).
    pub(crate) fn tasks(
        &self,
        query: &prism_transport::TaskQuery,
    ) -> (Vec<prism_transport::JobTask>, u64) {
        self.board.tasks(query)
    }

    /// Every job the store knows, as it is (without counting silent ones failed first).
    pub(crate) fn jobs(&self) -> Vec<prism_transport::JobStatus> {
        self.directory.jobs()
    }

    /// Handles one request at time `now`.
    pub(crate) fn handle(&mut self, request: ToControl, now: Instant) -> FromControl {
        match request {
            ToControl::Register {
                name,
                addr,
                resources,
                boot,
            } => {
                let known = self.nodes.iter().find(|(_, n)| n.name == name);
                // A daemon restarted on the node's host replaces the record at once (the old
                // one is dead: it would have gone on with its own registration); a live name
                // on another host is refused.
                if let Some((id, node)) = known
                    && self.alive(node, now)
                    && host_of(&node.addr) != host_of(&addr)
                {
                    return FromControl::Error(format!(
                        "a live node named {name} is already registered from {} (node {id})",
                        host_of(&node.addr)
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
                tracing::info!(node = id, name, addr, boot, "node registered");
                self.nodes.insert(
                    id,
                    NodeRecord {
                        name,
                        addr,
                        available: resources.clone(),
                        total: resources,
                        last_seen: now,
                        pulled: PullStats::default(),
                        usage: NodeUsage::default(),
                        boot,
                        told_alive: true,
                        draining: false,
                    },
                );
                self.note(id);
                FromControl::Registered(id)
            }
            ToControl::Heartbeat {
                node,
                available,
                pulled,
                usage,
            } => match self.nodes.get_mut(&node) {
                Some(record) => {
                    record.available = available;
                    record.last_seen = now;
                    record.pulled = pulled;
                    record.usage = usage;
                    let draining = record.draining;
                    if !std::mem::replace(&mut record.told_alive, true) {
                        tracing::info!(node, name = record.name, "node heard from again");
                        self.note(node);
                    }
                    if draining {
                        FromControl::Drain
                    } else {
                        FromControl::Ack
                    }
                }
                None => FromControl::Error(format!("node {node} is not registered")),
            },
            ToControl::Status => FromControl::Status(self.status(now)),
            ToControl::Report { job, pending, used } => {
                if pending.is_empty() && used.is_empty() {
                    self.jobs.remove(&job);
                } else {
                    let at = now;
                    self.jobs.insert(job, JobReport { pending, used, at });
                }
                FromControl::Ack
            }
            ToControl::Leave { node } => FromControl::Error(format!(
                "node {node} may leave only on its own connection (see ControlStore::leave)"
            )),
            ToControl::Drain { name } => {
                let Some((&id, record)) = self.nodes.iter_mut().find(|(_, n)| n.name == name)
                else {
                    return FromControl::Error(format!("no node named {name} is registered"));
                };
                if !std::mem::replace(&mut record.draining, true) {
                    tracing::info!(node = id, name, "node draining");
                    self.note(id);
                }
                FromControl::Ack
            }
            ToControl::Watch { epoch, after } => {
                FromControl::Members(self.updates(epoch, after, now))
            }
            ToControl::Job(update) => self.directory.apply(update, now),
            ToControl::Jobs => {
                self.directory.tick(now);
                FromControl::Jobs(self.directory.jobs())
            }
            ToControl::Events(events) => {
                self.board.report(events);
                FromControl::Ack
            }
            ToControl::NodeEvents(events) => FromControl::Error(format!(
                "task events of job {} from an unnamed node are refused",
                events.summary.job
            )),
            ToControl::Tasks(query) => {
                let (tasks, matched) = self.board.tasks(&query);
                FromControl::Tasks { tasks, matched }
            }
            ToControl::Summaries => FromControl::Summaries(self.board.summaries()),
            ToControl::FindName { namespace, name } => self.find_name(&namespace, &name, now),
            ToControl::WatchActor { job, actor } => {
                FromControl::ActorChanged(self.actor_status(&job, actor))
            }
            ToControl::ClaimName { name, .. } | ToControl::ReleaseName { name, .. } => {
                FromControl::Error(format!(
                    "the actor name {name:?} may be claimed or released only by a job's driver, on its own connection"
                ))
            }
            ToControl::CreateDetached(_)
            | ToControl::KillActor { .. }
            | ToControl::KillNamed { .. }
            | ToControl::HostDetached { .. }
            | ToControl::TakeOrders => FromControl::Error(
                "actors are made and killed by the head's daemon, which orders their job's driver on its own connection"
                    .to_string(),
            ),
            ToControl::Demands => {
                self.forget_silent_jobs(now);
                FromControl::Demands(
                    self.jobs
                        .values()
                        .flat_map(|job| job.pending.iter().cloned())
                        .collect(),
                )
            }
        }
    }

    /// Member `member` reports the task events of job `job`'s workers there that own
    /// tasks ([`ToControl::NodeEvents`]): taken from a registered node, for a job the head
    /// knows.
    pub(crate) fn node_events(&mut self, member: &str, events: JobEvents) -> FromControl {
        let job = &events.summary.job;
        if !self.nodes.values().any(|n| n.name == member) {
            return FromControl::Error(format!(
                "{member} is no registered node: it cannot report the tasks of job {job}"
            ));
        }
        if !self.directory.knows(job) {
            return FromControl::Error(format!(
                "node {member} reports the tasks of job {job}, which the head does not know"
            ));
        }
        self.board.report_node(member, events);
        FromControl::Ack
    }

    /// Job `job` (its driver's own connection) claims `name` in `namespace` for its actor
    /// `actor` ([`ToControl::ClaimName`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn claim_name(
        &mut self,
        job: &str,
        namespace: &str,
        name: &str,
        actor: ActorId,
        class: &str,
        now: Instant,
    ) -> FromControl {
        let directory = &self.directory;
        let holder = |job: &str, actor| directory.holder(job, actor);
        match (self.names).claim(job, namespace, name, actor, class, now, holder) {
            Ok(()) => FromControl::Ack,
            Err(job) => FromControl::NameHeld { job },
        }
    }

    /// The live actor named `name` in `namespace`, of any job ([`ToControl::FindName`]).
    pub(crate) fn find_name(&self, namespace: &str, name: &str, now: Instant) -> FromControl {
        let directory = &self.directory;
        let holder = |job: &str, actor| directory.holder(job, actor);
        match self.names.find(namespace, name, now, holder) {
            Some((job, actor, class)) => FromControl::Found {
                status: directory.actor(&job, actor),
                job,
                actor,
                class,
            },
            None => FromControl::NotFound,
        }
    }

    /// Job `job`'s actor `actor` as the directory has it ([`ToControl::WatchActor`]).
    pub(crate) fn actor_status(
        &self,
        job: &str,
        actor: ActorId,
    ) -> Option<prism_transport::ActorStatus> {
        self.directory.actor(job, actor)
    }

    /// How many times the directory of jobs changed.
    pub(crate) fn directory_version(&self) -> u64 {
        self.directory.version()
    }

    /// Job `job`'s actor `actor` died: its claim on `name` goes ([`ToControl::ReleaseName`]).
    pub(crate) fn release_name(
        &mut self,
        job: &str,
        namespace: &str,
        name: &str,
        actor: ActorId,
    ) -> FromControl {
        self.names.release(job, namespace, name, actor);
        FromControl::Ack
    }

    /// Node `node` leaves, as the member named `member` asks: its record goes (a member may
    /// take only its own record out).
    pub(crate) fn leave(&mut self, node: u32, member: &str) -> FromControl {
        match self.nodes.get(&node) {
            Some(record) if record.name == member => {
                tracing::info!(node, name = member, "node left");
                self.nodes.remove(&node);
                self.changed = true;
                self.note(node);
                FromControl::Ack
            }
            Some(record) => FromControl::Error(format!(
                "{member} cannot take node {node} ({}) out of the cluster",
                record.name
            )),
            // Asked again after the first answer was lost on a failed connection: gone is
            // what the node asked for.
            None => FromControl::Ack,
        }
    }

    /// Counts the nodes not heard from within the timeout dead, each a membership change, and
    /// the jobs whose drivers went silent failed.
    pub(crate) fn tick(&mut self, now: Instant) {
        self.directory.tick(now);
        let directory = &self.directory;
        (self.names).prune(now, |job, actor| directory.holder(job, actor));
        let timeout = self.timeout;
        let silent: Vec<u32> = self
            .nodes
            .iter_mut()
            .filter(|(_, n)| n.told_alive && now.saturating_duration_since(n.last_seen) > timeout)
            .map(|(id, n)| {
                n.told_alive = false;
                tracing::warn!(
                    node = id,
                    name = n.name,
                    "node not heard from: counted dead"
                );
                *id
            })
            .collect();
        for id in silent {
            self.note(id);
        }
    }

    /// The head's periodic look (every [`SILENCE_CHECK`]): [`ControlStore::tick`], after
    /// forgiving the nodes the time the head itself did not run. A head that did not run
    /// for a while (its process starved of CPU, or stopped) heard nothing meanwhile through
    /// no fault of the nodes: the gap since its last look beyond [`HEAD_STALL`] is not
    /// counted against them, or one stall of the head would count every node dead at once
    /// (seen on a loaded 2-core machine: the head's own node and three others, all "not
    /// heard from for 1.1 s", and a job that then placed work while no node was alive).
    pub(crate) fn check(&mut self, now: Instant) {
        self.forgive_stall(now);
        self.tick(now);
    }

    /// Moves every node's last heartbeat on by the time the head itself did not run, beyond
    /// [`HEAD_STALL`], since its last look (never past `now`).
    fn forgive_stall(&mut self, now: Instant) {
        let lost = self
            .last_tick
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at))
            .saturating_sub(HEAD_STALL);
        self.last_tick = Some(now);
        if lost.is_zero() {
            return;
        }
        tracing::warn!(
            stalled_ms = lost.as_millis() as u64,
            "the head did not run for a while: that time is not counted against its nodes"
        );
        for node in self.nodes.values_mut() {
            node.last_seen = (node.last_seen + lost).min(now.max(node.last_seen));
        }
    }

    /// The membership version (see [`ControlStore::updates`]).
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// What a subscriber whose copy is at `after` of incarnation `epoch` must learn: the nodes
    /// that changed since, or the whole table if its copy is from another incarnation or older
    /// than the changes remembered.
    pub(crate) fn updates(&mut self, epoch: u64, after: u64, now: Instant) -> MemberUpdate {
        self.tick(now);
        let oldest = self.log.front().map_or(self.version + 1, |(v, _)| *v);
        if epoch != self.epoch || after > self.version || after + 1 < oldest {
            return MemberUpdate {
                epoch: self.epoch,
                version: self.version,
                full: true,
                nodes: self.status(now),
                gone: Vec::new(),
            };
        }
        let changed: BTreeSet<u32> = self
            .log
            .iter()
            .filter(|(v, _)| *v > after)
            .map(|(_, id)| *id)
            .collect();
        self.forget_silent_jobs(now);
        let (nodes, gone) = changed
            .into_iter()
            .partition::<Vec<u32>, _>(|id| self.nodes.contains_key(id));
        MemberUpdate {
            epoch: self.epoch,
            version: self.version,
            full: false,
            nodes: nodes
                .iter()
                .map(|id| self.status_of(*id, &self.nodes[id], now))
                .collect(),
            gone,
        }
    }

    /// Numbers a change of node `id`'s membership.
    fn note(&mut self, id: u32) {
        self.version += 1;
        self.log.push_back((self.version, id));
        if self.log.len() > REMEMBERED {
            self.log.pop_front();
        }
    }

    fn alive(&self, node: &NodeRecord, now: Instant) -> bool {
        now.saturating_duration_since(node.last_seen) <= self.timeout
    }

    /// Reports older than the timeout are from jobs that ended without saying so.
    fn forget_silent_jobs(&mut self, now: Instant) {
        let timeout = self.timeout;
        self.jobs
            .retain(|_, job| now.saturating_duration_since(job.at) <= timeout);
    }

    /// Every node, with whether it is alive at `now` and what is free on it.
    pub(crate) fn status(&mut self, now: Instant) -> Vec<NodeStatus> {
        self.forget_silent_jobs(now);
        self.nodes
            .iter()
            .map(|(id, n)| self.status_of(*id, n, now))
            .collect()
    }

    /// Node `id` as `status` shows it.
    fn status_of(&self, id: u32, n: &NodeRecord, now: Instant) -> NodeStatus {
        let mut available = n.available.clone();
        let uses = self.jobs.values().flat_map(|job| &job.used);
        for (name, amount) in uses.filter(|u| u.addr == n.addr).flat_map(|u| &u.used) {
            if let Some((_, free)) = available.iter_mut().find(|(k, _)| k == name) {
                *free = (*free - amount).max(0.0);
            }
        }
        NodeStatus {
            id,
            name: n.name.clone(),
            addr: n.addr.clone(),
            total: n.total.clone(),
            available,
            alive: self.alive(n, now),
            last_seen_ms: now.saturating_duration_since(n.last_seen).as_millis() as u64,
            pulled: n.pulled,
            usage: n.usage,
            boot: n.boot,
            draining: n.draining,
        }
    }
}

/// How often a node tells the head it is alive, unless configured otherwise.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(500);

/// How long the head waits for a node's heartbeat before it counts the node dead, unless
/// configured otherwise: four missed beats at the default pace, so that a death or a partition
/// is known within 3 s on a local network.
pub(crate) const NODE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a node waits for the answer to a heartbeat before it counts the head's
/// connection dead and connects again, at heartbeat interval `heartbeat`.
pub(crate) fn beat_answer_wait(heartbeat: Duration) -> Duration {
    (heartbeat * 5).max(Duration::from_secs(1))
}

/// How long a node beating every `heartbeat` may take to reach a restarted head: the wait for
/// the dead head's answer, then one heartbeat's pause before it connects again.
pub(crate) fn reconnect_grace(heartbeat: Duration) -> Duration {
    beat_answer_wait(heartbeat) + heartbeat
}

/// How often the head looks for nodes that went silent ([`ControlStore::tick`]).
pub(crate) const SILENCE_CHECK: Duration = Duration::from_millis(100);

/// A gap between two looks of the head at its nodes longer than this means the head itself
/// did not run (it looks every [`SILENCE_CHECK`]); the rest of the gap is not counted against
/// the nodes ([`ControlStore::check`]).
pub(crate) const HEAD_STALL: Duration = Duration::from_millis(500);

/// How long a node that stops (`prism stop`, `prism drain`) waits for its jobs to let it go
/// (their tasks there finished or handed back) before it ends them.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// How long a driver waits for the head to answer a request before it counts the head's
/// connection dead (the next request connects again).
pub(crate) const HEAD_ANSWER: Duration = Duration::from_secs(2);

/// How long the head waits for a job's driver to answer one of its orders (a creation of a
/// detached actor waits for its name's claim); a member that asked for the order waits this
/// and [`HEAD_ANSWER`].
pub(crate) const ORDER_ANSWER: Duration = Duration::from_secs(30);

/// How often the head speaks on a subscription when nothing changes.
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(1);

/// How long a subscriber waits for the head to speak before it counts the head's connection
/// dead and subscribes again.
pub(crate) const HEAD_SILENCE: Duration = Duration::from_secs(3);

/// A subscriber's copy of the node table, kept by applying the head's [`MemberUpdate`]s.
#[derive(Debug, Default)]
pub(crate) struct Members {
    epoch: u64,
    version: u64,
    nodes: BTreeMap<u32, NodeStatus>,
}

impl Members {
    /// The subscription that brings this copy up to date.
    pub(crate) fn watch(&self) -> ToControl {
        ToControl::Watch {
            epoch: self.epoch,
            after: self.version,
        }
    }

    /// Applies an update from the head.
    pub(crate) fn apply(&mut self, update: MemberUpdate) {
        if update.full {
            self.nodes.clear();
        }
        for id in update.gone {
            self.nodes.remove(&id);
        }
        for node in update.nodes {
            self.nodes.insert(node.id, node);
        }
        self.epoch = update.epoch;
        self.version = update.version;
    }

    /// The table as it stands, by node number.
    pub(crate) fn table(&self) -> Vec<NodeStatus> {
        self.nodes.values().cloned().collect()
    }
}

/// The host part of a `host:port` address (all of it if it has no port).
fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

/// A node's resources as `name used/total`, each name passed through `escape` (for HTML).
pub(crate) fn usage_line(node: &NodeStatus, escape: impl Fn(&str) -> String) -> String {
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

/// What a node pulled, as `3 objects, 12.5 MiB`.
pub(crate) fn pulled_line(pulled: &PullStats) -> String {
    format!(
        "{} object{}, {:.1} MiB",
        pulled.objects,
        if pulled.objects == 1 { "" } else { "s" },
        pulled.bytes as f64 / f64::from(1u32 << 20)
    )
}

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
pub(crate) fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date, counting in 400-year eras from 0000-03-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_796_301_296_000), "2026-12-03 12:34:56");
    }

    fn register(store: &mut ControlStore, name: &str, now: Instant) -> FromControl {
        register_from(store, name, "127.0.0.2:1", 1, now)
    }

    fn register_from(
        store: &mut ControlStore,
        name: &str,
        addr: &str,
        boot: u64,
        now: Instant,
    ) -> FromControl {
        let request = ToControl::Register {
            name: name.into(),
            addr: addr.into(),
            resources: vec![("CPU".into(), 2.0)],
            boot,
        };
        store.handle(request, now)
    }

    #[test]
    fn a_name_is_one_job_s_across_the_cluster_until_its_actor_dies_or_its_job_ends_even_over_a_restart()
     {
        use crate::proto::directory::Publisher;
        use prism_graph::TaskId;
        use prism_transport::{ActorState, ActorStatus, JobInfo};
        let t0 = Instant::now();
        let mut store = ControlStore::new(Duration::from_secs(10), 1);
        let actor = |n: u64| ActorId(TaskId::new(0, n));
        let info = JobInfo {
            driver: "127.0.0.1".into(),
            pid: 42,
            entry: "test".into(),
            started_ms: 1_000,
        };
        let mut publisher = Publisher::new("a".into(), info);
        let status = |state: ActorState| ActorStatus {
            id: actor(1),
            class: "Counter".into(),
            name: Some("c".into()),
            namespace: "svc".into(),
            state,
            node: String::new(),
            restarts: 0,
            reach: None,
            max_task_retries: 0,
        };
        // Job a claims before its directory lists the actor; b is refused, named a.
        assert_eq!(
            store.claim_name("a", "svc", "c", actor(1), "Counter", t0),
            FromControl::Ack
        );
        let held = FromControl::NameHeld { job: "a".into() };
        assert_eq!(
            store.claim_name("b", "svc", "c", actor(2), "Counter", t0),
            held
        );
        assert_eq!(
            store.claim_name("b", "other", "c", actor(2), "Counter", t0),
            FromControl::Ack
        );
        let update = publisher.update(vec![status(ActorState::Alive)], Vec::new(), 1_000, false);
        assert_eq!(
            store.handle(ToControl::Job(update.unwrap()), t0),
            FromControl::Ack
        );
        publisher.answered(1, true);
        // Any job finds it, with its directory entry.
        match store.find_name("svc", "c", t0) {
            FromControl::Found {
                job,
                actor: found,
                class,
                status: Some(status),
            } => assert_eq!(
                (job.as_str(), found, class.as_str(), status.state),
                ("a", actor(1), "Counter", ActorState::Alive)
            ),
            other => panic!("found: {other:?}"),
        }
        assert_eq!(store.find_name("other", "x", t0), FromControl::NotFound);
        // Only a driver's own connection claims (the daemon routes those to `claim_name`).
        let claim = ToControl::ClaimName {
            namespace: "svc".into(),
            name: "c".into(),
            actor: actor(2),
            class: "Counter".into(),
        };
        assert!(matches!(store.handle(claim, t0), FromControl::Error(_)));
        // A restarted head keeps the claims.
        assert!(store.changed());
        let saved: Saved =
            serde_json::from_str(&serde_json::to_string(&store.snapshot()).unwrap()).unwrap();
        let t1 = t0 + Duration::from_secs(1);
        let grace = Duration::ZERO;
        let mut store = ControlStore::recover(Duration::from_secs(10), 2, saved, t1, grace);
        assert_eq!(
            store.claim_name("b", "svc", "c", actor(2), "Counter", t1),
            held
        );
        // The actor dies and its release is lost: the directory's word frees the name.
        let update = publisher.update(
            vec![status(ActorState::Dead("killed".into()))],
            Vec::new(),
            2_000,
            false,
        );
        assert_eq!(
            store.handle(ToControl::Job(update.unwrap()), t1),
            FromControl::Ack
        );
        assert_eq!(store.find_name("svc", "c", t1), FromControl::NotFound);
        assert_eq!(
            store.claim_name("b", "svc", "c", actor(2), "Counter", t1),
            FromControl::Ack
        );
        // b releases it; a takes it again for a new actor, then a's job ends: free again.
        assert_eq!(
            store.release_name("b", "svc", "c", actor(2)),
            FromControl::Ack
        );
        assert_eq!(
            store.claim_name("a", "svc", "c", actor(3), "Counter", t1),
            FromControl::Ack
        );
        assert_eq!(
            store.claim_name("b", "svc", "c", actor(2), "Counter", t1),
            held
        );
        let last = publisher.update(Vec::new(), Vec::new(), 3_000, true);
        assert_eq!(
            store.handle(ToControl::Job(last.unwrap()), t1),
            FromControl::Ack
        );
        store.tick(t1);
        assert_eq!(
            store.names.snapshot().len(),
            1,
            "only b's other name is left"
        );
        assert_eq!(
            store.claim_name("b", "svc", "c", actor(2), "Counter", t1),
            FromControl::Ack
        );
    }

    #[test]
    fn only_a_registered_node_reports_task_events_and_only_for_a_known_job() {
        use crate::proto::directory::Publisher;
        use prism_transport::{JobInfo, JobSummary, TaskCount, TaskPhase};
        let t0 = Instant::now();
        let mut store = ControlStore::new(Duration::from_secs(10), 1);
        assert_eq!(
            register(&mut store, "alpha", t0),
            FromControl::Registered(1)
        );
        let events = |job: &str| JobEvents {
            tasks: Vec::new(),
            summary: JobSummary {
                job: job.into(),
                tasks: vec![TaskCount {
                    function: "child".into(),
                    kind: None,
                    state: TaskPhase::Finished,
                    count: 3,
                    dropped: 0,
                }],
                objects: Vec::new(),
                times: Vec::new(),
            },
        };
        let refused = |answer: FromControl, says: &str| match answer {
            FromControl::Error(e) => assert!(e.contains(says), "{e}"),
            other => panic!("taken: {other:?}"),
        };
        refused(
            store.node_events("alpha", events("j")),
            "which the head does not know",
        );
        let info = JobInfo {
            driver: "127.0.0.1".into(),
            pid: 42,
            entry: "test".into(),
            started_ms: 1_000,
        };
        let update = Publisher::new("j".into(), info).update(Vec::new(), Vec::new(), 1_000, false);
        let update = update.expect("a first update");
        assert_eq!(store.handle(ToControl::Job(update), t0), FromControl::Ack);
        refused(store.node_events("beta", events("j")), "no registered node");
        refused(
            store.handle(ToControl::NodeEvents(events("j")), t0),
            "from an unnamed node",
        );
        assert!(store.summaries().is_empty(), "nothing refused was taken");
        assert_eq!(store.node_events("alpha", events("j")), FromControl::Ack);
        let summaries = store.summaries();
        assert_eq!(summaries.len(), 1);
        assert_eq!(summaries[0].tasks[0].count, 3);
    }

    #[test]
    fn a_node_that_leaves_is_gone_at_once_and_only_it_may_say_so() {
        let t0 = Instant::now();
        let mut store = ControlStore::new(Duration::from_secs(10), 1);
        assert_eq!(register(&mut store, "a", t0), FromControl::Registered(1));
        assert_eq!(register(&mut store, "b", t0), FromControl::Registered(2));
        assert!(matches!(store.leave(1, "b"), FromControl::Error(_)));
        assert!(matches!(
            store.handle(ToControl::Leave { node: 1 }, t0),
            FromControl::Error(_)
        ));
        assert_eq!(store.status(t0).len(), 2, "nobody else takes a node out");
        assert_eq!(store.leave(1, "a"), FromControl::Ack);
        let names: Vec<String> = store.status(t0).into_iter().map(|n| n.name).collect();
        assert_eq!(
            names,
            vec!["b".to_string()],
            "gone without waiting for the timeout"
        );
        assert!(store.changed(), "the saved table follows");
        assert_eq!(
            store.leave(1, "a"),
            FromControl::Ack,
            "asked again (its answer lost), the leave holds"
        );
    }

    #[test]
    fn nodes_register_heartbeat_and_die_after_the_timeout() {
        let t0 = Instant::now();
        let mut store = ControlStore::new(Duration::from_secs(3), 1);
        assert_eq!(register(&mut store, "a", t0), FromControl::Registered(1));
        assert_eq!(register(&mut store, "b", t0), FromControl::Registered(2));
        // A live name from another host is refused; a daemon restarted on the node's host
        // replaces the record at once (a new boot).
        assert!(matches!(
            register_from(&mut store, "a", "127.0.0.9:1", 7, t0),
            FromControl::Error(e) if e.contains("already registered from 127.0.0.2")
        ));
        assert_eq!(
            register_from(&mut store, "a", "127.0.0.2:5", 2, t0),
            FromControl::Registered(1)
        );
        assert_eq!(store.status(t0)[0].boot, 2);
        assert_eq!(store.status(t0)[0].addr, "127.0.0.2:5");
        assert_eq!(register(&mut store, "a", t0), FromControl::Registered(1));
        let later = t0 + Duration::from_secs(2);
        let beat = ToControl::Heartbeat {
            node: 1,
            available: vec![("CPU".into(), 2.0)],
            pulled: PullStats {
                objects: 1,
                bytes: 10,
            },
            usage: NodeUsage {
                workers: 2,
                store_bytes: 30,
                spilled_bytes: 4,
                relayed: 5,
            },
        };
        assert_eq!(store.handle(beat, later), FromControl::Ack);
        // A job reports what it holds on node a (its address): status subtracts it.
        let report = ToControl::Report {
            job: "job".into(),
            pending: vec![],
            used: vec![NodeUse {
                addr: "127.0.0.2:1".into(),
                used: vec![("CPU".into(), 1.5)],
            }],
        };
        assert_eq!(store.handle(report, later), FromControl::Ack);
        let status = store.status(t0 + Duration::from_secs(4));
        assert!(status[0].alive, "a beat at 2 s");
        assert_eq!(status[0].available, vec![("CPU".to_string(), 0.5)]);
        assert_eq!(
            status[0].pulled,
            PullStats {
                objects: 1,
                bytes: 10
            }
        );
        assert!(!status[1].alive, "b was last seen at 0 s");
        assert_eq!(status[1].last_seen_ms, 4000);
        // A job that stops reporting is forgotten after the timeout.
        let later = store.status(t0 + Duration::from_secs(6));
        assert_eq!(later[0].available, vec![("CPU".to_string(), 2.0)]);
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
            pulled: PullStats::default(),
            usage: NodeUsage::default(),
        };
        assert!(matches!(store.handle(unknown, t0), FromControl::Error(_)));
    }

    /// The table a subscriber's copy shows, without what changes with every heartbeat.
    fn membership(nodes: Vec<NodeStatus>) -> Vec<(u32, String, u64, bool)> {
        nodes
            .into_iter()
            .map(|n| (n.id, n.name, n.boot, n.alive))
            .collect()
    }

    #[test]
    fn a_stalled_head_does_not_count_its_nodes_dead_for_the_time_it_lost() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut store = ControlStore::new(Duration::from_secs(1), 1);
        register(&mut store, "a", t0);
        register_from(&mut store, "b", "127.0.0.3:1", 1, t0);
        store.check(at(100));
        // The head does not run for 1.5 s: on its next look nobody is dead.
        store.check(at(1_600));
        assert!(store.status(at(1_600)).iter().all(|n| n.alive));
        // a is heard from; b stays silent and is dead a timeout after the time forgiven.
        let beat = ToControl::Heartbeat {
            node: 1,
            available: vec![("CPU".into(), 2.0)],
            pulled: PullStats::default(),
            usage: NodeUsage::default(),
        };
        for ms in (1_700..=2_000).step_by(100) {
            store.handle(beat.clone(), at(ms));
            store.check(at(ms));
        }
        let alive = |store: &mut ControlStore, ms| -> Vec<bool> {
            store.status(at(ms)).iter().map(|n| n.alive).collect()
        };
        assert_eq!(alive(&mut store, 2_000), vec![true, true]);
        store.handle(beat.clone(), at(2_100));
        store.check(at(2_100));
        assert_eq!(alive(&mut store, 2_100), vec![true, false]);
    }

    #[test]
    fn subscribers_learn_each_membership_change_and_only_those() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut store = ControlStore::new(Duration::from_secs(2), 7);
        let mut copy = Members::default();
        let catch_up = |store: &mut ControlStore, copy: &mut Members, now| {
            let ToControl::Watch { epoch, after } = copy.watch() else {
                unreachable!("a subscription");
            };
            let update = store.updates(epoch, after, now);
            let changes = (update.full, update.nodes.len() + update.gone.len());
            copy.apply(update);
            changes
        };
        assert_eq!(
            catch_up(&mut store, &mut copy, t0),
            (true, 0),
            "the whole (empty) table first"
        );
        register(&mut store, "a", t0);
        register_from(&mut store, "b", "127.0.0.3:1", 1, t0);
        assert_eq!(catch_up(&mut store, &mut copy, t0), (false, 2));
        assert_eq!(
            catch_up(&mut store, &mut copy, at(500)),
            (false, 0),
            "heartbeats are not changes"
        );
        let beat = |node| ToControl::Heartbeat {
            node,
            available: vec![("CPU".into(), 1.0)],
            pulled: PullStats::default(),
            usage: NodeUsage::default(),
        };
        // a beats on; b goes silent and is counted dead once the timeout has passed.
        store.handle(beat(1), at(1_500));
        store.tick(at(2_000));
        assert_eq!(store.version(), 2, "not yet: 2 s is within the timeout");
        store.tick(at(2_001));
        assert_eq!(store.version(), 3, "b's death is a change");
        store.tick(at(2_500));
        assert_eq!(store.version(), 3, "counted once");
        assert_eq!(catch_up(&mut store, &mut copy, at(2_500)), (false, 1));
        assert_eq!(
            membership(copy.table()),
            vec![(1, "a".into(), 1, true), (2, "b".into(), 1, false)]
        );
        // b comes back (a beat), then a restarted daemon replaces it, then a leaves.
        store.handle(beat(2), at(2_600));
        register_from(&mut store, "b", "127.0.0.3:2", 9, at(2_700));
        assert_eq!(store.leave(1, "a"), FromControl::Ack);
        assert_eq!(
            catch_up(&mut store, &mut copy, at(2_800)),
            (false, 2),
            "b once, a gone"
        );
        assert_eq!(membership(copy.table()), vec![(2, "b".into(), 9, true)]);
        assert_eq!(
            membership(copy.table()),
            membership(store.status(at(2_800))),
            "the copy is the table"
        );
        // A restarted head (another epoch) sends the whole table.
        let saved = store.snapshot();
        let mut restarted =
            ControlStore::recover(Duration::from_secs(2), 8, saved, at(3_000), Duration::ZERO);
        assert_eq!(catch_up(&mut restarted, &mut copy, at(3_000)), (true, 1));
        assert_eq!(membership(copy.table()), vec![(2, "b".into(), 9, true)]);
        // A subscriber further behind than the changes remembered gets the whole table too.
        let (epoch, stale) = (copy.epoch, copy.version);
        for i in 0..REMEMBERED + 1 {
            register(&mut restarted, &format!("n{i}"), at(3_000));
        }
        let update = restarted.updates(epoch, stale, at(3_000));
        assert!(update.full && update.nodes.len() == REMEMBERED + 2);
        let update = restarted.updates(epoch, stale + 2, at(3_000));
        assert!(!update.full && update.nodes.len() == REMEMBERED - 1);
    }

    #[test]
    fn a_draining_node_is_a_membership_change_and_hears_it_in_its_heartbeat_answer() {
        let t0 = Instant::now();
        let mut store = ControlStore::new(Duration::from_secs(2), 1);
        register(&mut store, "a", t0);
        let version = store.version();
        let beat = ToControl::Heartbeat {
            node: 1,
            available: vec![],
            pulled: PullStats::default(),
            usage: NodeUsage::default(),
        };
        assert_eq!(store.handle(beat.clone(), t0), FromControl::Ack);
        let drain = |name: &str| ToControl::Drain { name: name.into() };
        assert!(matches!(
            store.handle(drain("nobody"), t0),
            FromControl::Error(e) if e.contains("no node named nobody")
        ));
        assert_eq!(store.handle(drain("a"), t0), FromControl::Ack);
        assert_eq!(store.handle(drain("a"), t0), FromControl::Ack);
        assert_eq!(
            store.version(),
            version + 1,
            "one change, however often asked"
        );
        let update = store.updates(1, version, t0);
        assert!(update.nodes.len() == 1 && update.nodes[0].draining);
        assert_eq!(
            store.handle(beat, t0),
            FromControl::Drain,
            "the node is told"
        );
        // A daemon started again under the name is a new member, not draining.
        register_from(&mut store, "a", "127.0.0.2:9", 2, t0);
        assert!(!store.status(t0)[0].draining);
    }

    #[test]
    fn a_recovered_store_gives_its_nodes_a_timeout_to_be_heard_from() {
        let t0 = Instant::now();
        let mut store = ControlStore::new(Duration::from_secs(3), 1);
        register(&mut store, "a", t0);
        register(&mut store, "b", t0);
        let saved = store.snapshot();
        let json = serde_json::to_string(&saved).unwrap();
        let back: Saved = serde_json::from_str(&json).unwrap();
        assert_eq!(back, saved);

        let later = t0 + Duration::from_secs(60);
        let grace = Duration::from_secs(1);
        let mut recovered = ControlStore::recover(Duration::from_secs(3), 2, back, later, grace);
        assert!(
            recovered
                .status(later + Duration::from_millis(3_900))
                .iter()
                .all(|n| n.alive),
            "within the timeout and the grace"
        );
        let beat = ToControl::Heartbeat {
            node: 2,
            available: vec![("CPU".into(), 2.0)],
            pulled: PullStats::default(),
            usage: NodeUsage::default(),
        };
        let then = later + Duration::from_secs(2);
        assert_eq!(recovered.handle(beat, then), FromControl::Ack, "b beats on");
        assert_eq!(
            register(&mut recovered, "new", then),
            FromControl::Registered(3)
        );
        let status = recovered.status(later + Duration::from_millis(4_100));
        assert_eq!(
            status.iter().map(|n| n.alive).collect::<Vec<_>>(),
            vec![false, true, true],
            "a, never heard from again, is dead after the timeout and the grace"
        );
    }
}
