//! The owner's DAG of tasks and objects (a petgraph `StableGraph`): edges run from an object to
//! each task that consumes it and from a task to each object it produces. The graph answers which
//! tasks became ready, which failed with a failed input, which tasks an object derives from
//! (lineage), and forgets what the owner frees.

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;

use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences, NodeIndexable};

use crate::{IdMap, ObjectId, TaskId};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TaskState {
    /// Some inputs are not ready yet.
    Waiting,
    /// Every input is ready; the task can be scheduled.
    Ready,
    /// The task was handed to a worker.
    Running,
    /// The task's outputs are ready.
    Finished,
    /// The task or one of its inputs failed; its outputs are failed.
    Failed,
}

impl TaskState {
    fn is_done(self) -> bool {
        matches!(self, TaskState::Finished | TaskState::Failed)
    }
}

/// Where an object is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ObjectState {
    /// Its task has not finished.
    Pending,
    /// Its value exists.
    Ready,
    /// Its task failed; reading it gives the error.
    Failed,
}

/// What [`TaskGraph::add_task`] found about the new task's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Every input is ready.
    Ready,
    /// At least one input is pending.
    Waiting,
    /// This input has failed, so the task and its outputs are failed at once.
    Failed(ObjectId),
}

/// A misuse of the graph by its owner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// A task id added twice.
    #[error("task {0} is already in the graph")]
    DuplicateTask(TaskId),
    /// An object id added twice.
    #[error("object {0} is already in the graph")]
    DuplicateObject(ObjectId),
    /// A task that is not (or no longer) in the graph.
    #[error("task {0} is not in the graph")]
    UnknownTask(TaskId),
    /// An object that is not (or no longer) in the graph.
    #[error("object {0} is not in the graph")]
    UnknownObject(ObjectId),
    /// A state change the task's current state does not allow.
    #[error("task {task} cannot go from {from:?} to {to:?}")]
    BadTransition {
        /// The task.
        task: TaskId,
        /// Its state.
        from: TaskState,
        /// The state asked for.
        to: TaskState,
    },
    /// Removing an object that a task which has not run yet still consumes.
    #[error("object {0} is still needed by a task that has not run")]
    StillNeeded(ObjectId),
}

#[derive(Debug, Clone)]
enum Node {
    Task {
        id: TaskId,
        state: TaskState,
        pending_inputs: u32,
    },
    Object {
        id: ObjectId,
        state: ObjectState,
    },
}

/// The fewest node slots worth compacting (see [`TaskGraph::compact`]).
const COMPACT_MIN: usize = 4096;

/// The DAG of tasks and objects owned by one process.
#[derive(Debug, Default)]
pub struct TaskGraph {
    graph: StableDiGraph<Node, ()>,
    tasks: IdMap<TaskId, NodeIndex>,
    objects: IdMap<ObjectId, NodeIndex>,
}

impl TaskGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives back the memory of removed nodes once they far outnumber the live ones: a
    /// `StableGraph` keeps a vacant slot for every node ever removed, and the id maps keep their
    /// largest capacity, so a burst of a million tasks would otherwise hold its memory after
    /// every task is gone. Rebuilds in time linear in the live nodes; returns whether it did.
    pub fn compact(&mut self) -> bool {
        let live = self.graph.node_count();
        let bound = self.graph.node_bound();
        if bound < COMPACT_MIN || live.saturating_mul(4) > bound {
            return false;
        }
        let mut graph = StableDiGraph::with_capacity(live, self.graph.edge_count());
        let mut moved: IdMap<NodeIndex, NodeIndex> = IdMap::default();
        moved.reserve(live);
        for old in self.graph.node_indices() {
            moved.insert(old, graph.add_node(self.graph[old].clone()));
        }
        for edge in self.graph.edge_references() {
            graph.add_edge(moved[&edge.source()], moved[&edge.target()], ());
        }
        self.tasks = self.tasks.iter().map(|(id, n)| (*id, moved[n])).collect();
        self.objects = self.objects.iter().map(|(id, n)| (*id, moved[n])).collect();
        self.graph = graph;
        true
    }

    /// Number of tasks in the graph.
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Number of objects in the graph.
    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    /// Adds an object that is ready from the start and has no producing task (`put`).
    pub fn add_ready_object(&mut self, id: ObjectId) -> Result<(), GraphError> {
        if self.objects.contains_key(&id) {
            return Err(GraphError::DuplicateObject(id));
        }
        let node = self.graph.add_node(Node::Object {
            id,
            state: ObjectState::Ready,
        });
        self.objects.insert(id, node);
        Ok(())
    }

    /// Adds a task consuming `inputs` (repeats allowed) and producing `num_returns` objects
    /// `ObjectId::new(id, 0..num_returns)`, and says whether it can run now.
    pub fn add_task(
        &mut self,
        id: TaskId,
        inputs: &[ObjectId],
        num_returns: u32,
    ) -> Result<Readiness, GraphError> {
        if self.tasks.contains_key(&id) {
            return Err(GraphError::DuplicateTask(id));
        }
        let mut input_nodes = Vec::with_capacity(inputs.len());
        for input in inputs {
            let node = *self
                .objects
                .get(input)
                .ok_or(GraphError::UnknownObject(*input))?;
            input_nodes.push(node);
        }
        for i in 0..num_returns {
            let out = ObjectId::new(id, i);
            if self.objects.contains_key(&out) {
                return Err(GraphError::DuplicateObject(out));
            }
        }
        let task = self.graph.add_node(Node::Task {
            id,
            state: TaskState::Waiting,
            pending_inputs: 0,
        });
        self.tasks.insert(id, task);
        for node in input_nodes {
            self.graph.add_edge(node, task, ());
        }
        let readiness = self.recount_inputs(task);
        let out_state = if let Readiness::Failed(_) = readiness {
            self.set_task_state(task, TaskState::Failed);
            ObjectState::Failed
        } else {
            ObjectState::Pending
        };
        for i in 0..num_returns {
            let out = ObjectId::new(id, i);
            let node = self.graph.add_node(Node::Object {
                id: out,
                state: out_state,
            });
            self.graph.add_edge(task, node, ());
            self.objects.insert(out, node);
        }
        Ok(readiness)
    }

    /// The state of a task, if it is in the graph.
    pub fn task_state(&self, id: TaskId) -> Option<TaskState> {
        self.tasks.get(&id).map(|&n| self.task_state_at(n))
    }

    /// The state of an object, if it is in the graph.
    pub fn object_state(&self, id: ObjectId) -> Option<ObjectState> {
        self.objects.get(&id).map(|&n| self.object_state_at(n))
    }

    /// Marks a ready task as handed to a worker.
    pub fn start_task(&mut self, id: TaskId) -> Result<(), GraphError> {
        self.transition(id, &[TaskState::Ready], TaskState::Running)
    }

    /// Takes a running task back before its result (its worker died and it will be retried,
    /// or it was handed back): ready again, or waiting when an input is being rebuilt meanwhile.
    /// [`Readiness::Failed`] names an input that failed since; the task then waits for its
    /// owner to fail it ([`TaskGraph::fail_task`]).
    pub fn retry_task(&mut self, id: TaskId) -> Result<Readiness, GraphError> {
        let node = self.transition_node(id, &[TaskState::Running], TaskState::Waiting)?;
        Ok(self.recount_inputs(node))
    }

    /// Opens a finished task again to rebuild its outputs after every copy of one was lost
    /// (lineage reconstruction). Its outputs become pending, and consumers of them that had not
    /// started wait again. The task is ready, or waits for inputs that are being rebuilt
    /// themselves (reopen those first), or names an input that failed, as in
    /// [`TaskGraph::retry_task`]. Returns that and the consumers that were ready and now wait.
    pub fn reopen_task(&mut self, id: TaskId) -> Result<(Readiness, Vec<TaskId>), GraphError> {
        let task = self.transition_node(id, &[TaskState::Finished], TaskState::Waiting)?;
        let mut held_back = Vec::new();
        for out in self.successors(task) {
            self.set_object_state(out, ObjectState::Pending);
            // One edge per use, as `complete_task` counts them down.
            for consumer in self.successors(out) {
                if let Node::Task {
                    id,
                    state,
                    pending_inputs,
                } = &mut self.graph[consumer]
                {
                    match *state {
                        TaskState::Ready => {
                            *state = TaskState::Waiting;
                            *pending_inputs += 1;
                            held_back.push(*id);
                        }
                        TaskState::Waiting => *pending_inputs += 1,
                        _ => {}
                    }
                }
            }
        }
        Ok((self.recount_inputs(task), held_back))
    }

    /// Marks a task finished and its outputs ready; returns the tasks that became ready, in the
    /// order of the outputs' consumers.
    pub fn complete_task(&mut self, id: TaskId) -> Result<Vec<TaskId>, GraphError> {
        let task = self.transition_node(
            id,
            &[TaskState::Ready, TaskState::Running],
            TaskState::Finished,
        )?;
        let mut ready = Vec::new();
        for out in self.successors(task) {
            self.set_object_state(out, ObjectState::Ready);
            let consumers: Vec<NodeIndex> = self
                .graph
                .edges_directed(out, Direction::Outgoing)
                .map(|e| e.target())
                .collect();
            for consumer in consumers {
                if let Node::Task {
                    id,
                    state,
                    pending_inputs,
                } = &mut self.graph[consumer]
                    && *state == TaskState::Waiting
                {
                    *pending_inputs -= 1;
                    if *pending_inputs == 0 {
                        *state = TaskState::Ready;
                        ready.push(*id);
                    }
                }
            }
        }
        Ok(ready)
    }

    /// Marks a task failed (or cancelled) with its outputs, and with them every task downstream
    /// that has not run; returns those downstream tasks, nearest first.
    pub fn fail_task(&mut self, id: TaskId) -> Result<Vec<TaskId>, GraphError> {
        let task = self.transition_node(
            id,
            &[TaskState::Waiting, TaskState::Ready, TaskState::Running],
            TaskState::Failed,
        )?;
        let mut failed = Vec::new();
        let mut queue = VecDeque::from([task]);
        while let Some(task) = queue.pop_front() {
            for out in self.successors(task) {
                self.set_object_state(out, ObjectState::Failed);
                for consumer in self.successors(out) {
                    if let Node::Task { id, state, .. } = &mut self.graph[consumer]
                        && matches!(*state, TaskState::Waiting | TaskState::Ready)
                    {
                        *state = TaskState::Failed;
                        failed.push(*id);
                        queue.push_back(consumer);
                    }
                }
            }
        }
        Ok(failed)
    }

    /// The tasks that read `id` and have not ended, each once.
    pub fn pending_consumers(&self, id: ObjectId) -> Vec<TaskId> {
        let Some(&node) = self.objects.get(&id) else {
            return Vec::new();
        };
        let mut out: Vec<TaskId> = Vec::new();
        for t in self.graph.neighbors_directed(node, Direction::Outgoing) {
            if let Node::Task { id, state, .. } = &self.graph[t]
                && !state.is_done()
                && !out.contains(id)
            {
                out.push(*id);
            }
        }
        out
    }

    /// Whether a task that has not finished yet consumes the object.
    pub fn has_pending_consumers(&self, id: ObjectId) -> bool {
        self.objects.get(&id).is_some_and(|&node| {
            self.graph
                .neighbors_directed(node, Direction::Outgoing)
                .any(|t| !self.task_state_at(t).is_done())
        })
    }

    /// Forgets an object its owner has freed. A producing task that is done and has no output
    /// left goes too, since nothing can ask for its lineage any more.
    pub fn remove_object(&mut self, id: ObjectId) -> Result<(), GraphError> {
        let node = *self.objects.get(&id).ok_or(GraphError::UnknownObject(id))?;
        if self.has_pending_consumers(id) {
            return Err(GraphError::StillNeeded(id));
        }
        let producer = self
            .graph
            .neighbors_directed(node, Direction::Incoming)
            .next();
        self.graph.remove_node(node);
        self.objects.remove(&id);
        if let Some(task) = producer
            && self.task_state_at(task).is_done()
            && self
                .graph
                .neighbors_directed(task, Direction::Outgoing)
                .next()
                .is_none()
            && let Node::Task { id, .. } = self.graph[task]
        {
            self.graph.remove_node(task);
            self.tasks.remove(&id);
        }
        Ok(())
    }

    /// The tasks an object derives from that are still in the graph, inputs before consumers:
    /// what must run again, in order, to rebuild the object if every copy were lost.
    pub fn lineage(&self, id: ObjectId) -> Result<Vec<TaskId>, GraphError> {
        let start = *self.objects.get(&id).ok_or(GraphError::UnknownObject(id))?;
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        // Iterative post-order over producers, so deep chains cannot overflow the stack.
        let mut stack = vec![(start, false)];
        while let Some((node, expanded)) = stack.pop() {
            if expanded {
                if let Node::Task { id, .. } = self.graph[node] {
                    order.push(id);
                }
                continue;
            }
            if !seen.insert(node) {
                continue;
            }
            stack.push((node, true));
            for pred in self.graph.neighbors_directed(node, Direction::Incoming) {
                if !seen.contains(&pred) {
                    stack.push((pred, false));
                }
            }
        }
        Ok(order)
    }

    /// The graph in Graphviz DOT: tasks as boxes, objects as ellipses, labelled with states.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph prism {\n");
        for node in self.graph.node_indices() {
            let _ = match &self.graph[node] {
                Node::Task { id, state, .. } => writeln!(
                    out,
                    "  n{} [shape=box, label=\"task {id}\\n{state:?}\"];",
                    node.index()
                ),
                Node::Object { id, state } => writeln!(
                    out,
                    "  n{} [shape=ellipse, label=\"object {id}\\n{state:?}\"];",
                    node.index()
                ),
            };
        }
        for edge in self.graph.edge_references() {
            let _ = writeln!(
                out,
                "  n{} -> n{};",
                edge.source().index(),
                edge.target().index()
            );
        }
        out.push_str("}\n");
        out
    }

    /// The graph as JSON: `{"tasks": [{id, state, inputs, outputs}], "objects": [{id, state}]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut tasks = Vec::new();
        let mut objects = Vec::new();
        for node in self.graph.node_indices() {
            match &self.graph[node] {
                Node::Task { id, state, .. } => {
                    let ids = |dir| -> Vec<String> {
                        self.graph
                            .neighbors_directed(node, dir)
                            .filter_map(|n| match self.graph[n] {
                                Node::Object { id, .. } => Some(id.to_string()),
                                Node::Task { .. } => None,
                            })
                            .collect()
                    };
                    tasks.push(serde_json::json!({
                        "id": id.to_string(),
                        "state": state,
                        "inputs": ids(Direction::Incoming),
                        "outputs": ids(Direction::Outgoing),
                    }));
                }
                Node::Object { id, state } => {
                    objects.push(serde_json::json!({ "id": id.to_string(), "state": state }));
                }
            }
        }
        serde_json::json!({ "tasks": tasks, "objects": objects })
    }

    fn successors(&self, node: NodeIndex) -> Vec<NodeIndex> {
        self.graph
            .neighbors_directed(node, Direction::Outgoing)
            .collect()
    }

    fn task_state_at(&self, node: NodeIndex) -> TaskState {
        match self.graph[node] {
            Node::Task { state, .. } => state,
            Node::Object { .. } => unreachable!("object node indexed as a task"),
        }
    }

    fn object_state_at(&self, node: NodeIndex) -> ObjectState {
        match self.graph[node] {
            Node::Object { state, .. } => state,
            Node::Task { .. } => unreachable!("task node indexed as an object"),
        }
    }

    /// Sets a task that is not running to ready or waiting by the states of its inputs now;
    /// with a failed input it stays waiting and the input is named.
    fn recount_inputs(&mut self, task: NodeIndex) -> Readiness {
        let mut pending = 0;
        let mut failed = None;
        for input in self.graph.neighbors_directed(task, Direction::Incoming) {
            match self.graph[input] {
                Node::Object {
                    state: ObjectState::Pending,
                    ..
                } => pending += 1,
                Node::Object {
                    id,
                    state: ObjectState::Failed,
                } => failed = failed.or(Some(id)),
                _ => {}
            }
        }
        let (new, readiness) = match (failed, pending) {
            (Some(input), _) => (TaskState::Waiting, Readiness::Failed(input)),
            (None, 0) => (TaskState::Ready, Readiness::Ready),
            (None, _) => (TaskState::Waiting, Readiness::Waiting),
        };
        if let Node::Task {
            state,
            pending_inputs,
            ..
        } = &mut self.graph[task]
        {
            *state = new;
            *pending_inputs = pending;
        }
        readiness
    }

    fn set_task_state(&mut self, node: NodeIndex, new: TaskState) {
        if let Node::Task { state, .. } = &mut self.graph[node] {
            *state = new;
        }
    }

    fn set_object_state(&mut self, node: NodeIndex, new: ObjectState) {
        if let Node::Object { state, .. } = &mut self.graph[node] {
            *state = new;
        }
    }

    fn transition(
        &mut self,
        id: TaskId,
        from: &[TaskState],
        to: TaskState,
    ) -> Result<(), GraphError> {
        self.transition_node(id, from, to).map(drop)
    }

    fn transition_node(
        &mut self,
        id: TaskId,
        from: &[TaskState],
        to: TaskState,
    ) -> Result<NodeIndex, GraphError> {
        let node = *self.tasks.get(&id).ok_or(GraphError::UnknownTask(id))?;
        match &mut self.graph[node] {
            Node::Task { state, .. } if from.contains(state) => {
                *state = to;
                Ok(node)
            }
            Node::Task { state, .. } => Err(GraphError::BadTransition {
                task: id,
                from: *state,
                to,
            }),
            Node::Object { .. } => unreachable!("task index points at an object"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(seq: u64) -> TaskId {
        TaskId::new(0, seq)
    }

    fn o(seq: u64) -> ObjectId {
        ObjectId::new(t(seq), 0)
    }

    #[test]
    fn a_task_waits_for_every_input_including_repeats() {
        let mut g = TaskGraph::new();
        assert_eq!(g.add_task(t(1), &[], 1), Ok(Readiness::Ready));
        assert_eq!(g.add_task(t(2), &[], 1), Ok(Readiness::Ready));
        assert_eq!(
            g.add_task(t(3), &[o(1), o(1), o(2)], 1),
            Ok(Readiness::Waiting)
        );
        g.start_task(t(1)).unwrap();
        assert_eq!(g.complete_task(t(1)), Ok(vec![]));
        assert_eq!(g.task_state(t(3)), Some(TaskState::Waiting));
        assert_eq!(g.complete_task(t(2)), Ok(vec![t(3)]));
        assert_eq!(g.object_state(o(2)), Some(ObjectState::Ready));
    }

    #[test]
    fn compacting_keeps_the_live_graph_and_drops_the_slots_of_removed_nodes() {
        let mut g = TaskGraph::new();
        for i in 0..10_000 {
            g.add_task(t(i), &[], 1).unwrap();
            g.start_task(t(i)).unwrap();
            g.complete_task(t(i)).unwrap();
        }
        // Two survivors with a consumer waiting on one of them.
        g.add_task(t(20_000), &[o(5), o(7)], 1).unwrap();
        for i in (0..10_000).filter(|&i| i != 5 && i != 7) {
            g.remove_object(o(i)).unwrap();
        }
        assert!(g.graph.node_bound() > 20_000);
        assert!(g.compact());
        assert!(!g.compact(), "nothing more to give back");
        assert_eq!(g.graph.node_bound(), g.graph.node_count());
        assert_eq!(g.object_count(), 3);
        assert_eq!(g.task_state(t(20_000)), Some(TaskState::Ready));
        assert_eq!(g.lineage(o(20_000)), Ok(vec![t(5), t(7), t(20_000)]));
        assert_eq!(g.remove_object(o(5)), Err(GraphError::StillNeeded(o(5))));
        g.start_task(t(20_000)).unwrap();
        g.complete_task(t(20_000)).unwrap();
        assert_eq!(g.object_state(o(20_000)), Some(ObjectState::Ready));
    }

    #[test]
    fn a_failure_spreads_to_every_task_downstream_and_no_further() {
        let mut g = TaskGraph::new();
        g.add_task(t(1), &[], 1).unwrap();
        g.add_task(t(2), &[], 1).unwrap();
        g.add_task(t(3), &[o(1)], 1).unwrap();
        g.add_task(t(4), &[o(3), o(2)], 1).unwrap();
        g.add_task(t(5), &[o(2)], 1).unwrap();
        assert_eq!(g.fail_task(t(1)), Ok(vec![t(3), t(4)]));
        assert_eq!(g.object_state(o(4)), Some(ObjectState::Failed));
        assert_eq!(g.task_state(t(5)), Some(TaskState::Waiting));
        // A task added after the failure fails at once.
        assert_eq!(g.add_task(t(6), &[o(4)], 1), Ok(Readiness::Failed(o(4))));
        assert_eq!(g.object_state(o(6)), Some(ObjectState::Failed));
    }

    #[test]
    fn lineage_lists_producers_inputs_first() {
        let mut g = TaskGraph::new();
        let put = ObjectId::new(t(100), 0);
        g.add_ready_object(put).unwrap();
        g.add_task(t(1), &[put], 1).unwrap();
        g.add_task(t(2), &[o(1)], 1).unwrap();
        g.add_task(t(3), &[o(1), o(2)], 1).unwrap();
        let lineage = g.lineage(o(3)).unwrap();
        assert_eq!(lineage, vec![t(1), t(2), t(3)]);
        assert_eq!(g.lineage(put), Ok(vec![]));
    }

    #[test]
    fn a_reopened_task_rebuilds_its_outputs_and_holds_back_their_consumers() {
        let mut g = TaskGraph::new();
        g.add_task(t(1), &[], 1).unwrap();
        g.add_task(t(2), &[o(1)], 1).unwrap();
        g.start_task(t(1)).unwrap();
        assert_eq!(g.complete_task(t(1)), Ok(vec![t(2)]));
        g.start_task(t(2)).unwrap();
        assert_eq!(g.complete_task(t(2)), Ok(vec![]));
        // Consumers of o(2): one ready, one waiting for another input, one running.
        g.add_task(t(3), &[], 1).unwrap();
        assert_eq!(g.add_task(t(4), &[o(2), o(2)], 1), Ok(Readiness::Ready));
        assert_eq!(g.add_task(t(5), &[o(2), o(3)], 1), Ok(Readiness::Waiting));
        g.add_task(t(6), &[o(2)], 1).unwrap();
        g.start_task(t(6)).unwrap();

        // Every copy of o(1) and o(2) is lost: inputs are reopened first.
        assert_eq!(g.reopen_task(t(1)), Ok((Readiness::Ready, vec![])));
        assert_eq!(g.reopen_task(t(2)), Ok((Readiness::Waiting, vec![t(4)])));
        assert_eq!(g.object_state(o(2)), Some(ObjectState::Pending));
        assert_eq!(g.task_state(t(6)), Some(TaskState::Running));
        // The running consumer is handed back: it waits too.
        assert_eq!(g.retry_task(t(6)), Ok(Readiness::Waiting));

        g.start_task(t(1)).unwrap();
        assert_eq!(g.complete_task(t(1)), Ok(vec![t(2)]));
        g.start_task(t(2)).unwrap();
        let mut ready = g.complete_task(t(2)).unwrap();
        ready.sort();
        assert_eq!(ready, vec![t(4), t(6)]);
        assert_eq!(
            g.task_state(t(5)),
            Some(TaskState::Waiting),
            "o(3) is pending"
        );
        assert_eq!(g.complete_task(t(3)), Ok(vec![t(5)]));
        assert_eq!(
            g.reopen_task(t(3)),
            Ok((Readiness::Ready, vec![t(5)])),
            "a consumer that was ready waits again"
        );
        assert_eq!(
            g.reopen_task(t(6)),
            Err(GraphError::BadTransition {
                task: t(6),
                from: TaskState::Ready,
                to: TaskState::Waiting
            })
        );
    }

    #[test]
    fn a_reopened_task_with_a_failed_input_waits_to_be_failed() {
        let mut g = TaskGraph::new();
        g.add_task(t(1), &[], 1).unwrap();
        g.add_task(t(2), &[o(1)], 1).unwrap();
        g.complete_task(t(1)).unwrap();
        g.complete_task(t(2)).unwrap();
        g.reopen_task(t(1)).unwrap();
        g.reopen_task(t(2)).unwrap();
        // Rebuilding the input failed: so does the consumer when its owner fails it.
        assert_eq!(g.fail_task(t(1)), Ok(vec![t(2)]));
        assert_eq!(g.object_state(o(2)), Some(ObjectState::Failed));
        g.add_task(t(3), &[], 1).unwrap();
        g.add_task(t(4), &[o(3)], 1).unwrap();
        g.complete_task(t(3)).unwrap();
        g.complete_task(t(4)).unwrap();
        g.reopen_task(t(3)).unwrap();
        g.fail_task(t(3)).unwrap();
        assert_eq!(g.reopen_task(t(4)), Ok((Readiness::Failed(o(3)), vec![])));
        assert_eq!(g.task_state(t(4)), Some(TaskState::Waiting));
        assert_eq!(g.fail_task(t(4)), Ok(vec![]));
    }

    #[test]
    fn removing_objects_forgets_finished_tasks_but_not_needed_inputs() {
        let mut g = TaskGraph::new();
        g.add_task(t(1), &[], 2).unwrap();
        g.add_task(t(2), &[ObjectId::new(t(1), 0)], 1).unwrap();
        assert_eq!(
            g.remove_object(ObjectId::new(t(1), 0)),
            Err(GraphError::StillNeeded(ObjectId::new(t(1), 0)))
        );
        g.complete_task(t(1)).unwrap();
        g.complete_task(t(2)).unwrap();
        g.remove_object(ObjectId::new(t(1), 0)).unwrap();
        assert_eq!(g.task_count(), 2, "t1 still has an output");
        g.remove_object(ObjectId::new(t(1), 1)).unwrap();
        g.remove_object(o(2)).unwrap();
        assert_eq!((g.task_count(), g.object_count()), (0, 0));
    }

    #[test]
    fn misuse_is_an_error() {
        let mut g = TaskGraph::new();
        assert_eq!(
            g.add_task(t(1), &[o(9)], 1),
            Err(GraphError::UnknownObject(o(9)))
        );
        g.add_task(t(1), &[], 1).unwrap();
        assert_eq!(
            g.add_task(t(1), &[], 1),
            Err(GraphError::DuplicateTask(t(1)))
        );
        assert!(matches!(
            g.retry_task(t(1)),
            Err(GraphError::BadTransition { .. })
        ));
        assert_eq!(g.complete_task(t(7)), Err(GraphError::UnknownTask(t(7))));
    }

    #[test]
    fn exports_dot_and_json() {
        let mut g = TaskGraph::new();
        g.add_task(t(1), &[], 1).unwrap();
        g.add_task(t(2), &[o(1)], 1).unwrap();
        let dot = g.to_dot();
        assert!(
            dot.contains("task 0.1\\nReady") && dot.contains("->"),
            "{dot}"
        );
        let json = g.to_json();
        assert_eq!(json["tasks"].as_array().unwrap().len(), 2);
        assert_eq!(json["tasks"][1]["inputs"][0], "0.1/0");
    }

    proptest! {
        /// Random DAGs complete, and every task completes after all of its inputs.
        #[test]
        fn random_dags_complete_in_topological_order(
            deps in proptest::collection::vec(proptest::collection::vec(any::<prop::sample::Index>(), 0..4), 1..60),
            picks in proptest::collection::vec(any::<prop::sample::Index>(), 200),
        ) {
            let mut g = TaskGraph::new();
            let mut inputs_of = Vec::new();
            let mut ready = Vec::new();
            for (i, ds) in deps.iter().enumerate() {
                let inputs: Vec<u64> = if i == 0 { vec![] } else { ds.iter().map(|d| d.index(i) as u64).collect() };
                let ids: Vec<ObjectId> = inputs.iter().map(|&s| o(s)).collect();
                if g.add_task(t(i as u64), &ids, 1).unwrap() == Readiness::Ready {
                    ready.push(t(i as u64));
                }
                inputs_of.push(inputs);
            }
            let mut done = HashSet::new();
            let mut pick = picks.iter().cycle();
            while !ready.is_empty() {
                let next = ready.swap_remove(pick.next().unwrap().index(ready.len()));
                for input in &inputs_of[next.seq as usize] {
                    prop_assert!(done.contains(input), "{next} ran before input {input}");
                }
                g.start_task(next).unwrap();
                ready.extend(g.complete_task(next).unwrap());
                done.insert(next.seq);
            }
            prop_assert_eq!(done.len(), deps.len());
        }
    }
}
