//! The job's task events: each task's and actor call's state changes with their times, and
//! how long its worker spent fetching arguments, running and storing results. The driver's
//! node keeps them in a bounded table (at most `capacity` tasks; the oldest go first and are
//! only counted, by function and state), which the state API lists and the timeline draws.
//! Sans-IO: the owner records what it decides, at the time the shell gives it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_graph::{IdMap, TaskId, TaskKind};
use smallvec::SmallVec;

use crate::proto::scheduler::WorkerId;

/// How many tasks the table keeps by default (`PRISM_TASK_EVENTS_MAX`; 0 turns events off).
pub(crate) const DEFAULT_CAPACITY: usize = 100_000;

/// Where a task is in its life, as the state API shows it (Ray's names in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
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

    /// Waiting: for a node when `ready`, else for its arguments.
    pub(crate) fn pending(ready: bool) -> TaskPhase {
        match ready {
            true => TaskPhase::PendingNode,
            false => TaskPhase::PendingArgs,
        }
    }

    /// Whether the task ended (finished or failed).
    pub fn ended(self) -> bool {
        matches!(self, TaskPhase::Finished | TaskPhase::Failed)
    }
}

impl serde::Serialize for TaskPhase {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl std::fmt::Display for TaskPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What kind of task it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
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

/// How one attempt of a task ran on its worker, as the worker measured it; `start_us` is by
/// the worker's clock (see [`TaskEvents::start_of`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ran {
    pub(crate) worker: WorkerId,
    /// The worker's process id, if the node knows it.
    pub(crate) pid: Option<u32>,
    pub(crate) start_us: u64,
    /// Microseconds resolving its arguments, running, and storing its results.
    pub(crate) args_us: u64,
    pub(crate) run_us: u64,
    pub(crate) store_us: u64,
}

/// A state change: the state entered, in which attempt, and when (microseconds after the
/// table's first event: see [`TaskEvents::at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) phase: TaskPhase,
    pub(crate) attempt: u32,
    pub(crate) at_us: u64,
}

/// One task's record.
#[derive(Debug, Clone)]
pub(crate) struct TaskEntry {
    pub(crate) function: Arc<str>,
    pub(crate) kind: TaskType,
    pub(crate) phase: TaskPhase,
    /// Which attempt it is on (0: the first run).
    pub(crate) attempt: u32,
    /// The worker it was last sent to.
    pub(crate) worker: Option<WorkerId>,
    /// The task that submitted it (none: the driver, or not known).
    pub(crate) parent: Option<TaskId>,
    /// Why it failed.
    pub(crate) error: Option<String>,
    /// Its state changes, in order (inline: a task of one attempt allocates nothing).
    pub(crate) changes: SmallVec<[Change; 5]>,
    /// Its runs, as its workers reported them.
    pub(crate) runs: SmallVec<[Ran; 1]>,
}

/// Tasks no longer in the table, counted by function and the state they were in.
pub(crate) type Dropped = BTreeMap<(Arc<str>, TaskPhase), u64>;

/// The table (see the module's doc); by default it records nothing.
///
/// Entries sit in the order they were first recorded, in a ring the oldest leave first, and
/// [`Places`] tells each task's place. Tasks move through their states in about the order
/// they were submitted, so the entries and places a busy job touches are neighbours, however
/// large the table: a hash table of whole entries (the first version) spread them over more
/// memory than the caches hold, and cost a third of the rate of no-op tasks.
#[derive(Debug, Default)]
pub(crate) struct TaskEvents {
    capacity: usize,
    /// The entries, oldest first.
    ring: VecDeque<(TaskId, TaskEntry)>,
    /// Each task's number: its place in the order of recording since the table began.
    index: Places,
    /// The number of the ring's oldest entry.
    first: u64,
    dropped: Dropped,
    /// For each worker, the moment of ours and of its clock that line the two clocks up
    /// best: the message that took the least time to arrive (see [`TaskEvents::heard`]).
    clocks: IdMap<WorkerId, (Instant, u64)>,
    /// The time of the first event: changes are stamped in microseconds after it.
    epoch: Option<Instant>,
    /// One copy of each function's name, which its entries share. (An entry holding the
    /// submitter's own copy kept one small allocation per task alive, scattered over the heap
    /// among the tasks' freed memory: after a million tasks the driver kept 14 MiB more.)
    names: std::collections::HashSet<Arc<str>>,
}

impl TaskEvents {
    /// A table of at most `capacity` tasks (0: records nothing).
    pub(crate) fn new(capacity: usize) -> Self {
        TaskEvents {
            capacity,
            ring: VecDeque::new(),
            index: Places::default(),
            first: 0,
            dropped: Dropped::new(),
            clocks: IdMap::default(),
            epoch: None,
            names: std::collections::HashSet::new(),
        }
    }

    /// `now` as a stamp: microseconds after the first event.
    fn stamp(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_micros() as u64
    }

    /// The time of stamp `at_us`.
    pub(crate) fn at(&self, at_us: u64) -> Option<Instant> {
        self.epoch?.checked_add(Duration::from_micros(at_us))
    }

    /// A message `worker` wrote at `sent_us` by its clock arrived at `now`. The pair whose
    /// gap is smallest lines the clocks up best (the gap is the clocks' offset plus the time
    /// in transit), and one fixed pair per worker keeps the order of its runs exact.
    pub(crate) fn heard(&mut self, worker: WorkerId, now: Instant, sent_us: u64) {
        let better = match self.clocks.get(&worker) {
            None => true,
            // Less of our time than of its time went by since the best pair: this message
            // spent less in transit.
            Some(&(at, us)) => {
                let ours = now.saturating_duration_since(at).as_micros() as u64;
                ours < sent_us.saturating_sub(us)
            }
        };
        if better {
            self.clocks.insert(worker, (now, sent_us));
        }
    }

    /// When `ran` started, by our clock.
    pub(crate) fn start_of(&self, ran: &Ran) -> Option<Instant> {
        let &(at, us) = self.clocks.get(&ran.worker)?;
        match ran.start_us.checked_sub(us) {
            Some(after) => at.checked_add(Duration::from_micros(after)),
            None => at.checked_sub(Duration::from_micros(us - ran.start_us)),
        }
    }

    /// Whether it records anything.
    pub(crate) fn on(&self) -> bool {
        self.capacity > 0
    }

    /// A task was submitted: it waits for its arguments, or (`ready`) for a node. A task
    /// submitted again under its id (a lineage rebuild) starts its next attempt.
    pub(crate) fn submitted(
        &mut self,
        task: TaskId,
        function: &Arc<str>,
        kind: TaskKind,
        ready: bool,
        now: Instant,
    ) {
        if !self.on() {
            return;
        }
        let phase = TaskPhase::pending(ready);
        if self.index.get(task).is_some() {
            self.again(task, phase, now);
            return;
        }
        while self.ring.len() >= self.capacity {
            self.drop_oldest();
        }
        let at_us = self.stamp(now);
        let function = self.name(function);
        self.index.insert(task, self.first + self.ring.len() as u64);
        self.ring.push_back((
            task,
            TaskEntry {
                function,
                kind: kind.into(),
                phase,
                attempt: 0,
                worker: None,
                parent: None,
                error: None,
                changes: smallvec::smallvec![Change {
                    phase,
                    attempt: 0,
                    at_us
                }],
                runs: SmallVec::new(),
            },
        ));
    }

    /// The table's copy of `function`.
    fn name(&mut self, function: &Arc<str>) -> Arc<str> {
        if let Some(name) = self.names.get(&**function) {
            return name.clone();
        }
        self.names.insert(function.clone());
        function.clone()
    }

    /// The entry of `task`, if the table holds it.
    fn entry(&mut self, task: TaskId) -> Option<&mut TaskEntry> {
        let number = self.index.get(task)?;
        let at = usize::try_from(number - self.first).ok()?;
        self.ring.get_mut(at).map(|(_, entry)| entry)
    }

    /// `task` was submitted by a worker while it ran `parent`.
    pub(crate) fn set_parent(&mut self, task: TaskId, parent: TaskId) {
        if let Some(entry) = self.entry(task) {
            entry.parent = Some(parent);
        }
    }

    /// The task moves to `phase` (nothing if it is there already, or not in the table).
    pub(crate) fn phase(&mut self, task: TaskId, phase: TaskPhase, now: Instant) {
        let at_us = self.stamp(now);
        if let Some(entry) = self.entry(task)
            && entry.phase != phase
        {
            entry.phase = phase;
            let attempt = entry.attempt;
            entry.changes.push(Change {
                phase,
                attempt,
                at_us,
            });
        }
    }

    /// The task was sent to `worker`.
    pub(crate) fn sent(&mut self, task: TaskId, worker: WorkerId, now: Instant) {
        if let Some(entry) = self.entry(task) {
            entry.worker = Some(worker);
        }
        self.phase(task, TaskPhase::SubmittedToWorker, now);
    }

    /// The task runs again (a retry, or a rebuild of what it made): its next attempt starts
    /// in `phase`.
    pub(crate) fn again(&mut self, task: TaskId, phase: TaskPhase, now: Instant) {
        let at_us = self.stamp(now);
        if let Some(entry) = self.entry(task) {
            entry.attempt += 1;
            entry.phase = phase;
            entry.error = None;
            let attempt = entry.attempt;
            entry.changes.push(Change {
                phase,
                attempt,
                at_us,
            });
        }
    }

    /// The task's worker reported how it ran (the worker ran it; its end follows).
    pub(crate) fn ran(&mut self, task: TaskId, ran: Ran) {
        let start = self.start_of(&ran).map(|start| self.stamp(start));
        if let Some(entry) = self.entry(task) {
            let attempt = entry.attempt;
            if !entry.phase.ended() {
                entry.phase = TaskPhase::Running;
            }
            if let Some(at_us) = start {
                let at = entry
                    .changes
                    .iter()
                    .rposition(|c| c.at_us <= at_us)
                    .map_or(0, |i| i + 1);
                let running = Change {
                    phase: TaskPhase::Running,
                    attempt,
                    at_us,
                };
                entry.changes.insert(at, running);
            }
            entry.runs.push(ran);
        }
    }

    /// The task returned its values.
    pub(crate) fn finished(&mut self, task: TaskId, now: Instant) {
        self.phase(task, TaskPhase::Finished, now);
    }

    /// The task failed with `error` (it may still run again: see [`TaskEvents::again`]).
    pub(crate) fn failed(&mut self, task: TaskId, error: impl FnOnce() -> String, now: Instant) {
        if let Some(entry) = self.entry(task)
            && entry.phase != TaskPhase::Failed
        {
            entry.error = Some(error());
            self.phase(task, TaskPhase::Failed, now);
        }
    }

    fn drop_oldest(&mut self) {
        let Some((task, entry)) = self.ring.pop_front() else {
            return;
        };
        self.first += 1;
        self.index.remove(task);
        *self
            .dropped
            .entry((entry.function, entry.phase))
            .or_default() += 1;
    }

    /// The task's record.
    pub(crate) fn get(&self, task: TaskId) -> Option<&TaskEntry> {
        let number = self.index.get(task)?;
        let at = usize::try_from(number - self.first).ok()?;
        self.ring.get(at).map(|(_, entry)| entry)
    }

    /// Every task in the table, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (TaskId, &TaskEntry)> {
        self.ring.iter().map(|(task, entry)| (*task, entry))
    }

    /// How many tasks the table holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ring.len()
    }

    /// The tasks that left the table, counted by function and state.
    pub(crate) fn dropped(&self) -> &Dropped {
        &self.dropped
    }
}

/// Where each task of the table sits (its number), by its owner and then its sequence
/// number: an owner numbers its tasks one after another, so each owner's places are a dense
/// run, looked up by subtraction and touched in about the order they were made. A task far
/// outside its owner's run (a gap of more than [`Places::MAX_GAP`]) goes to a hash table.
#[derive(Debug, Default)]
struct Places {
    owners: IdMap<u64, Run>,
    strays: IdMap<TaskId, u64>,
}

/// One owner's places: `places[i]` is the number of its task `base + i` ([`Run::NONE`]: none).
#[derive(Debug, Default)]
struct Run {
    base: u64,
    places: VecDeque<u64>,
}

impl Run {
    const NONE: u64 = u64::MAX;
}

impl Places {
    /// The widest gap a run spans to take in a task.
    const MAX_GAP: u64 = 1 << 16;

    fn get(&self, task: TaskId) -> Option<u64> {
        let found = self.owners.get(&task.owner).and_then(|run| {
            let at = usize::try_from(task.seq.checked_sub(run.base)?).ok()?;
            run.places.get(at).copied().filter(|&n| n != Run::NONE)
        });
        found.or_else(|| match self.strays.is_empty() {
            true => None,
            false => self.strays.get(&task).copied(),
        })
    }

    fn insert(&mut self, task: TaskId, number: u64) {
        let run = self.owners.entry(task.owner).or_default();
        if run.places.is_empty() {
            run.base = task.seq;
        }
        let end = run.base + run.places.len() as u64;
        if task.seq >= run.base && task.seq < end + Self::MAX_GAP {
            while run.base + (run.places.len() as u64) <= task.seq {
                run.places.push_back(Run::NONE);
            }
            run.places[(task.seq - run.base) as usize] = number;
        } else if task.seq < run.base && run.base - task.seq <= Self::MAX_GAP {
            while run.base > task.seq {
                run.places.push_front(Run::NONE);
                run.base -= 1;
            }
            run.places[0] = number;
        } else {
            self.strays.insert(task, number);
        }
    }

    fn remove(&mut self, task: TaskId) {
        if let Some(run) = self.owners.get_mut(&task.owner)
            && let Some(at) = task.seq.checked_sub(run.base)
            && let Some(place) = run.places.get_mut(at as usize)
            && *place != Run::NONE
        {
            *place = Run::NONE;
            while run.places.front() == Some(&Run::NONE) {
                run.places.pop_front();
                run.base += 1;
            }
            if run.places.is_empty() {
                self.owners.remove(&task.owner);
            }
            return;
        }
        self.strays.remove(&task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seq: u64) -> TaskId {
        TaskId::new(0, seq)
    }

    #[test]
    fn a_task_goes_through_its_states_with_their_times() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut events = TaskEvents::new(10);
        let f: Arc<str> = Arc::from("f");
        events.submitted(t(1), &f, TaskKind::Normal, false, at(0));
        events.phase(t(1), TaskPhase::PendingNode, at(5));
        events.sent(t(1), 7, at(6));
        events.heard(7, at(0), 1_000_000);
        events.ran(
            t(1),
            Ran {
                worker: 7,
                pid: None,
                start_us: 1_008_000,
                args_us: 1_000,
                run_us: 10_000,
                store_us: 1_000,
            },
        );
        events.finished(t(1), at(21));
        let entry = events.get(t(1)).expect("recorded");
        let phases: Vec<TaskPhase> = entry.changes.iter().map(|c| c.phase).collect();
        assert_eq!(
            phases,
            [
                TaskPhase::PendingArgs,
                TaskPhase::PendingNode,
                TaskPhase::SubmittedToWorker,
                TaskPhase::Running,
                TaskPhase::Finished
            ]
        );
        assert!(entry.changes.windows(2).all(|w| w[0].at_us <= w[1].at_us));
        assert_eq!((entry.phase, entry.worker), (TaskPhase::Finished, Some(7)));
    }

    #[test]
    fn a_retried_task_counts_its_attempts_and_a_late_run_report_keeps_the_order() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut events = TaskEvents::new(10);
        let f: Arc<str> = Arc::from("f");
        events.submitted(t(1), &f, TaskKind::Normal, true, at(0));
        events.sent(t(1), 1, at(1));
        events.failed(t(1), || "boom".into(), at(4));
        assert_eq!(events.get(t(1)).unwrap().error.as_deref(), Some("boom"));
        events.again(t(1), TaskPhase::PendingNode, at(5));
        events.sent(t(1), 2, at(6));
        // The second run's report comes with its end, after the start it names.
        events.heard(2, at(0), 5_000_000);
        let ran = Ran {
            worker: 2,
            pid: None,
            start_us: 5_007_000,
            args_us: 0,
            run_us: 2_000,
            store_us: 0,
        };
        events.ran(t(1), ran);
        events.finished(t(1), at(10));
        let entry = events.get(t(1)).unwrap();
        assert_eq!(entry.attempt, 1);
        assert_eq!(entry.error, None, "the last attempt finished");
        assert_eq!(entry.changes.len(), 7);
        let running = Change {
            phase: TaskPhase::Running,
            attempt: 1,
            at_us: 7_000,
        };
        assert_eq!(entry.changes[5], running);
        assert!(entry.changes.windows(2).all(|w| w[0].at_us <= w[1].at_us));
    }

    #[test]
    fn a_workers_clock_is_lined_up_by_its_fastest_message() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut events = TaskEvents::new(10);
        let ran = |start_us| Ran {
            worker: 3,
            pid: None,
            start_us,
            args_us: 0,
            run_us: 0,
            store_us: 0,
        };
        // Its clock runs 1 s ahead of ours; the first message took 5 ms to arrive.
        events.heard(3, at(105), 1_100_000);
        assert_eq!(events.start_of(&ran(1_090_000)), Some(at(95)));
        // A slower message changes nothing; a faster one (1 ms) lines the clocks up better.
        events.heard(3, at(220), 1_200_000);
        assert_eq!(events.start_of(&ran(1_090_000)), Some(at(95)));
        events.heard(3, at(301), 1_300_000);
        assert_eq!(events.start_of(&ran(1_090_000)), Some(at(91)));
        assert_eq!(
            events.start_of(&Ran {
                worker: 4,
                ..ran(0)
            }),
            None,
            "never heard"
        );
    }

    #[test]
    fn the_table_keeps_the_newest_tasks_and_counts_the_rest() {
        let now = Instant::now();
        let mut events = TaskEvents::new(100);
        let (f, g): (Arc<str>, Arc<str>) = (Arc::from("f"), Arc::from("g"));
        for seq in 0..1_000 {
            let function = if seq % 2 == 0 { &f } else { &g };
            events.submitted(t(seq), function, TaskKind::Normal, true, now);
            if seq % 4 == 0 {
                events.finished(t(seq), now);
            }
        }
        assert_eq!(events.len(), 100);
        assert_eq!(events.iter().next().map(|(id, _)| id), Some(t(900)));
        let dropped = events.dropped();
        assert_eq!(dropped[&(f.clone(), TaskPhase::Finished)], 225);
        assert_eq!(dropped[&(f, TaskPhase::PendingNode)], 225);
        assert_eq!(dropped[&(g.clone(), TaskPhase::PendingNode)], 450);
        // Events of a task that left the table are ignored; those of the others reach their
        // own entry, however often the table turned over.
        events.finished(t(3), now);
        assert!(events.get(t(3)).is_none());
        events.sent(t(951), 4, now);
        let entry = events.get(t(951)).expect("kept");
        assert_eq!(
            (entry.phase, entry.worker),
            (TaskPhase::SubmittedToWorker, Some(4))
        );
        assert_eq!(
            events.get(t(953)).map(|e| e.phase),
            Some(TaskPhase::PendingNode)
        );
        assert_eq!(
            events.get(t(900)).map(|e| e.phase),
            Some(TaskPhase::Finished)
        );
        let order: Vec<TaskId> = events.iter().map(|(id, _)| id).collect();
        assert_eq!(order, (900..1_000).map(t).collect::<Vec<_>>());
        // A task submitted again under its id (a rebuild) starts its next attempt in place.
        events.submitted(t(999), &g, TaskKind::Normal, false, now);
        assert_eq!(events.len(), 100);
        assert_eq!(events.get(t(999)).map(|e| e.attempt), Some(1));
    }

    #[test]
    fn places_are_found_by_owner_and_number_whatever_the_order_or_the_gaps() {
        let mut places = Places::default();
        let id = |owner, seq| TaskId::new(owner, seq);
        places.insert(id(1, 10), 0);
        places.insert(id(1, 12), 1); // a gap
        places.insert(id(1, 9), 2); // below the run
        places.insert(id(2, 5), 3);
        places.insert(id(1, 10 + 2 * Places::MAX_GAP), 4); // far off: a stray
        places.insert(id(1, 0), 5); // below by less than the gap
        let found = |p: &Places, o, s| p.get(id(o, s));
        assert_eq!(found(&places, 1, 10), Some(0));
        assert_eq!(found(&places, 1, 11), None);
        assert_eq!(found(&places, 1, 12), Some(1));
        assert_eq!(found(&places, 1, 9), Some(2));
        assert_eq!(found(&places, 2, 5), Some(3));
        assert_eq!(found(&places, 1, 10 + 2 * Places::MAX_GAP), Some(4));
        assert_eq!(found(&places, 1, 0), Some(5));
        assert_eq!(found(&places, 3, 0), None);
        for (o, s) in [
            (1, 0),
            (1, 9),
            (1, 10),
            (2, 5),
            (1, 10 + 2 * Places::MAX_GAP),
        ] {
            places.remove(id(o, s));
            assert_eq!(found(&places, o, s), None);
        }
        assert_eq!(found(&places, 1, 12), Some(1));
        assert_eq!(
            places.owners[&1].base, 12,
            "the run's empty front is trimmed"
        );
        places.remove(id(1, 12));
        assert!(places.owners.is_empty() && places.strays.is_empty());
    }

    #[test]
    fn with_no_room_nothing_is_recorded() {
        let mut events = TaskEvents::new(0);
        events.submitted(
            t(1),
            &Arc::from("f"),
            TaskKind::Normal,
            true,
            Instant::now(),
        );
        assert_eq!(events.len(), 0);
        assert!(events.dropped().is_empty());
    }
}
