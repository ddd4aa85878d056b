//! A deterministic simulator of a cluster (`prism-sim`): the real protocol core of the
//! drivers' nodes ([`crate::proto::node::State`]), of the head ([`crate::proto::control::ControlStore`]), of the node
//! daemons' hosting of jobs ([`crate::proto::host::Hosting`]) and of the workers' books
//! ([`crate::proto::worker::Worker`]) run in one thread against simulated processes, stores and
//! a network, on a simulated clock, with every random choice drawn from one seeded generator.
//! Faults (killed, restarted, frozen, partitioned or draining nodes, killed workers, a killed and
//! restarted head, slow links) are injected by the seed, and invariants are checked after every
//! step; the same configuration prints the same output byte for byte, so a failing seed
//! replays exactly.
//!
//! Several drivers may share the cluster ([`Config::drivers`]): each runs the workload as a job
//! of its own, with its own node core, subscription to the head and directory there; every
//! node daemon hosts each job (a store, workers, a lease and pulls per job, kept apart by the
//! daemon's books), and the CPU check counts every job's tasks on a node.
//!
//! What is simulated follows the shells it stands in for: node daemons start and kill workers,
//! fetch objects from each other and drop copies on request, as their books decide; a worker
//! runs the tasks it is sent in order, for their simulated duration, and fails a task whose
//! shared argument is not in its node's store (as a real worker cannot map the segment); a
//! driver learns of a dead node from the head's table (read every second, connecting again
//! after the head restarted; a restarted head gives its nodes one timeout to be heard from) or
//! when QUIC's idle timeout closes the node's connection; a live node a job does not use
//! (restarted, or back after the job lost it) is asked to host the job again and counted as a
//! new node. Each node holds a lease on each job that the job's driver renews
//! ([`crate::proto::lease`]); a node cut off for longer than the lease stops the job's workers,
//! and the driver starts no actor of a lost node again before that node's lease ended, so that
//! no actor runs two incarnations at once (checked whenever an incarnation starts or a frozen
//! node runs again).

mod world;

use std::time::Duration;

pub use world::run;

/// The shape of the work each simulated driver submits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Independent tasks with small results, all held by the driver and read at the end.
    FanOut,
    /// A binary tree reduction: leaves make large objects, each inner task reads two.
    Tree,
    /// One task makes a large object and every other task reads it (placed on whichever
    /// node has room, so that most nodes need a copy).
    Broadcast,
    /// [`NESTED_PARENTS`] tasks each submit their share of the tasks from their worker and
    /// wait for them (blocked, their CPU given back), as issue 20's nested fan-out.
    Nested,
    /// As [`Workload::Nested`], but each parent's share is pairs: a task that makes a large
    /// object (left on the node it ran on, its parent owning it) and a task that reads it
    /// (leased near it, else pulling it); the parents wait for the readers.
    Pipeline,
}

/// The parents of the [`Workload::Nested`] workload.
pub const NESTED_PARENTS: usize = 10;

/// Nodes killed in turn at a fixed rate until the driver has read its results: nodes 1, 2,
/// .., N-1, 1, .. (node 0 stays, as the head's own node does in the chaos test), each started
/// again after `restart_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chaos {
    /// Time between kills (the first comes after one period).
    pub every: Duration,
    /// Time from a kill to the node's restart.
    pub restart_after: Duration,
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Config {
    /// Nodes of the cluster.
    pub nodes: usize,
    /// Drivers, each running its own job of the workload below on the same cluster.
    pub drivers: usize,
    /// CPUs per node.
    pub cpus: u32,
    /// CPUs each node tells the cluster it has, when not `cpus` (a node that lies, to show
    /// the over-commit check at work).
    pub advertised_cpus: Option<u32>,
    /// Tasks each driver submits.
    pub tasks: usize,
    /// Their shape.
    pub workload: Workload,
    /// Actors the driver creates besides (each holds a CPU, is restarted whenever its process
    /// dies, and retries its calls up to `max_retries`).
    pub actors: usize,
    /// Calls the driver makes on each actor (small results, all held and read at the end).
    pub calls: usize,
    /// With the nested workload and actors: the parents call the driver's actors in turn
    /// (calls their workers own, pushed to the actors' workers) instead of submitting plain
    /// children.
    pub parents_call: bool,
    /// Whether to inject faults.
    pub faults: bool,
    /// Kill a node in turn at a fixed rate while the work runs (as the chaos test does on
    /// real processes), besides any other faults.
    pub chaos: Option<Chaos>,
    /// The seed of every random choice.
    pub seed: u64,
    /// One-way network latency (each message also gets up to half of it again as jitter).
    pub latency: Duration,
    /// Bytes per second each host sends (its link out is shared by everything it sends).
    pub bandwidth: u64,
    /// Mean run time of a task (each runs between half and one and a half of it).
    pub task_time: Duration,
    /// Size of a large object (the tree's values).
    pub large: u64,
    /// Capacity of each node's object store (and the driver's) in bytes: a node over it
    /// spills.
    pub store_capacity: u64,
    /// Bytes of the job's binary, which each node pulls from the driver before it first
    /// starts a worker of the job.
    pub binary: u64,
    /// How often the head hears from each node.
    pub heartbeat: Duration,
    /// How long the head waits for a heartbeat before it counts a node dead.
    pub node_timeout: Duration,
    /// How long a node's lease on the job runs after the driver's last renewal: a node cut
    /// off for longer stops the job's processes (see [`crate::proto::lease`]).
    pub lease: Duration,
    /// Whether nodes hold leases on the job and the driver waits for a lost node's lease to
    /// end before it starts the node's actors again (off: as before leases, a node stops the
    /// job's processes only once it sees the job's connection closed; shows the incarnation
    /// check at work).
    pub fencing: bool,
    /// Whether each node's daemon grants its resources to the jobs (off: every driver counts
    /// every node whole, and two drivers over-commit a node; shows the CPU check at work).
    pub grants: bool,
    /// Whether workers own the plain tasks they submit (off: the driver owns every task, as
    /// before worker owners): nested children then go worker to worker through their node.
    pub owners: bool,
    /// Whether each node's daemon grants its workers' leases from a pool of its own and
    /// lends the driver its workers (`proto::pool`); off: the driver grants every lease and
    /// starts its own workers (as before session 34), for comparisons.
    pub pools: bool,
    /// Whether a pool's workers have direct endpoints (as a node daemon's do): an owner's
    /// pushes to a worker leased on another node, and their ends, go worker to worker over
    /// the network instead of through both nodes' relays; off: relayed, for comparisons.
    pub direct: bool,
    /// After how long a silent peer's QUIC connection closes.
    pub idle_timeout: Duration,
    /// How long a node's object manager tries to connect to a peer.
    pub connect_timeout: Duration,
    /// The driver's processor time per event it handles (a submission, a message): the
    /// driver is one thread, so events queue behind each other. Zero: free.
    pub driver_cost: Duration,
    /// Retries of a task whose worker died (and budget of its rebuilds no node loss explains).
    pub max_retries: u32,
    /// Invariants are checked after every this many steps (1: after each).
    pub check_every: u64,
    /// The run stops (and reports unfinished tasks) after this much simulated time.
    pub time_limit: Duration,
    /// Bytes the process has allocated now (a counting allocator's reading), to measure the
    /// owner's memory per task and per object.
    pub memory_probe: Option<fn() -> usize>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            nodes: 10,
            drivers: 1,
            cpus: 16,
            advertised_cpus: None,
            tasks: 2_000,
            workload: Workload::Tree,
            actors: 0,
            calls: 20,
            parents_call: false,
            faults: false,
            chaos: None,
            seed: 1,
            latency: Duration::from_micros(100),
            bandwidth: 1_000_000_000,
            task_time: Duration::from_millis(10),
            large: 1_600_000,
            store_capacity: 1 << 40,
            binary: 20 << 20,
            heartbeat: crate::proto::control::HEARTBEAT,
            node_timeout: crate::proto::control::NODE_TIMEOUT,
            lease: crate::proto::lease::LENGTH,
            fencing: true,
            grants: true,
            owners: true,
            pools: true,
            direct: true,
            idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
            driver_cost: Duration::from_micros(10),
            max_retries: 5,
            check_every: 1,
            time_limit: Duration::from_secs(3_600),
            memory_probe: None,
        }
    }
}

/// What a run did. Everything but `real` is the same for the same configuration.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Tasks submitted.
    pub tasks: usize,
    /// Held objects that ended with a value.
    pub values: usize,
    /// Held objects that ended with a named error, by kind.
    pub errors: Vec<(String, usize)>,
    /// Held objects that never ended (a violation when the run was not cut by the time limit).
    pub unfinished: usize,
    /// Simulated time until everything ended.
    pub sim_time: Duration,
    /// Events handled.
    pub steps: u64,
    /// Tasks the driver's scheduler sent to workers (first runs, retries and rebuilds).
    pub dispatched: u64,
    /// Messages the drivers received from workers (see `prism::worker_messages_received`).
    pub driver_messages: u64,
    /// Requests the head handled (registrations, heartbeats, status reads, job reports).
    pub control_messages: u64,
    /// Lease messages the nodes' pools sent one another (asks passed on, their answers).
    pub peer_lease_messages: u64,
    /// Faults injected.
    pub faults: usize,
    /// Times a node joined the job again (restarted, or back after the job lost it).
    pub joins: usize,
    /// Tasks a worker could not start because an argument was not in its node's store.
    pub missing_arguments: u64,
    /// Objects pulled into nodes' stores from other hosts (not there already).
    pub pulls: u64,
    /// Pushes from another node's owner that a daemon (relayed) or the worker (on a direct
    /// link) dropped: they came after their lease ended (across a partition), for a worker not
    /// leased to that owner.
    pub stale_pushes: u64,
    /// Pushes on direct links that waited at their worker for its node's word that it was
    /// lent to their owner (the word and the push crossed).
    pub held_pushes: u64,
    /// Objects nodes spilled to their disks, and restored.
    pub spilled: u64,
    pub restored: u64,
    /// The longest a fetch between nodes took.
    pub slowest_fetch: Duration,
    /// The most times one task was sent to a worker (its first run, retries and rebuilds).
    pub most_runs: u32,
    /// The first invariant that failed, if any.
    pub violation: Option<String>,
    /// Bytes allocated per submitted task while every task was live (with the probe).
    pub bytes_per_task: Option<f64>,
    /// Bytes allocated per held object once every task ended (with the probe).
    pub bytes_per_object: Option<f64>,
    /// Real seconds spent in the protocol core's code (not deterministic).
    pub real_proto: Duration,
    /// Real seconds for the whole run (not deterministic).
    pub real: Duration,
}

impl Report {
    /// The run's one-line summary (deterministic).
    pub fn summary(&self) -> String {
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        let secs = self.sim_time.as_secs_f64();
        format!(
            "result: {} tasks, {} values, {} errors{}, {} unfinished; simulated {:.3} s; {} steps; {} dispatches; {} worker messages to drivers; {} lease messages between nodes; {} control messages ({:.1}/s); {} faults; {} rejoins; {} pulls into nodes' stores; {}{}",
            self.tasks,
            self.values,
            self.errors.iter().map(|(_, n)| n).sum::<usize>(),
            if errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", errors.join(", "))
            },
            self.unfinished,
            secs,
            self.steps,
            self.dispatched,
            self.driver_messages,
            self.peer_lease_messages,
            self.control_messages,
            self.control_messages as f64 / secs.max(1e-9),
            self.faults,
            self.joins,
            self.pulls,
            match self.spilled {
                0 => String::new(),
                n => format!("{n} spilled and {} restored on nodes; ", self.restored),
            },
            match &self.violation {
                None => "invariants held".to_string(),
                Some(v) => format!("VIOLATION: {v}"),
            }
        )
    }
}
