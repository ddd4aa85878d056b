//! Configuration of the embedded local cluster: its resources and the knobs of the worker pool.

use std::collections::BTreeMap;

use prism_graph::Resources;

use crate::{Error, Result};

/// How [`init_with`](crate::init_with) starts the local cluster. Unset fields take their
/// defaults: `num_cpus` from `PRISM_NUM_CPUS` or the host's cores, no GPUs, no custom resources.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Config {
    /// Logical CPUs of the node.
    pub num_cpus: Option<f64>,
    /// Logical GPUs of the node.
    pub num_gpus: Option<f64>,
    /// Custom resources of the node.
    pub resources: BTreeMap<String, f64>,
    /// How many tasks a worker may hold queued behind its running one (default 16).
    pub max_tasks_in_flight_per_worker: Option<usize>,
    /// The most worker processes a node runs for tasks (actors' own workers are not counted);
    /// default 4 per CPU, at least 4, or `PRISM_MAX_WORKERS`. At the cap, tasks wait for a
    /// worker, and a worker blocked in `get` runs the tasks it waits for itself; only when every
    /// worker is blocked and none of them can is one more started, so the cap cannot deadlock
    /// a program.
    pub max_workers: Option<usize>,
    /// Largest frame accepted from a worker, in bytes (default 512 MiB).
    pub max_frame_bytes: Option<usize>,
    /// Objects of at least this many bytes go to the shared-memory store; smaller ones stay
    /// inline with their owner (default 100 KiB).
    pub inline_threshold: Option<usize>,
    /// Capacity of the shared-memory store in bytes (default 30% of the host's memory).
    pub object_store_memory: Option<u64>,
    /// A running cluster to join (`HOST:PORT` of its head) instead of starting a local one
    /// (default: `PRISM_ADDRESS`, if set).
    pub address: Option<String>,
    /// The cluster's join token (default: `PRISM_TOKEN`, else the session directory's).
    pub token: Option<String>,
    /// How many tasks the job's task events keep (the newest; older ones are only counted):
    /// default 100,000, or `PRISM_TASK_EVENTS_MAX`; 0 records none.
    pub task_events_max: Option<usize>,
    /// The namespace the job's actors are named in when their creation or lookup names none
    /// (default: `PRISM_NAMESPACE`, else an anonymous namespace of the job's own, as Ray's).
    pub namespace: Option<String>,
    /// Set in the process the head starts to host a binary's detached actors: its job's name
    /// (it makes detached actors itself rather than asking the head).
    pub(crate) detached_host: Option<String>,
}

/// The environment variable that sets [`Config::namespace`].
pub(crate) const ENV_NAMESPACE: &str = "PRISM_NAMESPACE";

/// The environment variable that sets [`Config::task_events_max`] (a worker that finds it
/// 0 sends no run times).
pub(crate) const ENV_TASK_EVENTS_MAX: &str = "PRISM_TASK_EVENTS_MAX";

/// The environment switch that lets workers own the plain tasks they submit (on unless
/// `0`; see `proto::worker`'s owned tasks).
pub(crate) const ENV_WORKER_OWNERS: &str = "PRISM_WORKER_OWNERS";

/// Set to `0` to have a joined driver start the workers for its own tasks itself rather than
/// borrow them from each node's pool (the way before protocol 23, for comparisons).
pub(crate) const ENV_BORROW_WORKERS: &str = "PRISM_BORROW_WORKERS";

/// Set to `0` to have a joined driver reach its workers on other hosts only through their
/// nodes' relays, not on direct links of its own (the way before protocol 31, for
/// comparisons).
pub(crate) const ENV_DRIVER_LINKS: &str = "PRISM_DRIVER_LINKS";

/// Whether the switch `name` in the environment is on: on unless set to `0`.
pub(crate) fn env_switch(name: &str) -> bool {
    std::env::var(name).map_or(true, |v| v.trim() != "0")
}

impl Config {
    /// The default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the node's logical CPUs.
    pub fn num_cpus(mut self, n: f64) -> Self {
        self.num_cpus = Some(n);
        self
    }

    /// Sets the node's logical GPUs.
    pub fn num_gpus(mut self, n: f64) -> Self {
        self.num_gpus = Some(n);
        self
    }

    /// Adds a custom resource.
    pub fn resource(mut self, name: impl Into<String>, amount: f64) -> Self {
        self.resources.insert(name.into(), amount);
        self
    }

    /// Sets the pipelining depth per worker.
    pub fn max_tasks_in_flight_per_worker(mut self, n: usize) -> Self {
        self.max_tasks_in_flight_per_worker = Some(n);
        self
    }

    /// Sets how many tasks the task events keep (see [`Config::task_events_max`]).
    pub fn task_events_max(mut self, n: usize) -> Self {
        self.task_events_max = Some(n);
        self
    }

    /// Sets the job's namespace (see [`Config::namespace`]).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The job's namespace: the configured one, else `PRISM_NAMESPACE`, else an anonymous
    /// one that no other job shares (`anonymous-` and 16 random hex digits).
    pub(crate) fn job_namespace(&self) -> String {
        if let Some(namespace) = self.namespace.clone().or_else(|| {
            std::env::var(ENV_NAMESPACE)
                .ok()
                .filter(|v| !v.trim().is_empty())
        }) {
            return namespace;
        }
        let bytes = crate::rng::os_bytes::<8>().unwrap_or_else(|_| {
            // No randomness: the process and the time still tell jobs apart on a host.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            (nanos ^ u64::from(std::process::id()).rotate_left(40)).to_le_bytes()
        });
        format!("anonymous-{}", prism_transport::tls::hex(&bytes))
    }

    /// How many tasks the task events keep.
    pub(crate) fn task_events_capacity(&self) -> usize {
        self.task_events_max
            .or_else(|| {
                std::env::var(ENV_TASK_EVENTS_MAX)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(crate::proto::events::DEFAULT_CAPACITY)
    }

    /// Sets the cap on worker processes for tasks (see [`Config::max_workers`]).
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = Some(n);
        self
    }

    /// The cap on worker processes for tasks on a node of `cpus` CPUs.
    pub(crate) fn max_workers_for(&self, cpus: f64) -> usize {
        self.max_workers
            .or_else(|| {
                std::env::var("PRISM_MAX_WORKERS")
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or_else(|| (4.0 * cpus.ceil()).max(4.0) as usize)
            .max(1)
    }

    pub(crate) fn node_resources(&self) -> Result<Resources> {
        let cpus = match self.num_cpus {
            Some(n) => n,
            None => match std::env::var("PRISM_NUM_CPUS") {
                Ok(v) => v.trim().parse::<f64>().map_err(|e| {
                    Error::Config(format!("PRISM_NUM_CPUS={v:?} is not a number: {e}"))
                })?,
                Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
            },
        };
        let mut resources = Resources::default();
        let mut set = |name: &str, value: f64| {
            resources
                .set(name, value)
                .map_err(|e| Error::Config(format!("resource {name}: {e}")))
        };
        set("CPU", cpus)?;
        set("GPU", self.num_gpus.unwrap_or(0.0))?;
        for (name, amount) in &self.resources {
            if name == "CPU" || name == "GPU" {
                return Err(Error::Config(format!(
                    "{name} is set with num_cpus / num_gpus, not as a custom resource"
                )));
            }
            set(name, *amount)?;
        }
        Ok(resources)
    }

    /// Joins the cluster whose head is at `address` (`HOST:PORT`) instead of starting a local
    /// one; the driver's tasks and actors then run on the cluster's nodes.
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// Sets the join token (see [`Config::address`]).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The cluster to join: the configured address, else `PRISM_ADDRESS`.
    pub(crate) fn cluster_address(&self) -> Option<String> {
        self.address
            .clone()
            .or_else(|| std::env::var("PRISM_ADDRESS").ok())
            .filter(|a| !a.trim().is_empty())
    }

    /// The join token: the configured one, else `PRISM_TOKEN`.
    pub(crate) fn cluster_token(&self) -> Option<String> {
        self.token
            .clone()
            .or_else(|| std::env::var("PRISM_TOKEN").ok())
            .filter(|t| !t.trim().is_empty())
    }

    /// Sets the inline threshold.
    pub fn inline_threshold(mut self, bytes: usize) -> Self {
        self.inline_threshold = Some(bytes);
        self
    }

    /// Sets the object store's capacity.
    pub fn object_store_memory(mut self, bytes: u64) -> Self {
        self.object_store_memory = Some(bytes);
        self
    }

    pub(crate) fn inline_threshold_bytes(&self) -> usize {
        self.inline_threshold.unwrap_or(100 << 10).max(1)
    }

    pub(crate) fn object_store_bytes(&self) -> u64 {
        self.object_store_memory
            .unwrap_or_else(|| host_memory() / 10 * 3)
    }

    pub(crate) fn max_inflight(&self) -> usize {
        self.max_tasks_in_flight_per_worker.unwrap_or(16).max(1)
    }

    pub(crate) fn max_frame(&self) -> usize {
        self.max_frame_bytes
            .unwrap_or(prism_transport::DEFAULT_MAX_FRAME)
    }
}

/// The host's memory in bytes (from /proc/meminfo; 8 GiB if unreadable).
fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(8 << 30, |kb| kb * 1024)
}
