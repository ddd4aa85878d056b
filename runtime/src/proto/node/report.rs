//! What the driver's node reports to the head each second: the task records that changed,
//! the job's counts of tasks and objects, and its functions' histograms (see
//! [`crate::proto::board`]).

use std::collections::BTreeMap;

use prism_transport::{JobEvents, JobSummary, ObjectCount};

use super::State;
use crate::proto::events::UnixClock;
use crate::proto::nodes::{Nodes, node_of};
use crate::proto::scheduler::WorkerId;

impl State {
    /// The name of the node `worker` runs on.
    pub(crate) fn node_name(&self, worker: WorkerId) -> String {
        node_name(&self.nodes, worker)
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
    /// the last one (see [`TaskEvents::changed_records`]) and the job's summary.
    ///
    /// [`TaskEvents::changed_records`]: crate::proto::events::TaskEvents::changed_records
    pub(crate) fn report_events(&mut self, job: &str, clock: &UnixClock) -> JobEvents {
        let nodes = &self.nodes;
        let tasks = (self.owner.events).changed_records(clock, |w| node_name(nodes, w));
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

/// The name of the node of `nodes` that `worker` runs on.
fn node_name(nodes: &Nodes, worker: WorkerId) -> String {
    let node = node_of(worker);
    nodes
        .get(node)
        .map_or_else(|| format!("node {node}"), |n| n.name.clone())
}
