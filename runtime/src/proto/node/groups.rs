//! Placement groups in the driver's node: creating, placing, waiting for and removing them,
//! with the plans made by [`crate::proto::placement`].

use std::task::{Poll, Waker};

use prism_graph::{Resources, TaskError, TaskId};
use prism_transport::{GroupState, GroupStatus};

use super::State;
use crate::proto::placement::{
    Group, PlacementStrategy, Stage, gone, group_name, group_of, plan, reserved_as,
};

impl State {
    /// Records a new group, places it if it fits now, and returns its number.
    pub(crate) fn create_group(
        &mut self,
        bundles: Vec<Resources>,
        strategy: PlacementStrategy,
    ) -> u64 {
        self.next_group += 1;
        let id = self.next_group;
        let group = Group {
            bundles,
            strategy,
            stage: Stage::Pending,
            waiters: Vec::new(),
            parked: Vec::new(),
            answers: Vec::new(),
        };
        self.groups.insert(id, group);
        self.place_groups();
        id
    }

    /// Places the groups that wait, in the order they were made, while they fit.
    pub(super) fn place_groups(&mut self) {
        if !self
            .groups
            .values()
            .any(|g| matches!(g.stage, Stage::Pending))
        {
            return;
        }
        let mut pending: Vec<u64> = self
            .groups
            .iter()
            .filter(|(_, g)| matches!(g.stage, Stage::Pending))
            .map(|(id, _)| *id)
            .collect();
        pending.sort_unstable();
        let home = self.cluster.unwrap_or(Some(0));
        for id in pending {
            let group = &self.groups[&id];
            let Some(at) = plan(&self.nodes, &group.bundles, group.strategy, home) else {
                continue;
            };
            for (i, (bundle, &node)) in group.bundles.iter().zip(&at).enumerate() {
                let named = reserved_as(bundle, id, i as u32);
                self.nodes.reserve(node, bundle, &named);
            }
            tracing::debug!(group = id, nodes = ?at, "placement group reserved");
            let group = self.groups.get_mut(&id).expect("listed above");
            group.stage = Stage::Placed(at);
            group.waiters.drain(..).for_each(Waker::wake);
            let answers = std::mem::take(&mut group.answers);
            for task in std::mem::take(&mut group.parked) {
                self.enqueue(task);
            }
            self.answer_group(answers, None);
        }
    }

    /// Whether a task demanding `demand` must wait for its group to be placed (then it is parked
    /// with the group, and enqueued again once the group is placed); an error when its group is
    /// gone.
    pub(super) fn parked_for_group(
        &mut self,
        task: TaskId,
        demand: &Resources,
    ) -> Result<bool, String> {
        let Some(id) = group_of(demand) else {
            return Ok(false);
        };
        match self.groups.get_mut(&id) {
            Some(group) => match &group.stage {
                Stage::Placed(_) => Ok(false),
                Stage::Pending => {
                    group.parked.push(task);
                    Ok(true)
                }
            },
            None => Err(gone(id)),
        }
    }

    /// Removes a group: its reservations go back to their nodes, its waiting tasks fail, and
    /// the workers running its tasks and actors are stopped (as Ray does).
    pub(crate) fn remove_group(&mut self, id: u64) {
        let Some(mut group) = self.groups.remove(&id) else {
            return;
        };
        let reason = gone(id);
        group.waiters.drain(..).for_each(Waker::wake);
        self.answer_group(std::mem::take(&mut group.answers), Some(&reason));
        let mut doomed = std::mem::take(&mut group.parked);
        if let Stage::Placed(at) = group.stage {
            let marker = group_name("bundle", None, id);
            for (i, (bundle, node)) in group.bundles.iter().zip(at).enumerate() {
                let named = reserved_as(bundle, id, i as u32);
                let (queued, workers) = self.nodes.unreserve(node, bundle, &named, &marker);
                doomed.extend(queued);
                for worker in workers {
                    self.kill_worker(worker);
                }
            }
        }
        for task in doomed {
            self.unschedulable(task, reason.clone());
        }
        self.place_groups();
    }

    /// Every placement group the driver keeps, as the cluster's directory shows it.
    pub(crate) fn group_directory(&self) -> Vec<GroupStatus> {
        self.groups
            .iter()
            .map(|(&id, group)| {
                let (nodes, state) = match &group.stage {
                    Stage::Pending => (Vec::new(), GroupState::Pending),
                    Stage::Placed(at) => {
                        let name = |&i| {
                            self.nodes
                                .get(i)
                                .map_or_else(String::new, |n| n.name.clone())
                        };
                        (at.iter().map(name).collect(), GroupState::Created)
                    }
                };
                GroupStatus {
                    id,
                    strategy: group.strategy.to_string(),
                    bundles: group.bundles.iter().map(ToString::to_string).collect(),
                    nodes,
                    state,
                }
            })
            .collect()
    }

    /// Fails `task`, which can never run, for `reason` (an actor's creation: the actor dies).
    pub(super) fn unschedulable(&mut self, task: TaskId, reason: String) {
        if let Some(record) = self.owner.task(task)
            && let prism_graph::TaskKind::ActorCreation { actor, .. } = record.spec.kind
        {
            self.creations.remove(&task);
            self.stop_actor(actor, format!("it cannot be scheduled: {reason}"));
            return;
        }
        let function = self
            .owner
            .task(task)
            .map(|r| r.spec.function.clone())
            .unwrap_or_default();
        let error = TaskError::Unschedulable {
            task,
            function,
            reason,
        };
        self.owner.fail(task, error);
    }

    /// Whether group `id` is placed (ready), or why it never will be.
    pub(crate) fn poll_group(&mut self, id: u64, waker: &Waker) -> Poll<Result<(), String>> {
        match self.groups.get_mut(&id) {
            None => Poll::Ready(Err(gone(id))),
            Some(group) => match &group.stage {
                Stage::Placed(_) => Poll::Ready(Ok(())),
                Stage::Pending => {
                    if !group.waiters.iter().any(|w| w.will_wake(waker)) {
                        group.waiters.push(waker.clone());
                    }
                    Poll::Pending
                }
            },
        }
    }
}
