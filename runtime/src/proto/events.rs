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

use prism_transport::{
    ArchivedOwnedPhase, FunctionTimes, Histogram, OwnedEvent, TaskCount, TaskEvent, TaskInfo,
    TaskRun,
};
pub(crate) use prism_transport::{TaskPhase, TaskType};

/// A task waiting: for a node when `ready`, else for its arguments.
pub(crate) fn pending(ready: bool) -> TaskPhase {
    match ready {
        true => TaskPhase::PendingNode,
        false => TaskPhase::PendingArgs,
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
    /// It changed since it was last reported to the head (see [`TaskEvents::report_to_head`]).
    changed: bool,
    /// Its function's place in the table's times.
    times: u32,
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
    /// Whether the head gets reports: then the table notes which entries changed and keeps
    /// each function's histograms.
    reporting: bool,
    /// The numbers of the entries that changed since they were last reported, in the order
    /// they first changed.
    changed: VecDeque<u64>,
    /// Each function's scheduling and run-time histograms (while reporting), by the place
    /// its entries name.
    times: Vec<FunctionTimes>,
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
            reporting: false,
            changed: VecDeque::new(),
            times: Vec::new(),
        }
    }

    /// From now on, notes what changed for reports to the head and keeps histograms.
    pub(crate) fn report_to_head(&mut self) {
        self.reporting = true;
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
        self.when(ran.worker, ran.start_us)
    }

    /// Our time of `worker`'s clock reading `us` (once a message of it was [`heard`]).
    ///
    /// [`heard`]: TaskEvents::heard
    pub(crate) fn when(&self, worker: WorkerId, us: u64) -> Option<Instant> {
        let &(at, heard_us) = self.clocks.get(&worker)?;
        match us.checked_sub(heard_us) {
            Some(after) => at.checked_add(Duration::from_micros(after)),
            None => at.checked_sub(Duration::from_micros(heard_us - us)),
        }
    }

    /// Worker `owner` reports what happened to tasks it owns, in a message written at
    /// `sent_us` by the host's clock and read at `now`: recorded like the recorder's own
    /// tasks'. A submission that names no parent gets `running` (the task the recorder
    /// knows `owner` runs); `pid` tells a worker's process id, if known. Every time is by
    /// the owner's host's clock (a run on another node's worker is put on it by the owner).
    pub(crate) fn owned(
        &mut self,
        owner: WorkerId,
        now: Instant,
        sent_us: u64,
        events: &rkyv::vec::ArchivedVec<rkyv::Archived<OwnedEvent>>,
        running: Option<TaskId>,
        pid: impl Fn(WorkerId) -> Option<u32>,
    ) {
        if !self.on() {
            return;
        }
        self.heard(owner, now, sent_us);
        for event in events.iter() {
            let task = event.task.to_native();
            let at = self.when(owner, event.at_us.to_native()).unwrap_or(now);
            match &event.phase {
                ArchivedOwnedPhase::Submitted {
                    function,
                    ready,
                    parent,
                    actor,
                } => {
                    let function: Arc<str> = Arc::from(function.as_str());
                    let kind = match actor.as_ref() {
                        Some(actor) => TaskKind::ActorCall(actor.to_native()),
                        None => TaskKind::Normal,
                    };
                    self.submitted(task, &function, kind, *ready, at);
                    if let Some(parent) = parent.as_ref().map(|p| p.to_native()).or(running) {
                        self.set_parent(task, parent);
                    }
                }
                ArchivedOwnedPhase::Ready => self.phase(task, pending(true), at),
                ArchivedOwnedPhase::Sent { worker } => self.sent(task, worker.to_native(), at),
                ArchivedOwnedPhase::Ran {
                    worker,
                    start_us,
                    times,
                } => {
                    // The run's times are on the owner's clock (the owner put a run on
                    // another node's worker on it).
                    let worker = worker.to_native();
                    if let Some(&pair) = self.clocks.get(&owner) {
                        self.clocks.insert(worker, pair);
                    }
                    let ran = Ran {
                        worker,
                        pid: pid(worker),
                        start_us: start_us.to_native(),
                        args_us: times.args_us.to_native(),
                        run_us: times.run_us.to_native(),
                        store_us: times.store_us.to_native(),
                    };
                    self.ran(task, ran);
                }
                ArchivedOwnedPhase::Finished => self.finished(task, at),
                ArchivedOwnedPhase::Failed(error) => self.failed(task, || error.to_string(), at),
                ArchivedOwnedPhase::Again => self.again(task, pending(true), at),
            }
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
        let phase = pending(ready);
        if self.index.get(task).is_some() {
            self.again(task, phase, now);
            return;
        }
        while self.ring.len() >= self.capacity {
            self.drop_oldest();
        }
        let at_us = self.stamp(now);
        let function = self.name(function);
        let times = match self.reporting {
            true => self.times_of(&function),
            false => 0,
        };
        let number = self.first + self.ring.len() as u64;
        self.index.insert(task, number);
        if self.reporting {
            self.changed.push_back(number);
        }
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
                changed: self.reporting,
                times,
            },
        ));
    }

    /// The place of `function`'s histograms.
    fn times_of(&mut self, function: &str) -> u32 {
        match self.times.iter().position(|t| t.function == function) {
            Some(at) => at as u32,
            None => {
                self.times.push(FunctionTimes {
                    function: function.to_string(),
                    schedule: Histogram::default(),
                    run: Histogram::default(),
                });
                (self.times.len() - 1) as u32
            }
        }
    }

    /// The table's copy of `function`.
    fn name(&mut self, function: &Arc<str>) -> Arc<str> {
        if let Some(name) = self.names.get(&**function) {
            return name.clone();
        }
        self.names.insert(function.clone());
        function.clone()
    }

    /// The entry of `task`, if the table holds it, to change (noted for the next report).
    fn entry(&mut self, task: TaskId) -> Option<&mut TaskEntry> {
        let number = self.index.get(task)?;
        let at = usize::try_from(number - self.first).ok()?;
        let entry = self.ring.get_mut(at).map(|(_, entry)| entry)?;
        if self.reporting && !entry.changed {
            entry.changed = true;
            self.changed.push_back(number);
        }
        Some(entry)
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
        let at_us = self.stamp(now);
        let mut waited = None;
        if let Some(entry) = self.entry(task) {
            entry.worker = Some(worker);
            // From ready to sent, once per attempt: a task handed back unrun (bounced or
            // recalled) and sent again is not counted again.
            let attempt = entry.attempt;
            let sent_before = entry
                .changes
                .iter()
                .any(|c| c.attempt == attempt && c.phase == TaskPhase::SubmittedToWorker);
            if let Some(ready) = entry.changes.last()
                && ready.phase == TaskPhase::PendingNode
                && !sent_before
            {
                waited = Some((entry.times, at_us.saturating_sub(ready.at_us)));
            }
        }
        if self.reporting
            && let Some((times, us)) = waited
            && let Some(times) = self.times.get_mut(times as usize)
        {
            times.schedule.record(us);
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
            let times = entry.times as usize;
            if self.reporting
                && let Some(times) = self.times.get_mut(times)
            {
                times.run.record(ran.run_us);
            }
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
        while self.changed.front().is_some_and(|&n| n < self.first) {
            self.changed.pop_front();
        }
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

    /// Marks every entry changed (to be reported again: the head lost what it had).
    pub(crate) fn all_changed(&mut self) {
        if !self.reporting {
            return;
        }
        for (at, (_, entry)) in self.ring.iter_mut().enumerate() {
            if !entry.changed {
                entry.changed = true;
                self.changed.push_back(self.first + at as u64);
            }
        }
    }

    /// The task that changed first since it was last reported, marked reported.
    pub(crate) fn pop_changed(&mut self) -> Option<TaskId> {
        while let Some(number) = self.changed.pop_front() {
            // An entry that left the table is not reported.
            let Some(at) = number.checked_sub(self.first) else {
                continue;
            };
            if let Some((task, entry)) = self.ring.get_mut(at as usize) {
                entry.changed = false;
                return Some(*task);
            }
        }
        None
    }

    /// Each function's scheduling and run-time histograms, so far.
    pub(crate) fn times(&self) -> &[FunctionTimes] {
        &self.times
    }

    /// Every task counted by function and state, those that left the table too.
    pub(crate) fn counts(&self) -> Vec<TaskCount> {
        let mut counts: BTreeMap<(Arc<str>, TaskPhase), TaskCount> = BTreeMap::new();
        let mut count = |function: &Arc<str>, state, kind, n, dropped| {
            let c = counts
                .entry((function.clone(), state))
                .or_insert_with(|| TaskCount {
                    function: function.to_string(),
                    kind: None,
                    state,
                    count: 0,
                    dropped: 0,
                });
            c.kind = c.kind.or(kind);
            c.count += n;
            c.dropped += dropped;
        };
        for (_, entry) in self.ring.iter() {
            count(&entry.function, entry.phase, Some(entry.kind), 1, 0);
        }
        for ((function, phase), &n) in &self.dropped {
            count(function, *phase, None, n, n);
        }
        counts.into_values().collect()
    }

    /// The state API's record of `task`, with times by `clock` and each worker's node named
    /// by `node_name`.
    pub(crate) fn info(
        &self,
        task: TaskId,
        entry: &TaskEntry,
        clock: &UnixClock,
        node_name: impl Fn(WorkerId) -> String,
    ) -> TaskInfo {
        let run = |r: &Ran| TaskRun {
            worker: r.worker,
            node: node_name(r.worker),
            pid: r.pid,
            start_us: self.start_of(r).map_or(0, |at| clock.us(at)),
            args_us: r.args_us,
            run_us: r.run_us,
            store_us: r.store_us,
        };
        TaskInfo {
            task_id: task,
            function: entry.function.to_string(),
            kind: entry.kind,
            state: entry.phase,
            attempt: entry.attempt,
            node: entry.worker.map(&node_name),
            worker: entry.worker,
            parent: entry.parent,
            error: entry.error.clone(),
            events: entry
                .changes
                .iter()
                .map(|c| TaskEvent {
                    state: c.phase,
                    attempt: c.attempt,
                    at_us: self.at(c.at_us).map_or(0, |at| clock.us(at)),
                })
                .collect(),
            runs: entry.runs.iter().map(run).collect(),
        }
    }
}

/// How many changed task records one report to the head carries at most (a busier second's
/// rest goes with the next reports), as Ray's `task_events_send_batch_size`.
pub(crate) const REPORT_MAX_TASKS: usize = 10_000;

/// About how many bytes of task records one report carries at most (the head reads requests
/// of up to 16 MiB; a record with a long error message is large).
pub(crate) const REPORT_MAX_BYTES: usize = 4 << 20;

impl TaskEvents {
    /// The records that changed since they were last taken, at most [`REPORT_MAX_TASKS`] of
    /// them and about [`REPORT_MAX_BYTES`] (the rest stay for the next call), times by
    /// `clock`, each worker's node named by `node_name`.
    pub(crate) fn changed_records(
        &mut self,
        clock: &UnixClock,
        node_name: impl Fn(WorkerId) -> String,
    ) -> Vec<TaskInfo> {
        let (mut tasks, mut bytes) = (Vec::new(), 0);
        while tasks.len() < REPORT_MAX_TASKS
            && bytes < REPORT_MAX_BYTES
            && let Some(task) = self.pop_changed()
        {
            let Some(entry) = self.get(task) else {
                continue;
            };
            let info = self.info(task, entry, clock, &node_name);
            bytes += record_size(&info);
            tasks.push(info);
        }
        tasks
    }
}

/// About how many bytes `task` takes in a report.
fn record_size(task: &TaskInfo) -> usize {
    let runs: usize = task.runs.iter().map(|r| 64 + r.node.len()).sum();
    let node = task.node.as_ref().map_or(0, String::len);
    let error = task.error.as_ref().map_or(0, String::len);
    96 + task.function.len() + node + error + 24 * task.events.len() + runs
}

/// Turns instants into microseconds since the Unix epoch: the shell reads both clocks once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UnixClock {
    /// An instant.
    pub(crate) now: Instant,
    /// The same moment in microseconds since the Unix epoch.
    pub(crate) unix_us: u64,
}

impl UnixClock {
    /// `at` in microseconds since the Unix epoch.
    pub(crate) fn us(&self, at: Instant) -> u64 {
        let ago = self.now.saturating_duration_since(at).as_micros() as u64;
        let after = at.saturating_duration_since(self.now).as_micros() as u64;
        self.unix_us.saturating_sub(ago).saturating_add(after)
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
        let counts = events.counts();
        let count = |function: &str, state| {
            let c = counts
                .iter()
                .find(|c| c.function == function && c.state == state);
            c.map(|c| (c.count, c.dropped))
        };
        assert_eq!(count("f", TaskPhase::Finished), Some((250, 225)));
        assert_eq!(count("f", TaskPhase::PendingNode), Some((250, 225)));
        assert_eq!(count("g", TaskPhase::PendingNode), Some((500, 450)));
        assert_eq!(counts.len(), 3);
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
        assert!(events.counts().is_empty());
    }

    #[test]
    fn changes_are_reported_once_in_order_with_histograms() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut events = TaskEvents::new(4);
        let f: Arc<str> = Arc::from("f");
        events.submitted(t(1), &f, TaskKind::Normal, true, at(0));
        // Not reporting yet: nothing is noted.
        assert_eq!(events.pop_changed(), None);
        events.report_to_head();
        for seq in 2..=4 {
            events.submitted(t(seq), &f, TaskKind::Normal, true, at(0));
        }
        events.sent(t(3), 1, at(3));
        events.sent(t(2), 1, at(2));
        // Each changed entry once, in the order it first changed.
        let mut changed = Vec::new();
        while let Some(task) = events.pop_changed() {
            changed.push(task.seq);
        }
        assert_eq!(changed, [2, 3, 4]);
        // Task 1 changes now; then task 5 pushes it (the oldest) out before a report.
        events.finished(t(1), at(4));
        events.sent(t(4), 1, at(4));
        events.submitted(t(5), &f, TaskKind::Normal, true, at(5));
        assert_eq!(events.pop_changed(), Some(t(4)));
        assert_eq!(events.pop_changed(), Some(t(5)));
        assert_eq!(events.pop_changed(), None);
        // A restarted head gets every entry again, each once.
        events.sent(t(5), 1, at(5));
        events.all_changed();
        let mut again = Vec::new();
        while let Some(task) = events.pop_changed() {
            again.push(task.seq);
        }
        assert_eq!(again, [5, 2, 3, 4]);
        // Ready to sent: 2, 3 and 4 ms, and 0 for task 5; a run of 10 ms.
        events.heard(1, at(0), 0);
        let ran = Ran {
            worker: 1,
            pid: None,
            start_us: 3_000,
            args_us: 0,
            run_us: 10_000,
            store_us: 0,
        };
        events.ran(t(3), ran);
        let times = events.times();
        assert_eq!(times.len(), 1);
        assert_eq!(times[0].function, "f");
        assert_eq!(
            (times[0].schedule.count(), times[0].schedule.sum_us),
            (4, 9_000)
        );
        assert_eq!((times[0].run.count(), times[0].run.sum_us), (1, 10_000));
        // Task 2 handed back unrun and sent again: its wait counts once, as before.
        events.phase(t(2), TaskPhase::PendingNode, at(6));
        events.sent(t(2), 1, at(7));
        assert_eq!(events.times()[0].schedule.count(), 4);
        // A retry is a new attempt: its wait counts.
        events.again(t(2), TaskPhase::PendingNode, at(8));
        events.sent(t(2), 1, at(9));
        assert_eq!(events.times()[0].schedule.count(), 5);
    }
}
