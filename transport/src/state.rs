//! What the state API shows of tasks, as drivers report it to the head: each task's and actor
//! call's states and runs ([`TaskInfo`]), each job's counts by function and state
//! ([`TaskCount`], [`ObjectCount`]) and its scheduling and run-time histograms
//! ([`FunctionTimes`]). A driver that joined a cluster sends a [`JobEvents`] each second; the
//! head keeps a bounded board of them for `prism list tasks`, the dashboard and `/metrics`.

use prism_graph::{TaskId, TaskKind};
use rkyv::{Archive, Deserialize as FromArchive, Serialize as ToArchive};
use serde::Serialize;

/// Where a task is in its life, as the state API shows it (Ray's names in brackets).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Archive, ToArchive, FromArchive,
)]
#[rkyv(derive(Debug))]
pub enum TaskPhase {
    /// Some of its arguments are not ready yet (`PENDING_ARGS_AVAIL`).
    PendingArgs,
    /// Ready, waiting for a node and a worker with room (`PENDING_NODE_ASSIGNMENT`).
    PendingNode,
    /// Sent to a worker, which runs it or queues it behind its current task
    /// (`SUBMITTED_TO_WORKER`).
    SubmittedToWorker,
    /// Its worker ran it (known once the worker reports; `RUNNING`).
    Running,
    /// It returned its values (`FINISHED`).
    Finished,
    /// It failed, was cancelled, or an input of it failed (`FAILED`).
    Failed,
}

impl TaskPhase {
    /// Every state, in the order of a task's life.
    pub const ALL: [TaskPhase; 6] = [
        TaskPhase::PendingArgs,
        TaskPhase::PendingNode,
        TaskPhase::SubmittedToWorker,
        TaskPhase::Running,
        TaskPhase::Finished,
        TaskPhase::Failed,
    ];

    /// The name the state API prints and filters by.
    pub fn name(self) -> &'static str {
        match self {
            TaskPhase::PendingArgs => "PENDING_ARGS_AVAIL",
            TaskPhase::PendingNode => "PENDING_NODE_ASSIGNMENT",
            TaskPhase::SubmittedToWorker => "SUBMITTED_TO_WORKER",
            TaskPhase::Running => "RUNNING",
            TaskPhase::Finished => "FINISHED",
            TaskPhase::Failed => "FAILED",
        }
    }

    /// The state named `name` (any case), if there is one.
    pub fn from_name(name: &str) -> Option<TaskPhase> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// Every state's name, as a list for messages (`PENDING_ARGS_AVAIL, ...`).
    pub fn names() -> String {
        let names: Vec<&str> = Self::ALL.iter().map(|p| p.name()).collect();
        names.join(", ")
    }

    /// Whether the task ended (finished or failed).
    pub fn ended(self) -> bool {
        matches!(self, TaskPhase::Finished | TaskPhase::Failed)
    }
}

impl Serialize for TaskPhase {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl std::fmt::Display for TaskPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What kind of task it is (Ray's names).
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Archive, ToArchive, FromArchive)]
#[rkyv(attr(allow(clippy::enum_variant_names)))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskType {
    /// A remote function's call.
    NormalTask,
    /// An actor's construction.
    ActorCreationTask,
    /// A call of an actor's method.
    ActorTask,
}

impl From<TaskKind> for TaskType {
    fn from(kind: TaskKind) -> Self {
        match kind {
            TaskKind::Normal => TaskType::NormalTask,
            TaskKind::ActorCreation { .. } => TaskType::ActorCreationTask,
            TaskKind::ActorCall(_) => TaskType::ActorTask,
        }
    }
}

/// One task or actor call, as its task events tell it.
#[derive(Debug, Clone, PartialEq, Serialize, Archive, ToArchive, FromArchive)]
pub struct TaskInfo {
    /// Its id (as text: `OWNER.SEQ`, the owner in hex).
    #[serde(serialize_with = "as_text")]
    pub task_id: TaskId,
    /// Its function (or `Class::method`).
    pub function: String,
    /// What kind of task it is.
    #[serde(rename = "type")]
    pub kind: TaskType,
    /// Where it is now.
    pub state: TaskPhase,
    /// Which attempt it is on (0: the first).
    pub attempt: u32,
    /// The node of the worker it was last sent to.
    pub node: Option<String>,
    /// That worker's number.
    pub worker: Option<u64>,
    /// The task that submitted it (none: the driver).
    #[serde(serialize_with = "as_text_or_null")]
    pub parent: Option<TaskId>,
    /// Why it failed.
    pub error: Option<String>,
    /// Its state changes, in order.
    pub events: Vec<TaskEvent>,
    /// Its runs, as their workers measured them.
    pub runs: Vec<TaskRun>,
}

/// A task's state change.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Archive, ToArchive, FromArchive)]
pub struct TaskEvent {
    /// The state it entered.
    pub state: TaskPhase,
    /// In which attempt.
    pub attempt: u32,
    /// When, in microseconds since the Unix epoch (the driver's clock).
    pub at_us: u64,
}

/// One run of a task on a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Archive, ToArchive, FromArchive)]
pub struct TaskRun {
    /// The worker's number.
    pub worker: u64,
    /// Its node.
    pub node: String,
    /// Its process id, if known.
    pub pid: Option<u32>,
    /// When the run began (arguments first), in microseconds since the Unix epoch.
    pub start_us: u64,
    /// Microseconds spent mapping or copying its arguments.
    pub args_us: u64,
    /// Microseconds in the function.
    pub run_us: u64,
    /// Microseconds storing its results.
    pub store_us: u64,
}

fn as_text<S: serde::Serializer>(id: &TaskId, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(id)
}

fn as_text_or_null<S: serde::Serializer>(
    id: &Option<TaskId>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => serializer.collect_str(id),
        None => serializer.serialize_none(),
    }
}

/// How many of a job's tasks of one function are in one state.
#[derive(Debug, Clone, PartialEq, Serialize, Archive, ToArchive, FromArchive)]
pub struct TaskCount {
    /// The function.
    pub function: String,
    /// What kind of task it is (none: only tasks that left the driver's table are counted).
    pub kind: Option<TaskType>,
    /// The state.
    pub state: TaskPhase,
    /// How many tasks are (or were, when they left the table) in it.
    pub count: u64,
    /// Of which left the driver's table.
    pub dropped: u64,
}

/// How many of a job's objects one function made are in one state, and their bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Archive, ToArchive, FromArchive)]
pub struct ObjectCount {
    /// The function that makes them (`put` for puts).
    pub function: String,
    /// `PENDING`, `IN_MEMORY`, `SPILLED`, `REMOTE` or `FAILED`.
    pub state: String,
    /// How many.
    pub count: u64,
    /// Their bytes (those whose size is known).
    pub bytes: u64,
}

/// The upper bounds of a [`Histogram`]'s buckets, in microseconds (a last bucket takes the
/// rest): from 50 us to 60 s, about three per decade.
pub const HISTOGRAM_BOUNDS_US: [u64; 19] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// Durations counted into the buckets of [`HISTOGRAM_BOUNDS_US`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Archive, ToArchive, FromArchive)]
pub struct Histogram {
    /// How many fell in each bucket (not cumulative), the last one past every bound; empty
    /// until the first.
    pub buckets: Vec<u64>,
    /// Their sum, in microseconds.
    pub sum_us: u64,
}

impl Histogram {
    /// Counts one duration of `us` microseconds.
    pub fn record(&mut self, us: u64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; HISTOGRAM_BOUNDS_US.len() + 1];
        }
        let at = HISTOGRAM_BOUNDS_US.partition_point(|&bound| bound < us);
        self.buckets[at] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// How many durations it counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Histogram) {
        if other.buckets.is_empty() {
            return;
        }
        if self.buckets.is_empty() {
            self.buckets = vec![0; other.buckets.len()];
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }
}

/// How long one function's tasks waited to be scheduled and ran, over the job so far.
#[derive(Debug, Clone, PartialEq, Serialize, Archive, ToArchive, FromArchive)]
pub struct FunctionTimes {
    /// The function.
    pub function: String,
    /// From ready (arguments available) to sent to a worker, per attempt.
    pub schedule: Histogram,
    /// In the function, per run (as its worker measured it).
    pub run: Histogram,
}

/// A job's counts and times, as its driver last reported them.
#[derive(Debug, Clone, PartialEq, Serialize, Archive, ToArchive, FromArchive)]
pub struct JobSummary {
    /// The job.
    pub job: String,
    /// Its tasks by function and state (every task the driver recorded).
    pub tasks: Vec<TaskCount>,
    /// The objects it owns, by function and state.
    pub objects: Vec<ObjectCount>,
    /// Its functions' histograms.
    pub times: Vec<FunctionTimes>,
}

impl JobSummary {
    /// Adds `other`'s counts and times (another reporter's of the same job) to these.
    pub fn add(&mut self, other: &JobSummary) {
        for count in &other.tasks {
            let same = |c: &&mut TaskCount| {
                (c.function == count.function) && c.kind == count.kind && c.state == count.state
            };
            match self.tasks.iter_mut().find(same) {
                Some(mine) => {
                    mine.count += count.count;
                    mine.dropped += count.dropped;
                }
                None => self.tasks.push(count.clone()),
            }
        }
        for count in &other.objects {
            let same =
                |c: &&mut ObjectCount| c.function == count.function && c.state == count.state;
            match self.objects.iter_mut().find(same) {
                Some(mine) => {
                    mine.count += count.count;
                    mine.bytes += count.bytes;
                }
                None => self.objects.push(count.clone()),
            }
        }
        for times in &other.times {
            match self.times.iter_mut().find(|t| t.function == times.function) {
                Some(mine) => {
                    mine.schedule.add(&times.schedule);
                    mine.run.add(&times.run);
                }
                None => self.times.push(times.clone()),
            }
        }
    }
}

/// What a driver reports of its tasks each second: the records that changed since the last
/// report (at most a bounded number; the rest follow) and its whole summary.
#[derive(Debug, Clone, PartialEq, Archive, ToArchive, FromArchive)]
pub struct JobEvents {
    /// The tasks whose record changed.
    pub tasks: Vec<TaskInfo>,
    /// The job's counts and times (`summary.job` names the job).
    pub summary: JobSummary,
}

/// A task as the head lists it: its job and its record.
#[derive(Debug, Clone, PartialEq, Serialize, Archive, ToArchive, FromArchive)]
pub struct JobTask {
    /// The job.
    pub job: String,
    /// The task.
    #[serde(flatten)]
    pub task: TaskInfo,
}

/// Which tasks to list from the head's board.
#[derive(Debug, Clone, Default, PartialEq, Archive, ToArchive, FromArchive)]
pub struct TaskQuery {
    /// Only this job's.
    pub job: Option<String>,
    /// Only tasks in this state.
    pub state: Option<TaskPhase>,
    /// Only this function's (any case).
    pub function: Option<String>,
    /// Only the task with this id.
    pub task: Option<TaskId>,
    /// At most this many (the newest), 0: every one.
    pub limit: u32,
}

impl TaskQuery {
    /// Whether `task` of `job` is asked for.
    pub fn matches(&self, job: &str, task: &TaskInfo) -> bool {
        self.job.as_deref().is_none_or(|j| j == job)
            && self.state.is_none_or(|s| s == task.state)
            && (self.function.as_deref()).is_none_or(|f| f.eq_ignore_ascii_case(&task.function))
            && self.task.is_none_or(|t| t == task.task_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let mut h = Histogram::default();
        for us in [0, 50, 51, 100, 60_000_000, 60_000_001, u64::MAX] {
            h.record(us);
        }
        assert_eq!(h.buckets.len(), HISTOGRAM_BOUNDS_US.len() + 1);
        assert_eq!(h.buckets[0], 2, "0 and 50 are <= 50");
        assert_eq!(h.buckets[1], 2, "51 and 100 are <= 100");
        assert_eq!(h.buckets[HISTOGRAM_BOUNDS_US.len() - 1], 1, "60 s");
        assert_eq!(h.buckets[HISTOGRAM_BOUNDS_US.len()], 2, "past every bound");
        assert_eq!(h.count(), 7);
        assert_eq!(h.sum_us, u64::MAX, "the sum saturates");
        let mut total = Histogram::default();
        total.add(&Histogram::default());
        assert!(total.buckets.is_empty());
        total.add(&h);
        total.add(&h);
        assert_eq!(total.count(), 14);
    }

    #[test]
    fn phases_by_name_any_case() {
        for phase in TaskPhase::ALL {
            assert_eq!(TaskPhase::from_name(phase.name()), Some(phase));
        }
        assert_eq!(TaskPhase::from_name("finished"), Some(TaskPhase::Finished));
        assert_eq!(TaskPhase::from_name("DONE"), None);
    }
}
