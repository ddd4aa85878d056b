//! What the driver's node reports to the head each second: the task records that changed,
//! the job's counts of tasks and objects, and its functions' histograms (see
//! [`crate::proto::board`]).

use std::collections::BTreeMap;

use prism_transport::{JobEvents, JobSummary, ObjectCount};

use super::State;
use crate::proto::events::UnixClock;
use crate::proto::nodes::node_of;
use crate::proto::scheduler::WorkerId;

/// How many changed task records one report carries at most (a busier second's rest goes
/// with the next reports), as Ray's `task_events_send_batch_size`.
pub(crate) const REPORT_MAX_TASKS: usize = 10_000;

/// About how many bytes of task records one report carries at most (the head reads requests
/// of up to 16 MiB; a record with a long error message is large).
pub(crate) const REPORT_MAX_BYTES: usize = 4 << 20;

impl State {
    /// The name of the node `worker` runs on.
    pub(crate) fn node_name(&self, worker: WorkerId) -> String {
        let node = node_of(worker);
        self.nodes
            .get(node)
            .map_or_else(|| format!("node {node}"), |n| n.name.clone())
    }

    /// The objects the owner holds, counted by function and state.
    pub(crate) fn object_counts(&self) -> Vec<ObjectCount> {
        let mut counts: BTreeMap<(&str, &'static str), ObjectCount> = BTreeMap::new();
        for (_, function, slot, _) in self.owner.objects() {
            let (state, size, _) = slot.describe();
            let count = counts
                .entry((function, state))
                .or_insert_with(|| ObjectCount {
                    function: function.to_string(),
                    state: state.to_string(),
                    count: 0,
                    bytes: 0,
                });
            count.count += 1;
            count.bytes += size.unwrap_or(0);
        }
        counts.into_values().collect()
    }

    /// Job `job`'s report to the head, times by `clock`: the task records that changed since
    /// the last one (at most [`REPORT_MAX_TASKS`]) and the job's summary.
    pub(crate) fn report_events(&mut self, job: &str, clock: &UnixClock) -> JobEvents {
        let (mut tasks, mut bytes) = (Vec::new(), 0);
        while tasks.len() < REPORT_MAX_TASKS
            && bytes < REPORT_MAX_BYTES
            && let Some(task) = self.owner.events.pop_changed()
        {
            let events = &self.owner.events;
            let Some(entry) = events.get(task) else {
                continue;
            };
            let info = events.info(task, entry, clock, |w| self.node_name(w));
            bytes += record_size(&info);
            tasks.push(info);
        }
        let events = &self.owner.events;
        JobEvents {
            tasks,
            summary: JobSummary {
                job: job.to_string(),
                tasks: events.counts(),
                objects: self.object_counts(),
                times: events.times().to_vec(),
            },
        }
    }
}

/// About how many bytes `task` takes in a report.
fn record_size(task: &prism_transport::TaskInfo) -> usize {
    let runs: usize = task.runs.iter().map(|r| 64 + r.node.len()).sum();
    let node = task.node.as_ref().map_or(0, String::len);
    let error = task.error.as_ref().map_or(0, String::len);
    96 + task.function.len() + node + error + 24 * task.events.len() + runs
}
