//! `prism::state`: what the job's tasks did, from the driver's task events — every task and
//! actor call with its state changes and runs ([`list_tasks`]), counts by function and state
//! ([`summarize_tasks`]), and a Chrome trace of the runs that Perfetto and `chrome://tracing`
//! open ([`timeline`]); the objects the driver owns ([`list_objects`],
//! [`summarize_objects`]) and its job's actors ([`list_actors`]).
//!
//! In a joined cluster the tasks the job's workers own (the children a task submits) are
//! recorded by the nodes those workers run on and reported to the head, as Ray's workers
//! report theirs to the GCS: [`list_tasks`], [`get_task`] and [`summarize_tasks`] add the
//! head's records of them to the driver's own; the timeline of the whole job is the head's
//! (`prism timeline`).

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::context::{self, Context};
use crate::proto::events::{TaskEntry, UnixClock};
use crate::proto::node::State;
use crate::proto::owner::Slot;
use crate::{Error, Result, TaskId};

use prism_transport::{ObjectCount, TaskCount};
pub use prism_transport::{TaskEvent, TaskInfo, TaskPhase, TaskRun, TaskType};

/// One object the driver owns (the values its tasks return and its puts).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ObjectInfo {
    /// Its id (as text: the task's id, `/`, the return index).
    pub object_id: String,
    /// The function that makes it (`put` for a put).
    pub function: String,
    /// Where its value is: `PENDING` (its task has not returned), `IN_MEMORY` (inline with the
    /// owner, or in this node's shared-memory store), `SPILLED` (on disk), `REMOTE` (in another
    /// node's store), or `FAILED`.
    pub state: &'static str,
    /// Its size in bytes, once known.
    pub size_bytes: Option<u64>,
    /// Live references to it: the driver's `ObjectRef`s and one per worker holding it.
    pub references: u32,
    /// Why it failed.
    pub error: Option<String>,
}

/// One actor the driver's job created.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ActorInfo {
    /// Its id.
    pub actor_id: String,
    /// Its type.
    pub class: String,
    /// The name it was created under, if any.
    pub name: Option<String>,
    /// The namespace of its name, if it has one.
    pub namespace: Option<String>,
    /// `STARTING`, `ALIVE`, `RESTARTING` or `DEAD`.
    pub state: &'static str,
    /// Why it is dead.
    pub reason: Option<String>,
    /// The node its current incarnation runs on.
    pub node: Option<String>,
    /// How many times it was restarted.
    pub restarts: u32,
}

/// Every actor the driver's job created, dead ones too.
pub fn list_actors() -> Result<Vec<ActorInfo>> {
    with_state("list_actors", |state| {
        let mut actors: Vec<ActorInfo> = state
            .actor_directory()
            .into_iter()
            .map(|a| {
                let (state, reason) = a.state.name_and_reason();
                let reason = reason.map(str::to_string);
                ActorInfo {
                    actor_id: a.id.to_string(),
                    class: a.class,
                    namespace: a.name.as_ref().map(|_| a.namespace.clone()),
                    name: a.name,
                    state,
                    reason,
                    node: (!a.node.is_empty()).then_some(a.node),
                    restarts: a.restarts,
                }
            })
            .collect();
        actors.sort_by(|a, b| a.actor_id.cmp(&b.actor_id));
        actors
    })
}

/// The objects of one function, counted.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ObjectSummary {
    /// The function that makes them.
    pub function: String,
    /// How many there are.
    pub count: u64,
    /// Their bytes (those whose size is known).
    pub bytes: u64,
    /// How many are in each state (see [`ObjectInfo::state`]).
    pub states: BTreeMap<String, u64>,
}

/// How many tasks of one function are in each state.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct TaskSummary {
    /// The function.
    pub function: String,
    /// What kind of task it is (`None` when only tasks that left the table are counted).
    #[serde(rename = "type")]
    pub kind: Option<TaskType>,
    /// Tasks by state (those that left the table counted in the state they were in).
    pub states: BTreeMap<TaskPhase, u64>,
    /// Of which left the table (it keeps the newest [`crate::Config::task_events_max`]).
    pub dropped: u64,
}

/// Runs `f` on the driver's node state.
fn with_state<R>(what: &str, f: impl FnOnce(&State) -> R) -> Result<R> {
    match context::current()? {
        Context::Driver(core) => Ok(core.with_state(f)),
        Context::Worker(_) => Err(Error::InvalidArgument(format!(
            "prism::state::{what} is answered by the driver (its node keeps the task events)"
        ))),
    }
}

fn info(state: &State, clock: &UnixClock, task: TaskId, entry: &TaskEntry) -> TaskInfo {
    state
        .owner
        .events
        .info(task, entry, clock, |worker| state.node_name(worker))
}

/// Every task and actor call the task events keep (the newest
/// [`crate::Config::task_events_max`]), oldest first.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> prism::Result<()> {
/// let pending = prism::state::list_tasks()?
///     .into_iter()
///     .filter(|t| t.state == prism::state::TaskPhase::PendingNode)
///     .count();
/// println!("{pending} tasks wait for a worker");
/// # Ok(())
/// # }
/// ```
pub fn list_tasks() -> Result<Vec<TaskInfo>> {
    let mut tasks: Vec<TaskInfo> = with_state("list_tasks", |state| {
        let clock = crate::node::unix_clock();
        state
            .owner
            .events
            .iter()
            .map(|(task, entry)| info(state, &clock, task, entry))
            .collect()
    })?;
    let known = tasks.iter().map(|t| t.task_id).collect();
    tasks.extend(owned_by_workers(&known)?);
    Ok(tasks)
}

/// In a joined cluster, the head's records of the job's tasks that the driver does not keep
/// (those the job's workers own, which their nodes report to the head); none embedded.
fn owned_by_workers(known: &HashSet<TaskId>) -> Result<Vec<TaskInfo>> {
    let Context::Driver(core) = context::current()? else {
        return Ok(Vec::new());
    };
    let Some(head) = core.head_tasks() else {
        return Ok(Vec::new());
    };
    Ok(head?
        .into_iter()
        .filter(|t| !known.contains(&t.task_id))
        .collect())
}

/// The task `task`, if the task events still keep it (in a joined cluster, the head's record
/// of it when the driver has none: a task a worker owns).
pub fn get_task(task: TaskId) -> Result<Option<TaskInfo>> {
    let here = with_state("get_task", |state| {
        let clock = crate::node::unix_clock();
        state
            .owner
            .events
            .get(task)
            .map(|entry| info(state, &clock, task, entry))
    })?;
    if here.is_some() {
        return Ok(here);
    }
    Ok(owned_by_workers(&HashSet::new())?
        .into_iter()
        .find(|t| t.task_id == task))
}

fn object_info(id: crate::ObjectId, function: &str, slot: &Slot, references: u32) -> ObjectInfo {
    let (state, size_bytes, error) = slot.describe();
    ObjectInfo {
        object_id: id.to_string(),
        function: function.to_string(),
        state,
        size_bytes,
        references,
        error,
    }
}

/// Every object the driver owns, by id.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> prism::Result<()> {
/// let held: u64 = prism::state::list_objects()?
///     .iter()
///     .filter_map(|o| o.size_bytes)
///     .sum();
/// println!("the driver's objects hold {held} bytes");
/// # Ok(())
/// # }
/// ```
pub fn list_objects() -> Result<Vec<ObjectInfo>> {
    with_state("list_objects", |state| {
        let mut objects: Vec<ObjectInfo> = state
            .owner
            .objects()
            .map(|(id, function, slot, refs)| object_info(id, function, slot, refs))
            .collect();
        objects.sort_by(|a, b| a.object_id.cmp(&b.object_id));
        objects
    })
}

/// The driver's objects counted by function: how many, their bytes, their states.
pub fn summarize_objects() -> Result<Vec<ObjectSummary>> {
    with_state("summarize_objects", |state| {
        fold_objects(state.object_counts())
    })
}

/// Counts by function and state folded into one summary per function.
pub(crate) fn fold_objects(counts: impl IntoIterator<Item = ObjectCount>) -> Vec<ObjectSummary> {
    let mut out: BTreeMap<String, ObjectSummary> = BTreeMap::new();
    for c in counts {
        let s = out
            .entry(c.function.clone())
            .or_insert_with(|| ObjectSummary {
                function: c.function,
                count: 0,
                bytes: 0,
                states: BTreeMap::new(),
            });
        s.count += c.count;
        s.bytes += c.bytes;
        *s.states.entry(c.state).or_default() += c.count;
    }
    out.into_values().collect()
}

/// Tasks counted by function and state, those that left the table too; by function name.
///
/// In a joined cluster the tasks the job's workers own count as the head lists them.
pub fn summarize_tasks() -> Result<Vec<TaskSummary>> {
    let (counts, known) = with_state("summarize_tasks", |state| {
        let events = &state.owner.events;
        let known: HashSet<TaskId> = events.iter().map(|(task, _)| task).collect();
        (events.counts(), known)
    })?;
    let afar = owned_by_workers(&known)?.into_iter().map(|t| TaskCount {
        function: t.function,
        kind: Some(t.kind),
        state: t.state,
        count: 1,
        dropped: 0,
    });
    Ok(fold_counts(counts.into_iter().chain(afar)))
}

/// Counts by function and state folded into one summary per function.
pub(crate) fn fold_counts(counts: impl IntoIterator<Item = TaskCount>) -> Vec<TaskSummary> {
    let mut out: BTreeMap<String, TaskSummary> = BTreeMap::new();
    for c in counts {
        let s = out
            .entry(c.function.clone())
            .or_insert_with(|| TaskSummary {
                function: c.function,
                kind: None,
                states: BTreeMap::new(),
                dropped: 0,
            });
        s.kind = s.kind.or(c.kind);
        *s.states.entry(c.state).or_default() += c.count;
        s.dropped += c.dropped;
    }
    out.into_values().collect()
}

/// Writes the job's timeline to `path` as Chrome trace JSON (open it in Perfetto or
/// `chrome://tracing`): a process per node, a lane per worker (its pid), a slice per run of a
/// task or actor call named by its function, with its argument fetch and result store as
/// slices inside, and arrows from each task to the tasks it submitted.
pub fn timeline(path: impl AsRef<std::path::Path>) -> Result<()> {
    let path = path.as_ref();
    let trace = timeline_json()?;
    let text = serde_json::to_vec(&trace)
        .map_err(|e| Error::InvalidArgument(format!("cannot encode the timeline: {e}")))?;
    std::fs::write(path, text).map_err(|e| {
        Error::InvalidArgument(format!(
            "cannot write the timeline to {}: {e}",
            path.display()
        ))
    })
}

/// The job's timeline as Chrome trace JSON (see [`timeline`]).
pub fn timeline_json() -> Result<serde_json::Value> {
    Ok(trace(&list_tasks()?))
}

/// The Chrome trace of `tasks`' runs.
pub(crate) fn trace(tasks: &[TaskInfo]) -> serde_json::Value {
    use serde_json::json;
    // Lanes: a process per node (numbered in the order met), a thread per worker.
    let mut nodes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut lanes: BTreeMap<(usize, u64), Option<u32>> = BTreeMap::new();
    let mut slices = Vec::new();
    // Where each task's last run was, for the arrows from the tasks that submitted others.
    let mut ran_at: BTreeMap<TaskId, (usize, u64, u64, u64)> = BTreeMap::new();
    for task in tasks {
        for run in &task.runs {
            let next = nodes.len();
            let node = *nodes.entry(run.node.as_str()).or_insert(next);
            lanes.insert((node, run.worker), run.pid);
            let total = run.args_us + run.run_us + run.store_us;
            let args = json!({
                "task_id": task.task_id.to_string(),
                "attempt": task.attempt,
                "state": task.state,
                "error": task.error,
            });
            let slice = json!({
                "name": task.function, "cat": "task", "ph": "X", "pid": node, "tid": run.worker,
                "ts": run.start_us, "dur": total.max(1), "args": args,
            });
            slices.push(((node, run.worker, run.start_us, 0), slice));
            for (name, start, dur) in [
                ("fetch arguments", run.start_us, run.args_us),
                (
                    "store results",
                    run.start_us + run.args_us + run.run_us,
                    run.store_us,
                ),
            ] {
                if dur > 0 {
                    let slice = json!({
                        "name": name, "cat": "task", "ph": "X", "pid": node,
                        "tid": run.worker, "ts": start, "dur": dur,
                    });
                    slices.push(((node, run.worker, start, 1), slice));
                }
            }
            ran_at.insert(task.task_id, (node, run.worker, run.start_us, total));
        }
    }
    let mut events = Vec::new();
    for (name, &node) in &nodes {
        events.push(json!({
            "name": "process_name", "ph": "M", "pid": node, "args": {"name": format!("node {name}")},
        }));
    }
    for (&(node, worker), pid) in &lanes {
        let name = match pid {
            Some(pid) => format!("worker {worker:x} (pid {pid})"),
            None => format!("worker {worker:x}"),
        };
        events.push(json!({
            "name": "thread_name", "ph": "M", "pid": node, "tid": worker, "args": {"name": name},
        }));
    }
    // Each lane's slices in time order (a run before the slices inside it).
    slices.sort_by_key(|(key, _)| *key);
    events.extend(slices.into_iter().map(|(_, slice)| slice));
    // An arrow from the submitting task's run to the submitted task's.
    for (flow, task) in tasks.iter().enumerate() {
        let (Some(parent), Some(&(node, worker, start, _))) =
            (task.parent, ran_at.get(&task.task_id))
        else {
            continue;
        };
        let Some(&(p_node, p_worker, p_start, p_total)) = ran_at.get(&parent) else {
            continue;
        };
        let submitted = task.events.first().map_or(p_start, |e| e.at_us);
        let from = submitted.clamp(p_start, p_start + p_total);
        events.push(json!({
            "name": "submits", "cat": "flow", "ph": "s", "id": flow, "pid": p_node,
            "tid": p_worker, "ts": from,
        }));
        events.push(json!({
            "name": "submits", "cat": "flow", "ph": "f", "bp": "e", "id": flow, "pid": node,
            "tid": worker, "ts": start.max(from),
        }));
    }
    json!({ "traceEvents": events, "displayTimeUnit": "ms" })
}
