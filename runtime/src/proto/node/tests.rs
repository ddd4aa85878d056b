//! The node stepped by hand: events in, actions out, no processes or sockets.

use std::task::Poll;
use std::time::Instant;

use prism_graph::{
    ActorId, Arg, IdMap, ObjectId, Resources, TaskError, TaskId, TaskKind, TaskSpec,
};
use prism_transport::{
    ActorPlace, ArchivedToNode, Execute, FrameDecoder, HandedTask, ObjectValue, Outcome, TaskEnd,
    ToNode, ToWorker, Value, encode_frame,
};

use super::{Action, ActorName, DRIVER_OWNER, Event, HostRequest, IDLE_TICK, State, Unclaimed};
use crate::proto::nodes::{NodeIdx, Nodes, node_of};
use crate::proto::owner::Slot;
use crate::proto::placement::{PlacementStrategy, group_demand};
use crate::proto::scheduler::{Placement, WorkerId};

/// A node and what it asked for so far.
struct Harness {
    node: State,
    now: Instant,
    /// Messages sent to workers, decoded, oldest first.
    sent: Vec<(WorkerId, ToWorker)>,
    started: Vec<WorkerId>,
    /// Where each started worker's node was to fetch the job's binary (`None`: the driver).
    binary_from: Vec<Option<NodeIdx>>,
    /// Workers that said hello.
    connected: Vec<WorkerId>,
    killed: Vec<WorkerId>,
    host: Vec<(NodeIdx, HostRequest)>,
    dropped: Vec<NodeIdx>,
    seq: u64,
    /// Whether every ask for a grant is granted at once (else kept in `asks`).
    grant_all: bool,
    /// Asks for grants not answered, by node.
    asks: Vec<(NodeIdx, Resources)>,
    /// Grants given back, by node.
    returned: Vec<(NodeIdx, Resources)>,
    /// Pulls into the driver's store asked for: (object, from).
    pulls_here: Vec<(ObjectId, NodeIdx)>,
    /// Names claimed at the head, and released there.
    claims: Vec<(ActorId, ActorName)>,
    releases: Vec<(ActorId, ActorName)>,
    /// Lookups at the head, watches of other jobs' actors (and their ends), and frames sent
    /// to other jobs' workers, by endpoint.
    finds: Vec<(u64, ActorName)>,
    watches: Vec<(ActorId, String, ActorId)>,
    unwatched: Vec<ActorId>,
    foreign_sent: Vec<(String, ToWorker)>,
    /// Detached actors the head was asked to make, and other jobs' actors it was asked to
    /// kill.
    detached: Vec<(u64, TaskSpec, prism_transport::ActorConfig)>,
    foreign_kills: Vec<(String, ActorId)>,
    /// The dead workers whose segments go from the driver's own store, and those kept.
    dropped_owned: Vec<(WorkerId, Vec<ObjectId>)>,
    /// The numbers the head's word on each of those kills comes under.
    kill_numbers: Vec<u64>,
}

/// The messages for workers in `frames`, decoded.
fn decode_all(frames: &[u8]) -> Vec<ToWorker> {
    let mut decoder = FrameDecoder::new(1 << 30);
    decoder.extend(frames);
    let mut msgs = Vec::new();
    while let Some(frame) = decoder.next_frame().unwrap() {
        let msg = frame.access::<ToWorker>().unwrap();
        msgs.push(rkyv::deserialize::<ToWorker, rkyv::rancor::Error>(msg).unwrap());
    }
    msgs
}

/// A worker's report that `task` ended with `outcome` (no run times).
fn done(task: TaskId, outcome: Outcome) -> ToNode {
    let ended = vec![TaskEnd {
        task,
        outcome,
        times: None,
        run: 0,
    }];
    ToNode::Done { sent_us: 0, ended }
}

fn cpus(n: f64) -> Resources {
    Resources::cpus(n).unwrap()
}

impl Harness {
    /// `nodes` nodes of `cpus` CPUs each; more than one makes a joined cluster (no node on the
    /// driver's host).
    fn new(nodes: usize, per_node: f64) -> Self {
        Self::with_stores(nodes, per_node, 1 << 30)
    }

    /// Like [`Harness::new`], with object stores of `capacity` bytes.
    fn with_stores(nodes: usize, per_node: f64, capacity: u64) -> Self {
        Self::build(nodes, per_node, capacity, false)
    }

    /// Like [`Harness::new`], a joined cluster whose driver borrows its workers from the
    /// nodes' pools.
    fn borrowing(nodes: usize, per_node: f64) -> Self {
        Self::build(nodes, per_node, 1 << 30, true)
    }

    fn build(nodes: usize, per_node: f64, capacity: u64, borrows: bool) -> Self {
        let mut table = Nodes::default();
        for i in 0..nodes {
            table.add(format!("n{i}"), cpus(per_node), 16, per_node as usize, 8);
        }
        let cluster = (nodes > 1).then_some(None);
        let mut state = State::new(table, capacity, cluster);
        if borrows {
            state = state.with_worker_owners(true).with_borrowed_workers(true);
        }
        let mut h = Harness {
            // The nodes start their workers at once, so that each test owns its processes.
            node: state.prestarting_everywhere(),
            now: Instant::now(),
            sent: Vec::new(),
            started: Vec::new(),
            connected: Vec::new(),
            killed: Vec::new(),
            host: Vec::new(),
            dropped: Vec::new(),
            seq: 0,
            grant_all: true,
            asks: Vec::new(),
            returned: Vec::new(),
            pulls_here: Vec::new(),
            binary_from: Vec::new(),
            claims: Vec::new(),
            releases: Vec::new(),
            finds: Vec::new(),
            watches: Vec::new(),
            unwatched: Vec::new(),
            foreign_sent: Vec::new(),
            detached: Vec::new(),
            foreign_kills: Vec::new(),
            dropped_owned: Vec::new(),
            kill_numbers: Vec::new(),
        };
        h.node.start();
        h.drain();
        // Every worker asked for starts and says hello (the nodes' first workers start as
        // sources of the job's binary have room, so more follow the first hellos).
        let mut connected = 0;
        while connected < h.started.len() {
            let worker = h.started[connected];
            h.connect(worker);
            connected += 1;
        }
        h
    }

    fn event(&mut self, event: Event<'_>) {
        self.node.handle(event, self.now).unwrap();
        self.drain();
    }

    fn connect(&mut self, worker: WorkerId) {
        self.connected.push(worker);
        let pid = 1000 + worker as u32;
        self.event(Event::WorkerSpawned { worker, pid });
        self.event(Event::WorkerConnected {
            worker,
            direct: None,
        });
    }

    fn drain(&mut self) {
        while let Some(action) = self.node.poll_action() {
            match action {
                Action::Send { worker, frames } => {
                    (self.sent).extend(decode_all(&frames).into_iter().map(|m| (worker, m)));
                }
                Action::StartWorker {
                    node,
                    worker,
                    binary_from,
                } => {
                    assert_eq!(node_of(worker), node);
                    self.started.push(worker);
                    self.binary_from.push(binary_from);
                }
                Action::KillWorker { worker } => self.killed.push(worker),
                Action::Host { node, request } => match request {
                    HostRequest::Spawn { worker, .. } => self.started.push(worker),
                    HostRequest::Kill { worker } => self.killed.push(worker),
                    HostRequest::Grant { shape } => self.asks.push((node, shape)),
                    HostRequest::Return { resources } => self.returned.push((node, resources)),
                    other => self.host.push((node, other)),
                },
                Action::DropNode { node, .. } => self.dropped.push(node),
                Action::DropOwnedBy { owner, keep } => self.dropped_owned.push((owner, keep)),
                Action::FetchHere { id, from, .. } => self.pulls_here.push((id, from)),
                Action::ClaimName { actor, name, .. } => self.claims.push((actor, name)),
                Action::ReleaseName { actor, name } => self.releases.push((actor, name)),
                Action::FindName { find, name } => self.finds.push((find, name)),
                Action::WatchActor { alias, job, actor } => self.watches.push((alias, job, actor)),
                Action::UnwatchActor { alias } => self.unwatched.push(alias),
                Action::CreateDetached { find, spec, setup } => {
                    self.detached.push((find, *spec, *setup))
                }
                Action::KillForeign { kill, job, actor } => {
                    self.foreign_kills.push((job, actor));
                    self.kill_numbers.push(kill);
                }
                Action::SendForeign { endpoint, frames } => {
                    let msgs = decode_all(&frames).into_iter();
                    self.foreign_sent
                        .extend(msgs.map(|m| (endpoint.clone(), m)));
                }
                _ => {}
            }
        }
        if self.grant_all {
            for (node, shape) in std::mem::take(&mut self.asks) {
                self.event(Event::Granted { node, shape });
            }
        }
    }

    fn spec(&mut self, args: Vec<Arg>, max_retries: u32) -> TaskSpec {
        self.seq += 1;
        TaskSpec {
            resources: cpus(1.0),
            max_retries,
            ..TaskSpec::call(TaskId::new(DRIVER_OWNER, self.seq), "tests::f", args)
        }
    }

    /// Submits `count` one-CPU tasks without arguments; their ids.
    fn submit_many(&mut self, count: usize, max_retries: u32) -> Vec<TaskId> {
        let specs: Vec<TaskSpec> = (0..count)
            .map(|_| self.spec(Vec::new(), max_retries))
            .collect();
        let tasks = specs.iter().map(|s| s.task_id).collect();
        for spec in specs {
            self.submit(spec);
        }
        tasks
    }

    fn submit(&mut self, spec: TaskSpec) -> ObjectId {
        let id = ObjectId::new(spec.task_id, 0);
        self.event(Event::Submit { spec, failed: None });
        id
    }

    /// Every task sent to a worker, in order.
    fn execs(&self) -> impl Iterator<Item = (WorkerId, &Execute)> {
        self.sent.iter().flat_map(|(worker, msg)| {
            let execs: Vec<&Execute> = match msg {
                ToWorker::Execute(batch) => batch.iter().collect(),
                ToWorker::Nested { exec, .. } => vec![exec],
                _ => Vec::new(),
            };
            execs.into_iter().map(move |e| (*worker, e))
        })
    }

    /// A task of no arguments (3 retries) that ran and left a value of `len` bytes in its
    /// worker's node's store: the task, its object and that worker.
    fn shared_leaf(&mut self, len: u64) -> (TaskId, ObjectId, WorkerId) {
        let leaf = self.spec(Vec::new(), 3);
        let task = leaf.task_id;
        let id = self.submit(leaf);
        let w = self.where_sent(task).expect("dispatched");
        self.returns(w, task, Value::Shared { id, len });
        (task, id, w)
    }

    /// A worker running a task of the driver's (one CPU of its node) asks for a lease on a
    /// worker of one CPU: that owner and the lease's key.
    fn owner_asks_lease(&mut self) -> (WorkerId, TaskId) {
        let spec = self.spec(Vec::new(), 0);
        let parent = spec.task_id;
        self.submit(spec);
        let owner = self.where_sent(parent).expect("dispatched");
        let key = TaskId::new(owner, u64::MAX - 1);
        let shape = cpus(1.0);
        self.report(
            owner,
            &ToNode::Lease {
                key,
                shape,
                near: None,
            },
        );
        (owner, key)
    }

    /// On a node of two workers, [`Harness::owner_asks_lease`] granted on the other worker:
    /// the owner, the lease's key and that worker.
    fn owner_leases_the_other_worker(&mut self) -> (WorkerId, TaskId, WorkerId) {
        let (owner, key) = self.owner_asks_lease();
        let other = *self.connected.iter().find(|w| **w != owner).unwrap();
        let at = None;
        let granted = ToWorker::Leased {
            key,
            worker: other,
            at,
            direct: None,
        };
        assert!(self.sent.contains(&(owner, granted)), "{:?}", self.sent);
        (owner, key, other)
    }

    /// The worker `task` was last sent to.
    fn where_sent(&self, task: TaskId) -> Option<WorkerId> {
        self.execs()
            .filter(|(_, e)| e.task == task)
            .map(|(w, _)| w)
            .last()
    }

    /// How many times `task` was sent to a worker.
    fn sends(&self, task: TaskId) -> usize {
        self.execs().filter(|(_, e)| e.task == task).count()
    }

    /// Node `node`'s pool lends the driver the first worker of its numbers (answering a
    /// borrow), whose relayed link says hello: the worker.
    fn lent_by(&mut self, node: NodeIdx) -> WorkerId {
        let worker = crate::proto::nodes::pool_numbers(node).start;
        let pid = 4242;
        self.event(Event::NodeLent { node, worker, pid });
        self.event(Event::NodeStartedWorker { node, worker, pid });
        self.event(Event::WorkerConnected {
            worker,
            direct: None,
        });
        worker
    }

    /// Three tasks on two workers (nodes of one CPU each): the one pipelined behind another,
    /// the worker it waits on, and the other worker.
    fn three_on_two(&mut self) -> (TaskId, WorkerId, WorkerId) {
        let tasks = self.submit_many(3, 0);
        let sent: Vec<(TaskId, WorkerId)> = (tasks.iter())
            .map(|&t| (t, self.where_sent(t).expect("sent")))
            .collect();
        let behind = |w: WorkerId| sent.iter().filter(|(_, x)| *x == w).count() > 1;
        let (queued, busy) = *(sent.iter().rev())
            .find(|(_, w)| behind(*w))
            .expect("one pipelined");
        let other = (sent.iter().map(|(_, w)| *w))
            .find(|&w| w != busy)
            .expect("two workers");
        (queued, busy, other)
    }

    fn report(&mut self, worker: WorkerId, msg: &ToNode) {
        let mut bytes = Vec::new();
        encode_frame(msg, &mut bytes).unwrap();
        let mut decoder = FrameDecoder::new(1 << 20);
        decoder.extend(&bytes);
        let frame = decoder.next_frame().unwrap().unwrap();
        let archived: &ArchivedToNode = frame.access::<ToNode>().unwrap();
        let mut mapped = IdMap::default();
        self.event(Event::Messages {
            worker,
            messages: &[archived],
            mapped: &mut mapped,
        });
    }

    fn returns(&mut self, worker: WorkerId, task: TaskId, value: Value) {
        let outcome = Outcome::Returned {
            values: vec![value],
            nested: vec![Vec::new()],
            actors: Vec::new(),
        };
        self.report(worker, &done(task, outcome));
    }

    fn dies(&mut self, worker: WorkerId) {
        let reason = "killed by signal 9".to_string();
        self.event(Event::WorkerExited { worker, reason });
        self.event(Event::WorkerEof { worker });
    }

    fn slot(&self, id: ObjectId) -> Option<Slot> {
        self.node.owner.peek(id).cloned()
    }
}

#[test]
fn a_task_is_dispatched_to_a_worker_and_its_value_reaches_the_owner() {
    let mut h = Harness::new(1, 2.0);
    assert_eq!(h.started.len(), 2, "one worker per CPU at start");
    let spec = h.spec(Vec::new(), 0);
    let task = spec.task_id;
    let id = h.submit(spec);
    let worker = h.where_sent(task).expect("dispatched");
    assert!(matches!(h.slot(id), Some(Slot::Pending)));
    let heard = h.node.worker_messages();
    h.returns(worker, task, Value::Inline(vec![1, 2, 3]));
    match h.slot(id) {
        Some(Slot::Ready(bytes)) => assert_eq!(bytes.as_slice(), &[1, 2, 3]),
        other => panic!("expected the value, got {other:?}"),
    }
    // A stale second report changes nothing (but was a message all the same).
    h.returns(worker, task, Value::Inline(vec![9]));
    assert!(matches!(h.slot(id), Some(Slot::Ready(b)) if b.as_slice() == [1, 2, 3]));
    assert_eq!(
        h.node.worker_messages(),
        heard + 2,
        "each worker message counted"
    );
}

#[test]
fn a_task_whose_worker_dies_is_retried_then_fails_naming_the_deaths() {
    let mut h = Harness::new(1, 2.0);
    let spec = h.spec(Vec::new(), 1);
    let task = spec.task_id;
    let id = h.submit(spec);
    let first = h.where_sent(task).unwrap();
    h.dies(first);
    let second = h.where_sent(task).unwrap();
    assert_ne!(first, second, "retried on another worker");
    assert_eq!(h.sends(task), 2);
    h.dies(second);
    match h.slot(id) {
        Some(Slot::Failed(TaskError::WorkerDied { attempts, .. })) => assert_eq!(attempts, 2),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
}

/// A task of the driver's runs on a worker, which hands over task 5 of its own (not ended):
/// that worker and the handed task's object.
fn a_worker_hands_over_its_task(h: &mut Harness) -> (WorkerId, ObjectId) {
    let spec = h.spec(Vec::new(), 0);
    let parent = spec.task_id;
    h.submit(spec);
    let worker = h.where_sent(parent).expect("dispatched");
    let task = TaskId::new(worker, 5);
    let handed = ToNode::HandOver(vec![HandedTask {
        task,
        function: "tests::child".into(),
        num_returns: 1,
    }]);
    h.report(worker, &handed);
    (worker, ObjectId::new(task, 0))
}

/// The workers of `n` tasks of the driver's, each sent one.
fn busy_workers(h: &mut Harness, n: usize) -> Vec<WorkerId> {
    (0..n)
        .map(|_| {
            let spec = h.spec(Vec::new(), 0);
            let task = spec.task_id;
            h.submit(spec);
            h.where_sent(task).expect("the task runs")
        })
        .collect()
}

/// Two workers of the driver's tasks: an owner, and a reader its references reach.
fn an_owner_and_a_reader(h: &mut Harness) -> (WorkerId, WorkerId) {
    let workers = busy_workers(h, 2);
    (workers[0], workers[1])
}

#[test]
fn an_object_asked_for_and_held_before_its_owner_s_hand_over_is_answered_and_kept() {
    let mut h = Harness::new(1, 3.0);
    let (owner, reader) = an_owner_and_a_reader(&mut h);
    // The reader's ask and hold overtake the owner's hand-over (two links).
    let id = ObjectId::new(TaskId::new(owner, 5), 0);
    h.report(reader, &ToNode::Get { ids: vec![id] });
    h.report(reader, &ToNode::Hold(vec![id]));
    assert_eq!(h.told(reader, id), None, "awaited, not refused");
    let handed = ToNode::HandOver(vec![HandedTask {
        task: id.task,
        function: "tests::child".into(),
        num_returns: 1,
    }]);
    h.report(owner, &handed);
    h.returns(owner, id.task, Value::Inline(vec![4, 2]));
    assert_eq!(
        h.told(reader, id),
        Some(ObjectValue::Ready(Value::Inline(vec![4, 2])))
    );
    // The owner lets go: the reader's hold keeps it.
    h.report(owner, &ToNode::Release(vec![id]));
    assert!(
        matches!(h.slot(id), Some(Slot::Ready(_))),
        "held by the reader"
    );
    h.report(reader, &ToNode::Release(vec![id]));
    assert!(h.slot(id).is_none(), "freed with the last hold");
}

#[test]
fn a_task_submitted_with_an_awaited_argument_waits_for_it_or_fails_with_its_owner() {
    let mut h = Harness::new(1, 4.0);
    let (owner, reader) = an_owner_and_a_reader(&mut h);
    let id = ObjectId::new(TaskId::new(owner, 5), 0);
    // The reader's submission taking the object overtakes the owner's hand-over.
    let spec = h.spec(vec![Arg::Ref(id)], 0);
    let task = spec.task_id;
    h.report(reader, &ToNode::Submit { spec, failed: None });
    assert!(
        h.slot(ObjectId::new(task, 0))
            .is_some_and(|s| matches!(s, Slot::Pending))
    );
    assert_eq!(h.sends(task), 0);
    let handed = ToNode::HandOver(vec![HandedTask {
        task: id.task,
        function: "tests::child".into(),
        num_returns: 1,
    }]);
    h.report(owner, &handed);
    assert_eq!(h.sends(task), 0, "waits for the argument's value");
    h.returns(owner, id.task, Value::Inline(vec![4, 2]));
    assert_eq!(h.sends(task), 1, "sent once its argument is known");
    // One taking what a task of the driver's puts, whose put comes after it: sent at once.
    let spec = h.spec(Vec::new(), 0);
    let running = spec.task_id;
    h.submit(spec);
    let putter = h.where_sent(running).expect("dispatched");
    let put = ObjectId::new(running, 1);
    let spec = h.spec(vec![Arg::Ref(put)], 0);
    let after = spec.task_id;
    h.report(reader, &ToNode::Submit { spec, failed: None });
    assert_eq!(h.sends(after), 0);
    let made = ToNode::Put {
        id: put,
        value: Value::Inline(vec![1]),
        nested: Vec::new(),
        actors: Vec::new(),
    };
    h.report(putter, &made);
    assert_eq!(h.sends(after), 1, "sent once the put came");
    // Another, whose argument's owner dies first, fails with OwnerDied.
    let gone = ObjectId::new(TaskId::new(owner, 6), 0);
    let spec = h.spec(vec![Arg::Ref(gone)], 0);
    let orphan = spec.task_id;
    h.report(reader, &ToNode::Submit { spec, failed: None });
    h.dies(owner);
    assert!(
        matches!(
            h.slot(ObjectId::new(orphan, 0)),
            Some(Slot::Failed(TaskError::OwnerDied { .. }))
        ),
        "{:?}",
        h.slot(ObjectId::new(orphan, 0))
    );
    assert_eq!(h.sends(orphan), 0);
}

#[test]
fn an_awaited_object_fails_with_its_owner_s_death_or_after_the_limit() {
    let mut h = Harness::new(1, 3.0);
    let (owner, reader) = an_owner_and_a_reader(&mut h);
    let (first, second) = (
        ObjectId::new(TaskId::new(owner, 5), 0),
        ObjectId::new(TaskId::new(reader + 1_000, 5), 0),
    );
    h.report(
        reader,
        &ToNode::Get {
            ids: vec![first, second],
        },
    );
    h.dies(owner);
    match h.told(reader, first) {
        Some(ObjectValue::Failed(TaskError::OwnerDied { owner: named, .. })) => {
            assert!(named.contains(&format!("worker {owner}")), "{named}")
        }
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    // Of a worker never heard of: its ask fails once the limit passed, not before.
    assert_eq!(h.told(reader, second), None);
    h.now += crate::proto::owner::awaited::AWAIT_LIMIT;
    h.event(Event::Tick);
    match h.told(reader, second) {
        Some(ObjectValue::Failed(TaskError::InvalidValue { reason, .. })) => {
            assert!(reason.contains("no word of it"), "{reason}")
        }
        other => panic!("expected a failure after the limit, got {other:?}"),
    }
    // An object of a task of the driver's it does not know (freed long ago) fails at once.
    let stale = ObjectId::new(TaskId::new(DRIVER_OWNER, 999), 0);
    h.report(reader, &ToNode::Get { ids: vec![stale] });
    assert!(matches!(
        h.told(reader, stale),
        Some(ObjectValue::Failed(_))
    ));
}

#[test]
fn a_handed_over_task_is_read_and_awaited_like_the_drivers_own_until_its_end_comes() {
    let mut h = Harness::new(1, 2.0);
    let (worker, id) = a_worker_hands_over_its_task(&mut h);
    assert!(matches!(h.slot(id), Some(Slot::Pending)));
    // A task of the driver's taking it waits for it.
    let consumer = h.spec(vec![Arg::Ref(id)], 0);
    let consumer_task = consumer.task_id;
    h.submit(consumer);
    assert_eq!(h.sends(consumer_task), 0, "waits for the handed task's end");
    // Its end comes from the worker that handed it over.
    h.returns(worker, id.task, Value::Inline(vec![4, 2]));
    match h.slot(id) {
        Some(Slot::Ready(bytes)) => assert_eq!(bytes.as_slice(), &[4, 2]),
        other => panic!("expected the value, got {other:?}"),
    }
    assert_eq!(h.sends(consumer_task), 1, "sent once its argument is known");
    // Its worker's death later fails nothing.
    h.dies(worker);
    assert!(matches!(h.slot(id), Some(Slot::Ready(_))));
}

#[test]
fn a_handed_over_task_s_failure_is_final() {
    let mut h = Harness::new(1, 2.0);
    let (worker, id) = a_worker_hands_over_its_task(&mut h);
    h.node.owner.add_ref(id);
    // Even an argument its owner says is missing: the node has no spec of it to run again.
    let error = TaskError::ArgumentMissing {
        task: id.task,
        function: "tests::child".into(),
        index: 0,
        object: ObjectId::new(TaskId::new(DRIVER_OWNER, 99), 0),
        reason: "No such file or directory".into(),
    };
    h.report(worker, &done(id.task, Outcome::Failed(error)));
    assert!(
        matches!(
            h.slot(id),
            Some(Slot::Failed(TaskError::ArgumentMissing { .. }))
        ),
        "{:?}",
        h.slot(id)
    );
    assert_eq!(h.sends(id.task), 0, "never run by the node");
}

#[test]
fn a_cancel_of_a_handed_over_task_goes_to_its_owner() {
    let mut h = Harness::new(1, 2.0);
    let (worker, id) = a_worker_hands_over_its_task(&mut h);
    h.event(Event::Cancel { id, force: true });
    let cancel = ToWorker::CancelHanded {
        task: id.task,
        force: true,
    };
    assert!(h.sent.contains(&(worker, cancel)), "{:?}", h.sent);
    assert!(matches!(h.slot(id), Some(Slot::Pending)), "its end says");
}

#[test]
fn a_handed_over_task_fails_with_owner_died_naming_its_owner_when_it_dies_first() {
    let mut h = Harness::new(1, 2.0);
    let (worker, id) = a_worker_hands_over_its_task(&mut h);
    // The driver holds a reference to it too (read from the value of the worker's task).
    h.node.owner.add_ref(id);
    h.dies(worker);
    match h.slot(id) {
        Some(Slot::Failed(TaskError::OwnerDied {
            task,
            function,
            owner,
            reason,
        })) => {
            assert_eq!((task, function.as_str()), (id.task, "tests::child"));
            assert!(owner.contains(&format!("worker {worker}")), "{owner}");
            assert!(reason.contains("signal 9"), "{reason}");
        }
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    // A hand-over of another worker's task is not taken.
    let (other, _) = a_worker_hands_over_its_task(&mut h);
    let stranger = TaskId::new(other + 1, 9);
    let handed = ToNode::HandOver(vec![HandedTask {
        task: stranger,
        function: "tests::child".into(),
        num_returns: 1,
    }]);
    h.report(other, &handed);
    assert!(h.slot(ObjectId::new(stranger, 0)).is_none());
}

#[test]
fn a_dead_worker_s_segments_go_from_its_node_but_for_those_it_handed_over() {
    // Embedded (the driver's own store), then a joined cluster (the worker's node's).
    for nodes in [1, 2] {
        let mut h = Harness::new(nodes, 2.0);
        let (worker, handed) = a_worker_hands_over_its_task(&mut h);
        // In the worker's node's store (the harness maps no segment for the driver's own).
        let value = match nodes {
            1 => Value::Inline(vec![7]),
            _ => Value::Shared {
                id: handed,
                len: 1 << 20,
            },
        };
        h.report(
            worker,
            &done(
                handed.task,
                Outcome::Returned {
                    values: vec![value],
                    nested: vec![Vec::new()],
                    actors: vec![Vec::new()],
                },
            ),
        );
        h.node.owner.add_ref(handed);
        // Another worker's object is no business of this death.
        let (other, theirs) = a_worker_hands_over_its_task(&mut h);
        h.node.owner.add_ref(theirs);
        h.dies(worker);
        let told: Vec<(NodeIdx, WorkerId, Vec<ObjectId>)> = match nodes {
            1 => (h.dropped_owned.iter())
                .map(|(owner, keep)| (0, *owner, keep.clone()))
                .collect(),
            _ => (h.host.iter())
                .filter_map(|(node, r)| match r {
                    HostRequest::DropOwnedBy { owner, keep } => Some((*node, *owner, keep.clone())),
                    _ => None,
                })
                .collect(),
        };
        assert_eq!(told, vec![(node_of(worker), worker, vec![handed])]);
        let slot = h.slot(handed);
        assert!(
            matches!(slot, Some(Slot::Remote(_) | Slot::Ready(_))),
            "{nodes}: {slot:?}"
        );
        assert_ne!(other, worker);
    }
}

#[test]
fn a_lost_object_is_rebuilt_from_its_lineage_when_its_node_dies() {
    let mut h = Harness::new(2, 1.0);
    let len = 1 << 20;
    let (leaf_task, leaf_id, w) = h.shared_leaf(len);
    assert!(matches!(h.slot(leaf_id), Some(Slot::Remote(_))));
    // Its consumer is held for a fetch when it lands on the other node.
    let sum = h.spec(vec![Arg::Ref(leaf_id)], 3);
    let sum_task = sum.task_id;
    let sum_id = h.submit(sum);
    // The leaf's node dies before the sum ends.
    let home = node_of(w);
    h.event(Event::NodeLost {
        node: home,
        reason: "test".into(),
        lease_end: h.now,
    });
    assert_eq!(h.dropped, vec![home]);
    // The sum moves to the surviving node (again, if it was sent to the lost one), where its
    // argument is not: it waits there while the leaf runs again, rather than being sent only
    // to find its argument missing.
    let other = 1 - home;
    let sends = h.sends(sum_task);
    let again = h.where_sent(leaf_task).unwrap();
    assert_eq!(node_of(again), other);
    assert_eq!(h.sends(leaf_task), 2);
    assert_eq!(
        h.sends(sum_task),
        sends,
        "the sum waits for the rebuilt leaf"
    );
    // The rebuilt leaf lands there: the sum goes, once.
    h.returns(again, leaf_task, Value::Shared { id: leaf_id, len });
    assert_eq!(h.sends(sum_task), sends + 1);
    let at = h.where_sent(sum_task).unwrap();
    assert_eq!(node_of(at), other);
    h.returns(at, sum_task, Value::Inline(vec![7]));
    assert!(matches!(h.slot(sum_id), Some(Slot::Ready(_))));
}

#[test]
fn a_long_chain_of_results_on_one_node_gets_a_second_copy_elsewhere() {
    use super::copies::MAX_EXPOSURE;
    let mut h = Harness::new(3, 1.0);
    let len = 1 << 20;
    let mut input: Option<ObjectId> = None;
    let mut home = None;
    for link in 1..=MAX_EXPOSURE + 1 {
        let args = input.map(Arg::Ref).into_iter().collect();
        let spec = h.spec(args, 3);
        let task = spec.task_id;
        let id = h.submit(spec);
        let w = h.where_sent(task).unwrap();
        // Placed by locality: every link runs where the one before left its result.
        assert_eq!(*home.get_or_insert(node_of(w)), node_of(w));
        h.returns(w, task, Value::Shared { id, len });
        let copied: Vec<ObjectId> = h
            .host
            .iter()
            .filter_map(|(node, r)| match r {
                HostRequest::Fetch { id, .. } if Some(*node) != home => Some(*id),
                _ => None,
            })
            .collect();
        match link <= MAX_EXPOSURE {
            true => assert!(copied.is_empty(), "link {link}: {copied:?}"),
            false => assert_eq!(copied, vec![id], "the last link is copied to another node"),
        }
        input = Some(id);
    }
    // The copy lands; then its node is lost: another node fetches a copy again.
    let last = input.unwrap();
    let fetches = |h: &Harness| -> Vec<NodeIdx> {
        (h.host.iter())
            .filter_map(|(node, r)| match r {
                HostRequest::Fetch { id, .. } if *id == last => Some(*node),
                _ => None,
            })
            .collect()
    };
    let second = fetches(&h)[0];
    h.event(Event::NodeFetched {
        node: second,
        id: last,
        result: Ok(()),
    });
    h.event(Event::NodeLost {
        node: second,
        reason: "test".into(),
        lease_end: h.now,
    });
    let third = fetches(&h).get(1).copied();
    assert!(
        third.is_some_and(|t| t != second && Some(t) != home),
        "{:?}",
        fetches(&h)
    );
}

#[test]
fn an_argument_missing_on_its_node_is_rebuilt_and_the_task_runs_again_once_it_is() {
    let mut h = Harness::new(2, 1.0);
    let (leaf_task, leaf_id, _) = h.shared_leaf(1 << 20);
    let sum = h.spec(vec![Arg::Ref(leaf_id)], 3);
    let sum_task = sum.task_id;
    h.submit(sum);
    let at = h.where_sent(sum_task).unwrap();
    // The worker cannot find the segment: the task goes back and is sent again.
    let error = TaskError::ArgumentMissing {
        task: sum_task,
        function: "tests::f".into(),
        index: 0,
        object: leaf_id,
        reason: "No such file or directory".into(),
    };
    h.host.clear();
    h.report(at, &done(sum_task, Outcome::Failed(error)));
    // No other copy: the leaf runs again, and the sum waits for it (not failed).
    assert!(matches!(
        h.slot(ObjectId::new(sum_task, 0)),
        Some(Slot::Pending)
    ));
    assert_eq!(
        h.sends(sum_task),
        1,
        "held until its argument is there again"
    );
    let again = h.where_sent(leaf_task).unwrap();
    assert_eq!(h.sends(leaf_task), 2);
    h.returns(
        again,
        leaf_task,
        Value::Shared {
            id: leaf_id,
            len: 1 << 20,
        },
    );
    assert_eq!(
        h.sends(sum_task),
        2,
        "sent again once the rebuilt copy is there"
    );
    // Nothing is asked to drop the copy the worker did not find: sent on a stream of its own,
    // a drop could overtake the fetch (or the rebuild) that brings the object back there,
    // and remove the new copy (chaos runs looped so until the task ran out of tries).
    let dropped = h.host.iter().any(|(node, r)| {
        *node == node_of(at)
            && matches!(r, HostRequest::Free(ids) | HostRequest::Drop(ids) if ids.contains(&leaf_id))
    });
    assert!(!dropped, "{:?}", h.host);
}

#[test]
fn a_rebuild_charged_for_a_node_that_could_not_be_read_is_given_back_when_that_node_is_lost() {
    let mut h = Harness::new(3, 1.0);
    let len = 1 << 20;
    let leaf = h.spec(Vec::new(), 1);
    let task = leaf.task_id;
    let id = h.submit(leaf);
    let w = h.where_sent(task).unwrap();
    h.returns(w, task, Value::Shared { id, len });
    let home = node_of(w);
    // A live node's fetch from the holder fails while the job counts the holder alive (a
    // killed node is counted lost only once the control store misses it): a rebuild, charged.
    let unreadable = |h: &mut Harness, holder: NodeIdx| {
        let reader = (0..3)
            .find(|&n| n != holder && n != home)
            .expect("a third node");
        h.node.fetch_to_node(reader, id, len);
        h.drain();
        h.event(Event::NodeFetched {
            node: reader,
            id,
            result: Err(format!("cannot connect to node {holder}")),
        });
    };
    unreadable(&mut h, home);
    assert!(h.sends(task) >= 2, "rebuilt");
    // The holder turns out lost: that rebuild is not charged to max_retries = 1, so the next
    // copy that cannot be read (made after the loss) is rebuilt too.
    h.event(Event::NodeLost {
        node: home,
        reason: "test".into(),
        lease_end: h.now,
    });
    let again = h.where_sent(task).unwrap();
    assert_ne!(node_of(again), home);
    h.returns(again, task, Value::Shared { id, len });
    let sends = h.sends(task);
    unreadable(&mut h, node_of(again));
    assert_eq!(h.sends(task), sends + 1, "rebuilt again after the refund");
    assert!(matches!(h.slot(id), Some(Slot::Pending)));
    // With no loss to explain it, that charge stands: the next unreadable copy fails it.
    let third = h.where_sent(task).unwrap();
    h.returns(third, task, Value::Shared { id, len });
    unreadable(&mut h, node_of(third));
    assert_eq!(h.sends(task), sends + 1);
    match h.slot(id) {
        Some(Slot::Failed(TaskError::ObjectUnavailable { reason, .. })) => {
            assert!(reason.contains("rebuilt 1 time(s)"), "{reason}")
        }
        other => panic!("expected ObjectUnavailable, got {other:?}"),
    }
}

#[test]
fn a_copy_the_job_stops_counting_is_dropped_not_reused_and_a_dead_fetcher_blames_no_source() {
    let mut h = Harness::new(3, 1.0);
    let (_, leaf_id, w) = h.shared_leaf(1 << 20);
    let home = node_of(w);
    let (a, b) = ((home + 1) % 3, (home + 2) % 3);
    let asked = |h: &Harness, node: NodeIdx| -> Vec<String> {
        (h.host.iter())
            .filter(|(n, r)| {
                *n == node
                    && matches!(r, HostRequest::Free(ids) | HostRequest::Drop(ids) if ids.contains(&leaf_id))
            })
            .map(|(_, r)| format!("{r:?}"))
            .collect()
    };
    // Node a is lost while it fetches: its fetch's failure blames no source (the copy there
    // stays counted and kept).
    h.node.fetch_to_node(a, leaf_id, 1 << 20);
    h.drain();
    h.host.clear();
    h.event(Event::NodeLost {
        node: a,
        reason: "test".into(),
        lease_end: h.now,
    });
    h.event(Event::NodeFetched {
        node: a,
        id: leaf_id,
        result: Err("connection lost".into()),
    });
    assert!(asked(&h, home).is_empty(), "{:?}", h.host);
    // Node b's fetch fails while b lives: the source's copy is no longer counted, and goes
    // without its segment being reused (a worker there may be reading it).
    h.node.fetch_to_node(b, leaf_id, 1 << 20);
    h.drain();
    h.host.clear();
    h.event(Event::NodeFetched {
        node: b,
        id: leaf_id,
        result: Err("stale connection".into()),
    });
    let dropped = asked(&h, home);
    assert!(
        !dropped.is_empty() && dropped.iter().all(|r| r.starts_with("Drop")),
        "{:?}",
        h.host
    );
}

#[test]
fn tasks_queued_on_a_lost_node_move_to_the_others() {
    let mut h = Harness::new(2, 1.0);
    // More tasks than CPUs: some wait in queues or in workers' pipelines.
    let tasks = h.submit_many(6, 2);
    let lost: NodeIdx = 1;
    h.event(Event::NodeLost {
        node: lost,
        reason: "test".into(),
        lease_end: h.now,
    });
    // Whatever was on node 1 is sent to node 0's worker now or later; finish them in turn.
    let mut done = 0;
    for _ in 0..20 {
        for &task in &tasks {
            let id = ObjectId::new(task, 0);
            if !matches!(h.slot(id), Some(Slot::Pending)) {
                continue;
            }
            if let Some(worker) = h.where_sent(task)
                && node_of(worker) != lost
            {
                h.returns(worker, task, Value::Inline(vec![1]));
                done += 1;
            }
        }
    }
    assert_eq!(done, tasks.len(), "every task ran on the surviving node");
}

impl Harness {
    /// Creates an actor restarted up to `max_restarts` times and runs its constructor: the
    /// actor and its worker.
    fn actor(&mut self, max_restarts: u32) -> (ActorId, WorkerId) {
        let (actor, creation) = self.create_actor(cpus(1.0), max_restarts);
        let worker = self.where_sent(creation).expect("the constructor runs");
        self.constructed(worker, creation);
        (actor, worker)
    }

    /// Submits the creation of an actor holding `resources`, restarted up to `max_restarts`
    /// times: the actor and its constructor's task.
    fn create_actor(&mut self, resources: Resources, max_restarts: u32) -> (ActorId, TaskId) {
        let mut spec = self.spec(Vec::new(), 0);
        spec.resources = resources;
        let actor = ActorId(spec.task_id);
        spec.kind = TaskKind::ActorCreation {
            actor,
            max_concurrency: 1,
        };
        spec.function = "tests::Counter".into();
        let creation = spec.task_id;
        let setup = prism_transport::ActorConfig {
            class: "tests::Counter".into(),
            name: None,
            namespace: None,
            get_if_exists: false,
            max_restarts,
            max_task_retries: 1,
            detached: false,
        };
        self.node.create_actor(spec, None, setup).unwrap();
        self.node.settle();
        self.drain();
        (actor, creation)
    }

    /// The constructor `creation` ran on `worker`.
    fn constructed(&mut self, worker: WorkerId, creation: TaskId) {
        let done = Outcome::Returned {
            values: Vec::new(),
            nested: Vec::new(),
            actors: Vec::new(),
        };
        self.report(worker, &self::done(creation, done));
    }

    /// Workers that were asked for and are not running yet start and say hello.
    fn connect_new(&mut self) {
        for worker in self.started.clone() {
            if !self.connected.contains(&worker) {
                self.connect(worker);
            }
        }
    }

    /// Calls a method of `actor`: the call's task and its result.
    fn call(&mut self, actor: ActorId) -> (TaskId, ObjectId) {
        let mut call = self.spec(Vec::new(), 0);
        call.kind = TaskKind::ActorCall(actor);
        let task = call.task_id;
        (task, self.submit(call))
    }

    /// Creation attempts sent to workers so far, oldest first.
    fn creations(&self) -> Vec<(WorkerId, TaskId)> {
        self.execs()
            .filter(|(_, e)| matches!(e.kind, TaskKind::ActorCreation { .. }))
            .map(|(w, e)| (w, e.task))
            .collect()
    }
}

#[test]
fn an_actor_is_restarted_and_its_call_in_flight_retried() {
    let mut h = Harness::new(1, 2.0);
    let (actor, first) = h.actor(1);
    let (call_task, call_id) = h.call(actor);
    assert_eq!(h.where_sent(call_task), Some(first));
    // The actor's process dies during the call: a new incarnation starts, the call waits.
    h.dies(first);
    h.connect_new();
    let restarts = h.creations();
    assert_eq!(restarts.len(), 2, "exactly one new incarnation");
    let (second, restart_task) = restarts[1];
    assert_ne!(second, first);
    assert_eq!(h.sends(call_task), 1, "the call waits for the constructor");
    h.constructed(second, restart_task);
    assert_eq!(
        h.where_sent(call_task),
        Some(second),
        "retried on the new one"
    );
    h.returns(second, call_task, Value::Inline(vec![5]));
    assert!(matches!(h.slot(call_id), Some(Slot::Ready(_))));
}

/// What the node told `worker` of `actor`'s place, in order.
fn places(h: &Harness, worker: WorkerId, actor: ActorId) -> Vec<ActorPlace> {
    (h.sent.iter())
        .filter_map(|(w, m)| match m {
            ToWorker::ActorAt {
                actor: a, place, ..
            } if *w == worker && *a == actor => Some(place.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_worker_calling_an_actor_hears_where_it_is_as_it_starts_restarts_and_dies() {
    let mut h = Harness::new(1, 3.0);
    // The callers run tasks (the actor's restart cannot land on them).
    let busy = busy_workers(&mut h, 2);
    let (caller, late) = (busy[0], busy[1]);
    let (actor, creation) = h.create_actor(cpus(1.0), 1);
    let first = h.where_sent(creation).expect("the constructor runs");
    h.report(caller, &ToNode::WhereActor { actor });
    assert!(places(&h, caller, actor).is_empty(), "not before it is up");
    h.constructed(first, creation);
    let alive = |worker| ActorPlace::Alive {
        worker,
        at: None,
        direct: None,
    };
    assert_eq!(places(&h, caller, actor), vec![alive(first)]);
    // Its process dies: the caller hears of the restart, then of the new process.
    h.dies(first);
    h.connect_new();
    let (second, restart) = *h.creations().last().unwrap();
    h.constructed(second, restart);
    let told = places(&h, caller, actor);
    assert!(
        matches!(&told[1], ActorPlace::Restarting { .. }) && told[2] == alive(second),
        "{told:?}"
    );
    // A caller that asks now hears at once; killed, every caller hears why.
    h.report(late, &ToNode::WhereActor { actor });
    assert_eq!(places(&h, late, actor), vec![alive(second)]);
    h.node.kill_actor(actor);
    h.dies(second);
    for worker in [caller, late] {
        match places(&h, worker, actor).last() {
            Some(ActorPlace::Dead(reason)) => assert!(reason.contains("killed"), "{reason}"),
            other => panic!("told the actor is gone: {other:?}"),
        }
    }
    // An actor the node does not know is gone for whoever asks.
    let unknown = ActorId(TaskId::new(0, 999_999));
    h.report(caller, &ToNode::WhereActor { actor: unknown });
    assert!(matches!(
        places(&h, caller, unknown).as_slice(),
        [ActorPlace::Dead(_)]
    ));
}

#[test]
fn an_actor_killed_on_the_head_s_order_is_not_restarted() {
    let mut h = Harness::new(1, 3.0);
    let (actor, creation) = h.create_actor(cpus(1.0), 3);
    let first = h.where_sent(creation).expect("the constructor runs");
    h.constructed(first, creation);
    assert_eq!(h.node.kill_ordered(actor), Ok(()));
    h.dies(first);
    h.connect_new();
    assert_eq!(h.creations().len(), 1, "killed, it is not made again");
    // Killed again (a second job's kill that crossed the first): nothing more happens.
    assert_eq!(h.node.kill_ordered(actor), Ok(()));
    h.connect_new();
    assert_eq!(h.creations().len(), 1);
}

#[test]
fn an_actor_on_a_lost_node_starts_again_only_once_that_nodes_lease_ended() {
    let mut h = Harness::new(2, 1.0);
    let (actor, first) = h.actor(1);
    let (call_task, call_id) = h.call(actor);
    // The actor's node is lost; cut off, it may run the actor for 5 s more.
    let second = std::time::Duration::from_secs(1);
    h.event(Event::NodeLost {
        node: node_of(first),
        reason: "test".into(),
        lease_end: h.now + 5 * second,
    });
    h.connect_new();
    for _ in 0..4 {
        h.now += second;
        h.event(Event::Tick);
        h.connect_new();
        assert_eq!(
            h.creations().len(),
            1,
            "no new incarnation while the old may run"
        );
    }
    h.now += second;
    h.event(Event::Tick);
    h.connect_new();
    let restarts = h.creations();
    assert_eq!(
        restarts.len(),
        2,
        "the new incarnation starts once the lease ended"
    );
    let (again, restart_task) = restarts[1];
    assert_ne!(node_of(again), node_of(first));
    h.constructed(again, restart_task);
    assert_eq!(h.where_sent(call_task), Some(again));
    h.returns(again, call_task, Value::Inline(vec![5]));
    assert!(matches!(h.slot(call_id), Some(Slot::Ready(_))));
}

#[test]
fn a_node_that_joins_takes_queued_work_and_what_fit_nowhere() {
    let mut h = Harness::new(2, 1.0);
    // More tasks than the two nodes' pipelines hold, and one that fits neither.
    let queued = h.submit_many(40, 0);
    let mut big = h.spec(Vec::new(), 0);
    big.resources = cpus(2.0);
    let big_task = big.task_id;
    h.submit(big);
    assert_eq!(h.where_sent(big_task), None, "nothing fits it yet");
    let idx = h.node.join_node("n2".into(), cpus(3.0), 16, 8).unwrap();
    h.drain();
    h.connect_new();
    h.now += std::time::Duration::from_secs(1);
    h.event(Event::Tick);
    h.connect_new();
    let on_new = queued
        .iter()
        .filter(|t| h.where_sent(**t).is_some_and(|w| node_of(w) == idx))
        .count();
    assert!(on_new > 0, "queued tasks moved to the new node");
    // The big one runs there too (it takes two of the three CPUs).
    for _ in 0..40 {
        if h.where_sent(big_task).is_some() {
            break;
        }
        let sent: Vec<(WorkerId, TaskId)> = queued
            .iter()
            .filter_map(|t| h.where_sent(*t).map(|w| (w, *t)))
            .filter(|(w, _)| node_of(*w) == idx)
            .collect();
        for (worker, task) in sent {
            if matches!(h.slot(ObjectId::new(task, 0)), Some(Slot::Pending)) {
                h.returns(worker, task, Value::Inline(vec![1]));
            }
        }
        h.connect_new();
        h.now += std::time::Duration::from_secs(1);
        h.event(Event::Tick);
    }
    let at = h
        .where_sent(big_task)
        .expect("the task no node could run runs on the new one");
    assert_eq!(node_of(at), idx);
}

#[test]
fn a_job_takes_in_more_node_joins_than_a_worker_number_once_left_room_for() {
    // A node killed and restarted every few seconds joins the job again each time (under a
    // new index: the old one's workers and copies stay accounted as lost). Worker numbers
    // carry the node's index, and once gave it 10 bits: the 1,024th join was refused.
    let mut h = Harness::new(2, 1.0);
    let mut last = 1;
    for round in 0..1_500 {
        h.event(Event::NodeLost {
            node: last,
            reason: format!("killed in round {round}"),
            lease_end: h.now,
        });
        last = h
            .node
            .join_node(format!("n{round}"), cpus(1.0), 16, 8)
            .expect("a node that joins is taken in");
    }
    assert!(last > 1_500, "{last}");
    h.drain();
    h.connect_new();
    let tasks = h.submit_many(4, 0);
    h.connect_new();
    let on_last = tasks
        .iter()
        .filter(|t| h.where_sent(**t).is_some_and(|w| node_of(w) == last))
        .count();
    assert!(on_last > 0, "the newest node's workers run tasks");
}

#[test]
fn work_placed_while_every_node_counted_dead_runs_on_the_next_node_that_joins() {
    let mut h = Harness::new(2, 1.0);
    let queued = h.submit_many(6, 3);
    for node in 0..2 {
        h.event(Event::NodeLost {
            node,
            reason: "a head that stalled counted every node dead".into(),
            lease_end: h.now,
        });
    }
    // Placed with no node alive (before, they stayed with a dead node for good).
    let late = h.submit_many(2, 3);
    let idx = h.node.join_node("n0".into(), cpus(2.0), 16, 8).unwrap();
    h.drain();
    h.connect_new();
    for task in queued.iter().chain(&late) {
        let mut worker = h.where_sent(*task);
        for _ in 0..20 {
            if worker.is_some_and(|w| node_of(w) == idx) {
                break;
            }
            h.now += std::time::Duration::from_secs(1);
            h.event(Event::Tick);
            h.connect_new();
            worker = h.where_sent(*task);
        }
        let worker = worker.filter(|w| node_of(*w) == idx);
        let worker = worker.unwrap_or_else(|| panic!("{task} never reached the new node"));
        h.returns(worker, *task, Value::Inline(vec![1]));
    }
}

#[test]
fn tasks_waiting_in_busy_pipelines_are_asked_back_for_a_node_with_room() {
    let mut h = Harness::new(2, 1.0);
    // Each node's one worker gets its tasks pipelined: nothing waits in a node's queue.
    let tasks = h.submit_many(10, 0);
    assert!(tasks.iter().all(|t| h.where_sent(*t).is_some()));
    let idx = h.node.join_node("n2".into(), cpus(4.0), 16, 8).unwrap();
    h.drain();
    h.connect_new();
    h.now += std::time::Duration::from_secs(1);
    h.event(Event::Tick);
    let recalls: Vec<(WorkerId, Vec<TaskId>)> = h
        .sent
        .iter()
        .filter_map(|(w, m)| match m {
            ToWorker::Recall { tasks } => Some((*w, tasks.clone())),
            _ => None,
        })
        .collect();
    let asked: usize = recalls.iter().map(|(_, t)| t.len()).sum();
    assert_eq!(asked, 4, "as many as the new node can start: {recalls:?}");
    // The workers hand back all but one (it had started meanwhile).
    for (worker, asked) in &recalls {
        h.report(*worker, &ToNode::Bounced(asked[1..].to_vec()));
    }
    h.connect_new();
    let moved: Vec<TaskId> = recalls.iter().flat_map(|(_, t)| t[1..].to_vec()).collect();
    for task in &moved {
        let at = h.where_sent(*task).expect("sent again");
        assert_eq!(node_of(at), idx, "the task moved to the new node");
    }
    // The one that started ends where it ran; asking again leaves it alone.
    let (worker, asked) = &recalls[0];
    h.returns(*worker, asked[0], Value::Inline(vec![1]));
    assert!(matches!(
        h.slot(ObjectId::new(asked[0], 0)),
        Some(Slot::Ready(_))
    ));
}

#[test]
fn a_placement_group_reserves_its_bundles_and_its_removal_fails_its_tasks() {
    let mut h = Harness::new(1, 2.0);
    let group = h
        .node
        .create_group(vec![cpus(1.0), cpus(1.0)], PlacementStrategy::Pack);
    h.node.settle();
    h.drain();
    let waker = std::task::Waker::noop();
    assert!(h.node.poll_group(group, waker).is_ready());
    assert_eq!(
        h.node.nodes.available().cpu.as_f64(),
        0.0,
        "both CPUs reserved"
    );
    // A task outside the group waits; one in the group runs.
    let outside = h.spec(Vec::new(), 0);
    let outside_id = h.submit(outside);
    let mut inside = h.spec(Vec::new(), 0);
    inside.resources = group_demand(&cpus(1.0), group, Some(0)).unwrap();
    let inside_task = inside.task_id;
    h.submit(inside);
    assert!(h.where_sent(inside_task).is_some());
    assert!(h.where_sent(outside_id.task).is_none());
    // Removing the group stops its task's worker and frees the CPUs for the other task.
    let killed_before = h.killed.len();
    h.node.remove_group(group);
    h.node.settle();
    h.drain();
    assert_eq!(h.killed.len(), killed_before + 1, "its worker is stopped");
    assert!(h.node.poll_group(group, waker).is_ready());
    assert!(
        h.where_sent(outside_id.task).is_some(),
        "the other task runs once the bundles are back"
    );
}

#[test]
fn a_task_whose_lost_argument_cannot_be_rebuilt_fails_naming_it() {
    let mut h = Harness::new(2, 1.0);
    // No retries: no lineage is kept.
    let leaf = h.spec(Vec::new(), 0);
    let (leaf_task, leaf_id) = (leaf.task_id, ObjectId::new(leaf.task_id, 0));
    h.submit(leaf);
    let w = h.where_sent(leaf_task).unwrap();
    h.returns(
        w,
        leaf_task,
        Value::Shared {
            id: leaf_id,
            len: 1 << 20,
        },
    );
    // Both CPUs busy: the consumer waits in the queue while the leaf's node is lost.
    let busy = h.spec(Vec::new(), 3);
    let busy_task = busy.task_id;
    h.submit(busy);
    let sum = h.spec(vec![Arg::Ref(leaf_id)], 0);
    let sum_id = h.submit(sum);
    let lost = node_of(w);
    h.event(Event::NodeLost {
        node: lost,
        reason: "test".into(),
        lease_end: h.now,
    });
    // Every node left is told to close its connections to the lost one (pulls from it fail
    // now, not after QUIC's idle timeout), and only those nodes.
    let told: Vec<NodeIdx> = h
        .host
        .iter()
        .filter_map(|(node, r)| match r {
            HostRequest::ForgetPeer { lost: gone } if *gone == lost => Some(*node),
            _ => None,
        })
        .collect();
    let live: Vec<NodeIdx> = (0..h.node.nodes.len()).filter(|&n| n != lost).collect();
    assert_eq!(told, live, "the live nodes forget the lost one");
    // The consumer's node was fetching the argument from the lost one: that fails. No copy
    // is left and none can be made: the consumer fails (before, it waited forever), and the
    // busy task, retried, runs.
    let fetches: Vec<(NodeIdx, ObjectId)> = h
        .host
        .drain(..)
        .filter_map(|(node, r)| match r {
            HostRequest::Fetch { id, .. } => Some((node, id)),
            _ => None,
        })
        .collect();
    assert!(!fetches.is_empty(), "a fetch was asked for");
    for (node, id) in fetches {
        let result = Err("the peer is gone".to_string());
        h.event(Event::NodeFetched { node, id, result });
    }
    match h.slot(sum_id) {
        Some(Slot::Failed(TaskError::ObjectUnavailable { object, .. })) => {
            assert_eq!(object, leaf_id)
        }
        other => panic!("expected the lost argument's error, got {other:?}"),
    }
    let at = h.where_sent(busy_task).unwrap();
    assert_ne!(node_of(at), lost);
    h.returns(at, busy_task, Value::Inline(vec![1]));
    assert_eq!(h.node.owner.task_count(), 0, "nothing is left waiting");
}

/// The tasks sent to workers of node `idx`, in the order sent.
fn sent_to(h: &Harness, tasks: &[TaskId], idx: NodeIdx) -> Vec<TaskId> {
    tasks
        .iter()
        .copied()
        .filter(|t| h.where_sent(*t).is_some_and(|w| node_of(w) == idx))
        .collect()
}

fn ends_job_on(h: &Harness, idx: NodeIdx) -> bool {
    h.host
        .iter()
        .any(|(n, r)| *n == idx && matches!(r, HostRequest::EndJob))
}

#[test]
fn a_task_only_a_draining_node_could_run_waits_for_a_node_that_joins() {
    let mut h = Harness::new(2, 1.0);
    let big = h.node.join_node("big".into(), cpus(2.0), 16, 8).unwrap();
    h.drain();
    h.connect_new();
    h.event(Event::NodeDraining {
        node: big,
        reason: "test".into(),
    });
    for node in 0..2 {
        h.event(Event::NodeLost {
            node,
            reason: "test".into(),
            lease_end: h.now,
        });
    }
    // Only the draining node could run it: it waits (it is not started there).
    let mut spec = h.spec(Vec::new(), 0);
    spec.resources = cpus(2.0);
    let task = spec.task_id;
    h.submit(spec);
    h.now += std::time::Duration::from_secs(1);
    h.event(Event::Tick);
    h.connect_new();
    assert_eq!(h.where_sent(task), None, "started on a draining node");
    // A node that fits it joins: it runs there.
    let new = h.node.join_node("new".into(), cpus(2.0), 16, 8).unwrap();
    h.drain();
    h.connect_new();
    h.now += std::time::Duration::from_secs(1);
    h.event(Event::Tick);
    h.connect_new();
    let at = h
        .where_sent(task)
        .expect("the task runs on the node that joined");
    assert_eq!(node_of(at), new);
}

#[test]
fn a_draining_node_gets_no_new_work_hands_back_the_rest_and_is_let_go_once_idle() {
    let mut h = Harness::new(2, 1.0);
    // Each node's one worker gets its tasks pipelined; none may be retried.
    let tasks = h.submit_many(6, 0);
    let leaving: NodeIdx = 1;
    let there = sent_to(&h, &tasks, leaving);
    assert!(
        there.len() >= 2,
        "a running and a pipelined task: {there:?}"
    );
    let worker = h.where_sent(there[0]).unwrap();
    h.event(Event::NodeDraining {
        node: leaving,
        reason: "test".into(),
    });
    assert_eq!(
        h.node.nodes.total().cpu.as_f64(),
        1.0,
        "it no longer counts"
    );
    // What waits in its worker's pipeline is asked back and goes to the other node.
    let recalled: Vec<TaskId> = h
        .sent
        .iter()
        .filter(|(w, _)| *w == worker)
        .filter_map(|(_, m)| match m {
            ToWorker::Recall { tasks } => Some(tasks.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(recalled, there[1..].to_vec());
    h.report(worker, &ToNode::Bounced(recalled.clone()));
    for task in &recalled {
        let at = h.where_sent(*task).expect("sent again");
        assert_eq!(node_of(at), 0, "moved to the node that stays");
    }
    // New work goes to the other node too.
    let new = h.submit_many(1, 0)[0];
    assert_eq!(node_of(h.where_sent(new).unwrap()), 0);
    assert!(!ends_job_on(&h, leaving), "not let go while its task runs");
    // Its running task ends: the job lets the node go.
    h.returns(worker, there[0], Value::Inline(vec![1]));
    assert!(ends_job_on(&h, leaving));
    assert!(matches!(
        h.slot(ObjectId::new(there[0], 0)),
        Some(Slot::Ready(_))
    ));
}

#[test]
fn a_task_that_dies_with_a_draining_node_runs_again_without_using_a_retry() {
    let mut h = Harness::new(2, 1.0);
    let tasks = h.submit_many(2, 0);
    let leaving: NodeIdx = 1;
    let task = sent_to(&h, &tasks, leaving)[0];
    h.event(Event::NodeDraining {
        node: leaving,
        reason: "test".into(),
    });
    // The node's grace ends before the task does: it leaves with the task running.
    h.event(Event::NodeLost {
        node: leaving,
        reason: "it left".into(),
        lease_end: h.now,
    });
    let at = h.where_sent(task).expect("sent again");
    assert_eq!(node_of(at), 0);
    assert!(matches!(
        h.slot(ObjectId::new(task, 0)),
        Some(Slot::Pending)
    ));
    // Both end: the moved one on the node that stays.
    let other = tasks.into_iter().find(|&t| t != task).unwrap();
    let worker = h.where_sent(other).unwrap();
    h.returns(worker, other, Value::Inline(vec![1]));
    h.returns(at, task, Value::Inline(vec![2]));
    assert!(matches!(
        h.slot(ObjectId::new(task, 0)),
        Some(Slot::Ready(_))
    ));
}

#[test]
fn a_full_node_spills_what_no_task_needs_and_restores_it_before_a_task_reads_it() {
    let len: u64 = 2 << 20;
    let mut h = Harness::with_stores(2, 1.0, 3 << 20);
    // Four 2 MiB leaves, two on each node: each node is 1 MiB over its 3 MiB store.
    let leaves = h.submit_many(4, 0);
    for &leaf in &leaves {
        let worker = h.where_sent(leaf).unwrap();
        let id = ObjectId::new(leaf, 0);
        h.returns(worker, leaf, Value::Shared { id, len });
    }
    let spills: Vec<(NodeIdx, Vec<(ObjectId, u64)>)> = h
        .host
        .iter()
        .filter_map(|(n, r)| match r {
            HostRequest::Spill(objects) => Some((*n, objects.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(spills.len(), 2, "one spill on each node: {spills:?}");
    for (node, objects) in &spills {
        assert_eq!(objects.len(), 1, "one object is enough");
        let (id, spilled_len) = objects[0];
        assert_eq!(spilled_len, len);
        let first_there = sent_to(&h, &leaves, *node)[0];
        assert_eq!(id.task, first_there, "the least recently used goes");
    }
    // A task reading a spilled object has it restored on its node first.
    let (node, spilled) = (spills[0].0, spills[0].1[0].0);
    let reader = h.spec(vec![Arg::Ref(spilled)], 0);
    let reader_task = reader.task_id;
    h.submit(reader);
    let restore = h.host.iter().find(|(n, r)| {
        matches!(r, HostRequest::Restore { id, .. } if *id == spilled) && *n == node
    });
    assert!(restore.is_some(), "restored where it is: {:?}", h.host);
    assert!(h.where_sent(reader_task).is_none(), "held until it is back");
    h.event(Event::NodeFetched {
        node,
        id: spilled,
        result: Ok(()),
    });
    let at = h.where_sent(reader_task).expect("sent once restored");
    assert_eq!(node_of(at), node);
    // Back in memory the node is over again: the other leaf, needed by no task, goes.
    let spilled_again = h
        .host
        .iter()
        .filter(|(n, r)| *n == node && matches!(r, HostRequest::Spill(_)))
        .count();
    assert_eq!(spilled_again, 2);
}

#[test]
fn workers_a_draining_node_refuses_are_no_broken_start() {
    let mut h = Harness::new(2, 1.0);
    // A node joins and starts 4 workers; it drains before any says hello, so its host refuses
    // them (the job left it): each exits before its handshake.
    let big = h.node.join_node("big".into(), cpus(4.0), 16, 8).unwrap();
    h.drain();
    let starting: Vec<WorkerId> = h
        .started
        .iter()
        .copied()
        .filter(|&w| node_of(w) == big)
        .collect();
    assert!(
        starting.len() >= 3,
        "enough to reach the limit: {starting:?}"
    );
    h.event(Event::NodeDraining {
        node: big,
        reason: "test".into(),
    });
    // Work waits for the nodes that stay meanwhile (more than their workers take at once).
    let tasks = h.submit_many(40, 0);
    for worker in starting {
        let reason = "node big hosts no job for this connection".to_string();
        h.event(Event::WorkerExited { worker, reason });
    }
    // None of it fails as if workers could not start: it all runs on the nodes that stay.
    let mut left = tasks.clone();
    for _ in 0..=tasks.len() {
        left.retain(|&task| {
            let slot = h.slot(ObjectId::new(task, 0));
            assert!(
                !matches!(slot, Some(Slot::Failed(_))),
                "task {task}: {slot:?}"
            );
            matches!(slot, Some(Slot::Pending))
        });
        let Some(&task) = left.iter().find(|&&t| h.where_sent(t).is_some()) else {
            break;
        };
        let at = h.where_sent(task).unwrap();
        assert_ne!(node_of(at), big);
        h.returns(at, task, Value::Inline(vec![1]));
    }
    assert!(left.is_empty(), "never ran: {left:?}");
}

/// Whether the node still runs `actor` (stopped and forgotten, or dead: no).
fn runs(h: &Harness, actor: ActorId) -> bool {
    let directory = h.node.actor_directory();
    let status = directory.iter().find(|a| a.id == actor);
    status.is_some_and(|a| a.state == prism_transport::ActorState::Alive)
}

#[test]
fn handles_lent_to_a_task_or_held_by_a_worker_keep_an_unnamed_actor() {
    let mut h = Harness::new(1, 4.0);
    let (actor, _) = h.actor(0);
    // A task gets a handle inside an argument; the driver drops its own at once.
    let mut spec = h.spec(Vec::new(), 0);
    spec.inlined_actors = vec![actor];
    let task = spec.task_id;
    h.submit(spec);
    h.node.actor_release(actor);
    h.node.settle();
    h.drain();
    assert!(runs(&h, actor), "the task's argument holds it");
    // The task's worker keeps the handle past the task's end.
    let worker = h.where_sent(task).expect("the task runs");
    h.report(worker, &ToNode::HoldActors(vec![actor]));
    h.returns(worker, task, Value::Inline(vec![1]));
    assert!(runs(&h, actor), "the worker still holds it");
    h.report(worker, &ToNode::ReleaseActors(vec![actor]));
    assert!(!runs(&h, actor), "its last holder let it go");

    // A worker holding the only handle dies: the actor goes with the hold.
    let (other, _) = h.actor(0);
    let mut spec = h.spec(Vec::new(), 0);
    spec.inlined_actors = vec![other];
    let task = spec.task_id;
    h.submit(spec);
    h.node.actor_release(other);
    h.node.settle();
    h.drain();
    let worker = h.where_sent(task).expect("the task runs");
    h.report(worker, &ToNode::HoldActors(vec![other]));
    h.returns(worker, task, Value::Inline(vec![1]));
    assert!(runs(&h, other));
    h.dies(worker);
    assert!(!runs(&h, other), "a dead holder holds nothing");
}

#[test]
fn holds_taken_for_an_owner_are_its_own_to_end_whatever_the_order_of_the_links() {
    let mut h = Harness::new(1, 4.0);
    let (maker, runner, owner) = (h.started[0], h.started[1], h.started[2]);
    // An object a worker put, and an actor: what a task's value refers to.
    let put = |h: &mut Harness, seq: u64| {
        let id = ObjectId::new(TaskId::new(maker, seq), 0);
        let msg = ToNode::Put {
            id,
            value: Value::Inline(vec![1]),
            nested: Vec::new(),
            actors: Vec::new(),
        };
        h.report(maker, &msg);
        id
    };
    let (actor, _) = h.actor(0);
    let object = put(&mut h, 1);
    let hold_for = ToNode::HoldFor {
        holder: owner,
        ids: vec![object],
        actors: vec![actor],
    };
    let release_held = ToNode::ReleaseHeld {
        ids: vec![object],
        actors: vec![actor],
    };

    // The owner held the object itself and its release was on its way when the runner
    // asked the node to hold it for the owner: that release ends the owner's own hold, not
    // the one taken for it (folded into one, the object went with the maker's release).
    h.report(owner, &ToNode::Hold(vec![object]));
    h.report(runner, &hold_for);
    h.report(owner, &ToNode::Release(vec![object]));
    h.report(maker, &ToNode::Release(vec![object]));
    h.node.actor_release(actor);
    h.node.settle();
    h.drain();
    assert!(h.slot(object).is_some(), "held for the owner");
    assert!(runs(&h, actor), "held for the owner");
    h.report(owner, &release_held);
    assert!(
        h.slot(object).is_none(),
        "the owner let go of the last hold"
    );
    assert!(!runs(&h, actor), "the owner let go of the last handle");

    // The owner's release came before the hold (the two on different links, through
    // different nodes' daemons): the hold ends as it comes, and nothing is left held.
    let (actor, _) = h.actor(0);
    let object = put(&mut h, 2);
    h.report(
        owner,
        &ToNode::ReleaseHeld {
            ids: vec![object],
            actors: vec![actor],
        },
    );
    h.report(
        runner,
        &ToNode::HoldFor {
            holder: owner,
            ids: vec![object],
            actors: vec![actor],
        },
    );
    h.report(maker, &ToNode::Release(vec![object]));
    h.node.actor_release(actor);
    h.node.settle();
    h.drain();
    assert!(h.slot(object).is_none(), "no hold outlived its release");
    assert!(!runs(&h, actor), "no handle outlived its release");

    // Two values referring to one object hold it twice; an owner that dies lets go of both.
    let object = put(&mut h, 3);
    let twice = ToNode::HoldFor {
        holder: owner,
        ids: vec![object, object],
        actors: Vec::new(),
    };
    h.report(runner, &twice);
    h.report(maker, &ToNode::Release(vec![object]));
    let once = ToNode::ReleaseHeld {
        ids: vec![object],
        actors: Vec::new(),
    };
    h.report(owner, &once);
    assert!(h.slot(object).is_some(), "the other value still holds it");
    h.dies(owner);
    assert!(h.slot(object).is_none(), "a dead owner holds nothing");
}

#[test]
fn an_object_read_on_many_nodes_spreads_from_each_copy_not_only_its_origin() {
    use super::copies::PULLS_PER_HOLDER;
    let mut h = Harness::new(6, 1.0);
    let spec = h.spec(Vec::new(), 0);
    let task = spec.task_id;
    let id = h.submit(spec);
    let w = h.where_sent(task).unwrap();
    let origin = node_of(w);
    h.returns(w, task, Value::Shared { id, len: 1 << 20 });
    // Six readers, one per node: five nodes need a copy.
    for _ in 0..6 {
        let spec = h.spec(vec![Arg::Ref(id)], 0);
        h.submit(spec);
    }
    let fetches = |h: &Harness| -> Vec<(NodeIdx, Option<NodeIdx>)> {
        (h.host.iter())
            .filter_map(|(node, r)| match r {
                HostRequest::Fetch { id: f, from, .. } if *f == id => Some((*node, *from)),
                _ => None,
            })
            .collect()
    };
    let first = fetches(&h);
    assert_eq!(first.len(), PULLS_PER_HOLDER, "{first:?}");
    assert!(first.iter().all(|&(_, from)| from == Some(origin)));

    // A copy lands: it serves the nodes that waited, beside the origin.
    let landed = first[0].0;
    h.event(Event::NodeFetched {
        node: landed,
        id,
        result: Ok(()),
    });
    let all = fetches(&h);
    assert_eq!(all.len(), 5, "every node that needs it fetches it: {all:?}");
    let from_copy = all.iter().filter(|&&(_, f)| f == Some(landed)).count();
    assert_eq!(from_copy, PULLS_PER_HOLDER, "{all:?}");
    let mut readers: Vec<NodeIdx> = all.iter().map(|&(n, _)| n).collect();
    readers.sort();
    readers.dedup();
    assert_eq!(readers.len(), 5, "one fetch per node: {all:?}");

    // The copy's node is lost while it serves two: their pulls fail, and they wait for a
    // holder with room (the origin serves two), then pull from the next copy that lands.
    h.event(Event::NodeLost {
        node: landed,
        reason: "test".into(),
        lease_end: h.now,
    });
    for (node, from) in all.iter().copied() {
        if from == Some(landed) {
            let result = Err("its peer was lost".to_string());
            h.event(Event::NodeFetched { node, id, result });
        }
    }
    assert_eq!(fetches(&h).len(), all.len(), "the origin has no room yet");
    let reached = |h: &Harness, n: NodeIdx| h.execs().any(|(w, _)| node_of(w) == n);
    for (node, from) in all.iter().copied() {
        if from == Some(landed) {
            assert!(!reached(&h, node), "its task waits for the copy on {node}");
        }
    }
    let (next, _) = all[1];
    h.event(Event::NodeFetched {
        node: next,
        id,
        result: Ok(()),
    });
    let after = fetches(&h);
    let again = &after[all.len()..];
    assert_eq!(again.len(), 2, "{after:?}");
    assert!(again.iter().all(|&(_, f)| f != Some(landed)), "{after:?}");
    assert!(again.iter().any(|&(_, f)| f == Some(next)), "{after:?}");
}

#[test]
fn the_copies_of_an_object_the_driver_releases_go_at_once() {
    // Not at the next event: a node that pulls the next object reuses the freed copy's
    // pages only when the free came first.
    let mut h = Harness::new(2, 1.0);
    let spec = h.spec(Vec::new(), 0);
    let task = spec.task_id;
    let id = h.submit(spec);
    let w = h.where_sent(task).unwrap();
    h.returns(w, task, Value::Shared { id, len: 1 << 20 });
    h.host.clear();
    h.node.release(id);
    h.drain();
    let freed = h.host.iter().any(|(node, request)| {
        *node == node_of(w) && matches!(request, HostRequest::Free(ids) if ids.contains(&id))
    });
    assert!(freed, "{:?}", h.host);
}

#[test]
fn a_cluster_node_runs_the_job_s_tasks_only_on_what_its_daemon_granted() {
    let mut h = Harness::new(2, 2.0);
    h.grant_all = false;
    // A task waits for its node's grant: the node is asked, nothing runs yet.
    let first = h.submit_many(1, 0)[0];
    let (node, shape) = h.asks.pop().expect("the node is asked for a grant");
    assert_eq!((shape.clone(), h.asks.len()), (cpus(1.0), 0));
    assert_eq!(
        h.where_sent(first),
        None,
        "no task runs on resources not granted"
    );
    h.event(Event::Granted { node, shape });
    let worker = h.where_sent(first).expect("dispatched once granted");
    assert_eq!(node_of(worker), node);
    h.returns(worker, first, Value::Inline(vec![1]));
    // The grant outlives its task for a tick (a program that submits one task at a time asks
    // once), and goes back at the second tick that finds it unused.
    let second = h.submit_many(1, 0)[0];
    let worker = h.where_sent(second).expect("runs on the grant kept");
    assert_eq!((node_of(worker), h.asks.len()), (node, 0));
    h.returns(worker, second, Value::Inline(vec![1]));
    h.event(Event::Tick);
    assert_eq!(h.returned, Vec::new(), "kept one tick");
    h.event(Event::Tick);
    assert_eq!(
        h.returned,
        vec![(node, cpus(1.0))],
        "given back, unused two ticks"
    );
    // When other jobs wait, the node asks for what goes unused: given back at once, but not
    // what a task uses (the node asks again while jobs wait).
    h.returned.clear();
    h.grant_all = true;
    let third = h.submit_many(1, 0)[0];
    let worker = h.where_sent(third).expect("granted again");
    let at = node_of(worker);
    h.event(Event::Reclaim {
        node: at,
        keep: cpus(2.0),
    });
    assert_eq!(h.returned, Vec::new(), "a grant in use stays");
    h.returns(worker, third, Value::Inline(vec![1]));
    h.event(Event::Reclaim {
        node: at,
        keep: cpus(2.0),
    });
    assert_eq!(h.returned, vec![(at, cpus(1.0))], "given back once unused");
}

#[test]
fn a_job_asked_for_its_unused_grants_gives_them_back_even_while_its_tasks_wait_for_more() {
    // Holding part of what a task needs while waiting for the rest, two jobs could each hold
    // what the other waits for: a job the node asks gives back all it does not use.
    let mut h = Harness::new(2, 2.0);
    let first = h.submit_many(1, 0)[0];
    let worker = h.where_sent(first).expect("runs");
    let node = node_of(worker);
    h.returns(worker, first, Value::Inline(vec![1]));
    h.grant_all = false;
    // A task of two CPUs: the node is asked for the CPU the kept grant does not cover.
    let mut spec = h.spec(Vec::new(), 0);
    spec.resources = cpus(2.0);
    let two = spec.task_id;
    h.submit(spec);
    let asked: Vec<Resources> = h.asks.iter().map(|(_, r)| r.clone()).collect();
    let on_node = h.asks.iter().any(|(n, r)| *n == node && *r == cpus(1.0));
    assert!(on_node || asked.contains(&cpus(2.0)), "asked {:?}", h.asks);
    h.asks.clear();
    h.event(Event::Reclaim {
        node,
        keep: cpus(2.0),
    });
    assert_eq!(
        h.returned,
        vec![(node, cpus(1.0))],
        "the unused CPU goes back"
    );
    assert_eq!(h.where_sent(two), None);
    assert!(
        h.asks.iter().any(|(n, r)| *n == node && *r == cpus(1.0)),
        "and is asked for again, behind the jobs that waited: {:?}",
        h.asks
    );
}

#[test]
fn a_node_that_refuses_a_grant_is_asked_again_only_after_the_tick() {
    let mut h = Harness::new(2, 1.0);
    h.grant_all = false;
    let tasks = h.submit_many(2, 0);
    // One task per node (the second goes where no ask waits); each node is asked once.
    let mut asked: Vec<NodeIdx> = h.asks.iter().map(|(n, _)| *n).collect();
    asked.sort_unstable();
    assert_eq!(asked, vec![0, 1]);
    let asks = std::mem::take(&mut h.asks);
    let (refusing, shape) = asks[0].clone();
    h.event(Event::GrantRefused {
        node: refusing,
        shape,
        reason: "test".into(),
    });
    assert_eq!(h.asks, Vec::new(), "not asked again before the tick");
    let (other, shape) = asks[1].clone();
    h.event(Event::Granted { node: other, shape });
    // The granted node runs a task; the other task may move there when the first ends.
    let ran: Vec<TaskId> = tasks
        .iter()
        .copied()
        .filter(|t| h.where_sent(*t).is_some())
        .collect();
    assert_eq!(ran.len(), 1);
    assert_eq!(node_of(h.where_sent(ran[0]).unwrap()), other);
    h.event(Event::Tick);
    assert_eq!(
        h.asks,
        vec![(refusing, cpus(1.0))],
        "asked again after the tick"
    );
}

#[test]
fn a_job_beyond_its_fair_share_lets_its_leases_run_dry_while_other_jobs_wait() {
    let mut h = Harness::new(2, 2.0);
    let tasks = h.submit_many(16, 0);
    let node: NodeIdx = 0;
    let on_node = |h: &Harness| -> Vec<(WorkerId, TaskId)> {
        let sent = tasks.iter().filter_map(|t| Some((h.where_sent(*t)?, *t)));
        sent.filter(|(w, _)| node_of(*w) == node).collect()
    };
    let before = on_node(&h);
    let worker = before.first().expect("node 0 runs tasks").0;
    let busy: Vec<WorkerId> = before.iter().map(|(w, _)| *w).collect();
    let all: Vec<_> = tasks.iter().map(|t| h.where_sent(*t)).collect();
    assert!(
        busy.iter().any(|w| *w != worker),
        "both of its CPUs are leased: {all:?}"
    );
    // Another job waits: this one keeps one CPU of the two, as its tasks end.
    h.grant_all = false;
    h.event(Event::Reclaim {
        node,
        keep: cpus(1.0),
    });
    assert_eq!(h.returned, Vec::new(), "both CPUs are in use");
    // A task queued there meanwhile asks for nothing: what it got would go back at once.
    let late = h.submit_many(1, 0)[0];
    let at = h.node.nodes.locate(late);
    assert_eq!(at, Some((node, Placement::Queued)));
    assert_eq!(h.asks, Vec::new(), "no ask while shrinking");
    let mine: Vec<TaskId> = before
        .iter()
        .filter(|(w, _)| *w == worker)
        .map(|(_, t)| *t)
        .collect();
    for task in mine {
        h.returns(worker, task, Value::Inline(vec![1]));
    }
    assert_eq!(
        on_node(&h).len(),
        before.len(),
        "nothing more went down node 0's pipelines"
    );
    assert_eq!(
        h.returned,
        vec![(node, cpus(1.0))],
        "the dry lease's CPU went back"
    );
    // Down to its share, it asks again (behind the jobs that waited).
    assert_eq!(h.asks, vec![(node, cpus(1.0))]);
    assert_eq!(h.where_sent(late), None);
}

#[test]
fn a_pull_into_the_driver_from_a_node_that_is_lost_fails_at_once_and_the_object_is_rebuilt() {
    let mut h = Harness::new(2, 1.0);
    let spec = h.spec(Vec::new(), 3);
    let task = spec.task_id;
    let id = h.submit(spec);
    let worker = h.where_sent(task).unwrap();
    let home = node_of(worker);
    h.returns(worker, task, Value::Shared { id, len: 1 << 20 });
    // The driver reads it: a pull from the node that made it.
    let _ = h.node.owner.poll(id, std::task::Waker::noop());
    h.node.settle();
    h.drain();
    assert_eq!(h.pulls_here, vec![(id, home)]);
    // The node is lost before the pull ends (its answer may come after QUIC's idle timeout,
    // or never): the object is made again on the other node at once.
    h.event(Event::NodeLost {
        node: home,
        reason: "test".into(),
        lease_end: h.now,
    });
    assert_eq!(h.sends(task), 2, "rebuilt");
    assert_eq!(node_of(h.where_sent(task).unwrap()), 1 - home);
    // The old pull's late failure changes nothing.
    let reason = "timed out".to_string();
    h.event(Event::PullFailed {
        id,
        from: home,
        reason,
    });
    assert_eq!(h.sends(task), 2);
}

#[test]
fn a_group_s_bundle_on_a_shared_node_is_usable_once_the_node_granted_it() {
    let mut h = Harness::new(2, 2.0);
    h.grant_all = false;
    let group = h
        .node
        .create_group(vec![cpus(1.0)], PlacementStrategy::Pack);
    h.node.settle();
    h.drain();
    // The bundle is set aside at once (nothing else of this job takes its CPU) and the node
    // asked for it; its names are not free before the grant.
    let (node, shape) = h.asks.pop().expect("the bundle is asked for");
    assert_eq!((shape.clone(), h.asks.len()), (cpus(1.0), 0));
    let mut inside = h.spec(Vec::new(), 0);
    inside.resources = group_demand(&cpus(1.0), group, Some(0)).unwrap();
    let task = inside.task_id;
    h.submit(inside);
    assert_eq!(
        h.where_sent(task),
        None,
        "no task of the group before the grant"
    );
    h.event(Event::Granted { node, shape });
    let worker = h.where_sent(task).expect("runs once granted");
    assert_eq!(node_of(worker), node);
    // The bundle's grant stays while the group lives, used or not.
    h.returns(worker, task, Value::Inline(vec![1]));
    h.event(Event::Tick);
    h.event(Event::Tick);
    assert_eq!(h.returned, Vec::new(), "a reserved bundle's grant is kept");
}

impl Harness {
    /// What `worker` reads in answer object `id` once it asks for it (none while the node has
    /// not answered).
    fn answer(&mut self, worker: WorkerId, id: ObjectId) -> Option<prism_transport::Answer> {
        self.report(worker, &ToNode::Get { ids: vec![id] });
        let value = self.told(worker, id)?;
        let prism_transport::ObjectValue::Ready(Value::Inline(bytes)) = value else {
            panic!("an answer is an inline value: {value:?}");
        };
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&bytes);
        Some(rkyv::from_bytes::<prism_transport::Answer, rkyv::rancor::Error>(&aligned).unwrap())
    }

    /// What `worker` was last told of object `id`, if anything.
    fn told(&self, worker: WorkerId, id: ObjectId) -> Option<prism_transport::ObjectValue> {
        self.sent.iter().rev().find_map(|(w, msg)| match msg {
            ToWorker::Objects(values) if *w == worker => values
                .iter()
                .find(|(o, _)| *o == id)
                .map(|(_, value)| value.clone()),
            _ => None,
        })
    }

    /// A worker's request to create an actor of class `tests::Counter`, named `name`.
    fn create_from(&mut self, worker: WorkerId, name: Option<&str>) -> (ActorId, ObjectId) {
        self.create_in(worker, name, None)
    }

    /// As `create_from`, the name in `namespace` (the job's when `None`).
    fn create_in(
        &mut self,
        worker: WorkerId,
        name: Option<&str>,
        namespace: Option<&str>,
    ) -> (ActorId, ObjectId) {
        let mut spec = self.spec(Vec::new(), 0);
        spec.task_id = TaskId::new(worker, self.seq);
        let actor = ActorId(spec.task_id);
        spec.kind = TaskKind::ActorCreation {
            actor,
            max_concurrency: 1,
        };
        let answer = ObjectId::new(TaskId::new(worker, 1_000_000 + self.seq), 0);
        let config = prism_transport::ActorConfig {
            class: "tests::Counter".into(),
            name: name.map(str::to_string),
            namespace: namespace.map(str::to_string),
            get_if_exists: false,
            max_restarts: 0,
            max_task_retries: 0,
            detached: false,
        };
        self.report(
            worker,
            &ToNode::CreateActor {
                spec,
                failed: None,
                config,
                answer: name.map(|_| answer),
            },
        );
        (actor, answer)
    }
}

#[test]
fn a_named_actor_is_made_once_the_head_grants_its_name() {
    use prism_transport::{Answer, Refusal};
    let mut h = Harness::new(1, 2.0);
    h.node.names_at_head = true;
    let (w1, w2) = (h.connected[0], h.connected[1]);
    let class = String::from("tests::Counter");
    let name = |name: &str| ActorName {
        namespace: String::new(),
        name: name.into(),
    };
    // A worker's named creation: nothing runs and nobody is answered before the head's word.
    let (actor, a1) = h.create_from(w1, Some("ps"));
    assert_eq!(h.claims, vec![(actor, name("ps"))]);
    assert_eq!(h.answer(w1, a1), None);
    assert_eq!(h.creations(), Vec::new());
    let outcome = Ok(());
    h.event(Event::NameClaimed { actor, outcome });
    let made = Answer::Actor {
        actor,
        class: class.clone(),
    };
    assert_eq!(h.answer(w1, a1), Some(made));
    assert_eq!(h.creations().len(), 1, "the constructor runs once granted");
    // The same name again in the job is decided here, without the head.
    let (_, a2) = h.create_from(w2, Some("ps"));
    assert_eq!(h.claims.len(), 1);
    let taken = |name: &str, holder: Option<&str>| {
        Some(Answer::Refused(Refusal::NameTaken {
            name: name.into(),
            namespace: String::new(),
            holder: holder.map(str::to_string),
        }))
    };
    assert_eq!(h.answer(w2, a2), taken("ps", None));
    // Another job holds "q": the worker hears which, and the actor never was.
    let (refused, a3) = h.create_from(w2, Some("q"));
    let outcome = Err(Unclaimed::Held {
        job: "job-b".into(),
    });
    h.event(Event::NameClaimed {
        actor: refused,
        outcome,
    });
    assert_eq!(h.answer(w2, a3), taken("q", Some("job-b")));
    assert!(h.node.actor_directory().iter().all(|a| a.id != refused));
    // The name is not this job's: the next creation asks the head again, which does not
    // answer this time.
    let (unanswered, a4) = h.create_from(w2, Some("q"));
    assert_eq!(h.claims.last(), Some(&(unanswered, name("q"))));
    let outcome = Err(Unclaimed::Unanswered("the head is down".into()));
    h.event(Event::NameClaimed {
        actor: unanswered,
        outcome,
    });
    let unclaimed = Refusal::NameUnanswered {
        name: "q".into(),
        namespace: String::new(),
        reason: "the head is down".into(),
    };
    assert_eq!(h.answer(w2, a4), Some(Answer::Refused(unclaimed)));
    // The driver's own creation waits in its API for the word, and reads a refusal once.
    let mut spec = h.spec(Vec::new(), 0);
    let mine = ActorId(spec.task_id);
    spec.kind = TaskKind::ActorCreation {
        actor: mine,
        max_concurrency: 1,
    };
    let setup = prism_transport::ActorConfig {
        class: class.clone(),
        name: Some("mine".into()),
        namespace: Some("svc".into()),
        get_if_exists: false,
        max_restarts: 0,
        max_task_retries: 0,
        detached: false,
    };
    assert_eq!(h.node.create_actor(spec, None, setup), Ok(mine));
    let waker = std::task::Waker::noop();
    assert!(h.node.poll_claim(mine, waker).is_pending());
    let outcome = Err(Unclaimed::Held {
        job: "job-c".into(),
    });
    h.event(Event::NameClaimed {
        actor: mine,
        outcome,
    });
    let held = Refusal::NameTaken {
        name: "mine".into(),
        namespace: "svc".into(),
        holder: Some("job-c".into()),
    };
    assert_eq!(h.node.poll_claim(mine, waker), Poll::Ready(Err(held)));
    assert_eq!(h.node.poll_claim(mine, waker), Poll::Ready(Ok(None)));
    // With get_if_exists, a name another job's actor has is that actor: looked up.
    let mut spec = h.spec(Vec::new(), 0);
    let shared = ActorId(spec.task_id);
    spec.kind = TaskKind::ActorCreation {
        actor: shared,
        max_concurrency: 1,
    };
    let setup = prism_transport::ActorConfig {
        class: class.clone(),
        name: Some("mine".into()),
        namespace: Some("svc".into()),
        get_if_exists: true,
        max_restarts: 0,
        max_task_retries: 0,
        detached: false,
    };
    assert_eq!(h.node.create_actor(spec, None, setup), Ok(shared));
    h.node.settle();
    h.drain();
    let outcome = Err(Unclaimed::Held {
        job: "job-c".into(),
    });
    h.event(Event::NameClaimed {
        actor: shared,
        outcome,
    });
    let Poll::Ready(Ok(Some(find))) = h.node.poll_claim(shared, waker) else {
        panic!("redirected to a lookup");
    };
    assert_eq!(h.finds.last().map(|(f, _)| *f), Some(find));
    // The granted actor is killed: its name goes at the head too (only it was claimed).
    assert_eq!(h.releases, Vec::new());
    let (worker, _) = h.creations()[0];
    h.node.kill_actor(actor);
    h.dies(worker);
    assert_eq!(h.releases, vec![(actor, name("ps"))]);
}

#[test]
fn another_job_s_actor_is_found_at_the_head_and_called_under_an_alias_by_workers_and_the_driver() {
    use prism_transport::{ActorReach, ActorState, ActorStatus, Answer};
    let mut h = Harness::new(1, 2.0);
    h.node.names_at_head = true;
    let (w1, w2) = (h.connected[0], h.connected[1]);
    let theirs = ActorId(TaskId::new(0, 5));
    let status = |state: ActorState, restarts: u32, worker: u64| ActorStatus {
        id: theirs,
        class: "tests::Counter".into(),
        name: Some("c".into()),
        namespace: "svc".into(),
        state,
        node: "n9".into(),
        restarts,
        reach: Some(ActorReach {
            worker,
            at: "10.0.0.9:7000".into(),
            direct: Some(format!("10.0.0.9:{worker}")),
        }),
        max_task_retries: 1,
    };
    // A worker's lookup of a name this job lacks goes to the head; the answer names an
    // alias of this job's, and the actor is watched there.
    let answer = ObjectId::new(TaskId::new(w1, 1_000_000), 0);
    let lookup = ToNode::LookupActor {
        name: "c".into(),
        namespace: Some("svc".into()),
        answer,
    };
    h.report(w1, &lookup);
    assert_eq!(h.answer(w1, answer), None, "answered once the head is");
    let (find, _) = h.finds[0].clone();
    let found = super::foreign::Found {
        job: "job-a".into(),
        actor: theirs,
        class: "tests::Counter".into(),
        status: Some(status(ActorState::Starting, 0, 41)),
    };
    h.event(Event::NameFound {
        find,
        outcome: Ok(Some(found.clone())),
    });
    let Some(Answer::Actor { actor: alias, .. }) = h.answer(w1, answer) else {
        panic!("found");
    };
    assert!(super::foreign::is_foreign(alias));
    assert_eq!(h.watches, vec![(alias, "job-a".to_string(), theirs)]);
    // Its callers hear its place once it is alive, with its own id; a restart the directory
    // shows only as a new place is told as a restart first.
    h.report(w2, &ToNode::WhereActor { actor: alias });
    assert_eq!(places(&h, w2, alias), Vec::new(), "not while it starts");
    let alive = |worker: u64| ActorPlace::Alive {
        worker,
        at: Some("10.0.0.9:7000".into()),
        direct: Some(format!("10.0.0.9:{worker}")),
    };
    h.event(Event::ForeignChanged {
        alias,
        status: Some(status(ActorState::Alive, 0, 41)),
    });
    assert_eq!(places(&h, w2, alias), vec![alive(41)]);
    let foreign_ids: Vec<Option<ActorId>> = (h.sent.iter())
        .filter_map(|(w, m)| match m {
            ToWorker::ActorAt { foreign, .. } if *w == w2 => Some(*foreign),
            _ => None,
        })
        .collect();
    assert_eq!(foreign_ids, vec![Some(theirs)]);
    h.report(w1, &ToNode::WhereActor { actor: alias });
    assert_eq!(places(&h, w1, alias), vec![alive(41)]);
    h.event(Event::ForeignChanged {
        alias,
        status: Some(status(ActorState::Alive, 1, 42)),
    });
    for caller in [w1, w2] {
        let told = places(&h, caller, alias);
        assert!(
            matches!(&told[1..], [ActorPlace::Restarting { .. }, p] if *p == alive(42)),
            "{told:?}"
        );
    }
    // The driver's own lookup finds the same alias; its calls go to the actor's endpoint
    // with the actor's own id, in order.
    let mine = h.node.find_actor(ActorName {
        namespace: "svc".into(),
        name: "c".into(),
    });
    h.drain();
    h.event(Event::NameFound {
        find: mine,
        outcome: Ok(Some(found)),
    });
    let waker = std::task::Waker::noop();
    let Poll::Ready(Ok((same, _))) = h.node.poll_find(mine, waker) else {
        panic!("the driver's lookup is answered");
    };
    assert_eq!(same, alias);
    let (first, first_id) = h.call(alias);
    let (second, _) = h.call(alias);
    let pushed: Vec<(String, TaskId, TaskKind)> = (h.foreign_sent.iter())
        .flat_map(|(endpoint, msg)| match msg {
            ToWorker::Push(calls) => calls
                .iter()
                .map(|c| (endpoint.clone(), c.task, c.kind))
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    let at = "10.0.0.9:42".to_string();
    let call = TaskKind::ActorCall(theirs);
    assert_eq!(
        pushed,
        vec![(at.clone(), first, call), (at.clone(), second, call)]
    );
    // A streaming method's call cannot go: its items would be objects of the other job.
    let mut streaming = h.spec(Vec::new(), 0);
    streaming.kind = TaskKind::ActorCall(alias);
    streaming.stream = Some(0);
    let stream_task = streaming.task_id;
    h.submit(streaming);
    let failed = (h.node.owner.task_state(stream_task), h.foreign_sent.len());
    assert_eq!(failed, (Some(prism_graph::TaskState::Failed), 2));
    // An end answers its call; a link that breaks sends the rest again (one retry), and a
    // death fails what is left.
    let end = TaskEnd {
        task: first,
        outcome: Outcome::Returned {
            values: vec![Value::Inline(vec![9])],
            nested: vec![Vec::new()],
            actors: vec![Vec::new()],
        },
        times: None,
        run: 0,
    };
    let msgs = vec![ToWorker::Returned {
        sent_us: 0,
        ends: vec![end],
        lent: Vec::new(),
    }];
    h.event(Event::ForeignFrames {
        endpoint: at.clone(),
        msgs,
    });
    assert!(matches!(h.slot(first_id), Some(Slot::Ready(_))));
    h.foreign_sent.clear();
    h.event(Event::ForeignLinkLost {
        endpoint: at.clone(),
        reason: "idle timeout".into(),
    });
    assert_eq!(h.foreign_sent.len(), 1, "sent again on a new link");
    h.event(Event::ForeignChanged {
        alias,
        status: Some(status(ActorState::Dead("killed".into()), 1, 42)),
    });
    let (_, second_id) = (second, ObjectId::new(second, 0));
    match h.slot(second_id) {
        Some(Slot::Failed(TaskError::ActorDied { reason, .. })) => {
            assert!(
                reason.contains("killed") && reason.contains("job-a"),
                "{reason}"
            )
        }
        other => panic!("the call fails with the actor: {other:?}"),
    }
    assert_eq!(
        places(&h, w2, alias).last(),
        Some(&ActorPlace::Dead("killed".into()))
    );
    // The last handles go: the alias is forgotten and no longer watched.
    h.node.actor_release(alias);
    h.report(w1, &ToNode::ReleaseActors(vec![alias]));
    h.node.settle();
    h.drain();
    assert_eq!(h.unwatched, vec![alias]);
}

#[test]
fn actors_names_are_per_namespace() {
    use prism_transport::{Answer, Refusal};
    let mut h = Harness::new(1, 2.0);
    let (w1, w2) = (h.connected[0], h.connected[1]);
    let class = String::from("tests::Counter");
    let (actor, a1) = h.create_from(w1, Some("ps"));
    assert!(matches!(h.answer(w1, a1), Some(Answer::Actor { .. })));
    // The same name in another namespace is another actor's.
    let (elsewhere, a5) = h.create_in(w2, Some("ps"), Some("other"));
    assert_eq!(
        h.answer(w2, a5),
        Some(Answer::Actor {
            actor: elsewhere,
            class: class.clone()
        })
    );
    let a6 = ObjectId::new(TaskId::new(w1, 9), 0);
    h.report(
        w1,
        &ToNode::LookupActor {
            name: "ps".into(),
            namespace: Some("other".into()),
            answer: a6,
        },
    );
    assert_eq!(
        h.answer(w1, a6),
        Some(Answer::Actor {
            actor: elsewhere,
            class: class.clone()
        })
    );
    // The job's namespace still has its own.
    let a7 = ObjectId::new(TaskId::new(w2, 10), 0);
    h.report(
        w2,
        &ToNode::LookupActor {
            name: "ps".into(),
            namespace: None,
            answer: a7,
        },
    );
    assert_eq!(h.answer(w2, a7), Some(Answer::Actor { actor, class }));
    let (_, a8) = h.create_in(w1, Some("ps"), Some("other"));
    assert_eq!(
        h.answer(w1, a8),
        Some(Answer::Refused(Refusal::NameTaken {
            name: "ps".into(),
            namespace: "other".into(),
            holder: None,
        }))
    );
}

#[test]
fn workers_make_find_and_kill_actors_and_await_groups_through_answer_objects() {
    use prism_transport::{Answer, Refusal};
    let mut h = Harness::new(1, 2.0);
    let (w1, w2) = (h.connected[0], h.connected[1]);
    let class = String::from("tests::Counter");

    // A named actor made by a worker is answered, found by another, and outlives both holds.
    let (actor, a1) = h.create_from(w1, Some("ps"));
    assert_eq!(
        h.answer(w1, a1),
        Some(Answer::Actor {
            actor,
            class: class.clone()
        })
    );
    let (_, a2) = h.create_from(w2, Some("ps"));
    assert_eq!(
        h.answer(w2, a2),
        Some(Answer::Refused(Refusal::NameTaken {
            name: "ps".into(),
            namespace: String::new(),
            holder: None,
        }))
    );
    let a3 = ObjectId::new(TaskId::new(w2, 7), 0);
    h.report(
        w2,
        &ToNode::LookupActor {
            name: "ps".into(),
            namespace: None,
            answer: a3,
        },
    );
    assert_eq!(
        h.answer(w2, a3),
        Some(Answer::Actor {
            actor,
            class: class.clone()
        })
    );
    let a4 = ObjectId::new(TaskId::new(w2, 8), 0);
    h.report(
        w2,
        &ToNode::LookupActor {
            name: "nobody".into(),
            namespace: Some("other".into()),
            answer: a4,
        },
    );
    assert_eq!(
        h.answer(w2, a4),
        Some(Answer::Refused(Refusal::NoSuchActor {
            name: "nobody".into(),
            namespace: "other".into(),
        }))
    );
    // Read answers go once released.
    h.report(w2, &ToNode::Release(vec![a2, a3, a4]));
    assert!(
        h.slot(a3).is_none() && h.slot(a4).is_none(),
        "answers read are freed"
    );

    // An unnamed actor made by a worker lives while that worker holds it.
    let (unnamed, _) = h.create_from(w1, None);
    h.node.settle();
    h.drain();
    let creation = h.where_sent(unnamed.0).expect("the constructor runs");
    h.constructed(creation, unnamed.0);
    assert!(runs(&h, unnamed), "the creator holds it");
    h.report(w1, &ToNode::ReleaseActors(vec![unnamed]));
    assert!(!runs(&h, unnamed), "the creator's handle was the only one");

    // A kill from a worker.
    let host = h
        .where_sent(actor.0)
        .expect("the named actor's constructor was sent");
    h.report(w2, &ToNode::KillActor(actor));
    assert_eq!(h.killed, vec![host], "the actor's process is killed");

    // Groups: one that fits is answered ready; one that cannot waits, its answer pending
    // even after the worker gave up on it, and the removal answers and frees it.
    let g1 = ObjectId::new(TaskId::new(w1, 20), 0);
    h.report(
        w1,
        &ToNode::CreateGroup {
            bundles: vec![cpus(1.0)],
            strategy: PlacementStrategy::Pack,
            answer: g1,
        },
    );
    let Some(Answer::Group(small)) = h.answer(w1, g1) else {
        panic!("the group's number");
    };
    // An answer object that exists already is left alone.
    h.report(
        w1,
        &ToNode::LookupActor {
            name: "ps".into(),
            namespace: None,
            answer: g1,
        },
    );
    assert_eq!(
        h.answer(w1, g1),
        Some(Answer::Group(small)),
        "not overwritten"
    );
    let r1 = ObjectId::new(TaskId::new(w1, 21), 0);
    h.report(
        w1,
        &ToNode::GroupReady {
            group: small,
            answer: r1,
        },
    );
    assert_eq!(h.answer(w1, r1), Some(Answer::Ready));
    let g2 = ObjectId::new(TaskId::new(w1, 22), 0);
    h.report(
        w1,
        &ToNode::CreateGroup {
            bundles: vec![cpus(64.0)],
            strategy: PlacementStrategy::Pack,
            answer: g2,
        },
    );
    let Some(Answer::Group(big)) = h.answer(w1, g2) else {
        panic!("the group's number");
    };
    let r2 = ObjectId::new(TaskId::new(w1, 23), 0);
    h.report(
        w1,
        &ToNode::GroupReady {
            group: big,
            answer: r2,
        },
    );
    assert_eq!(h.answer(w1, r2), None, "not placed: no answer yet");
    h.report(w1, &ToNode::Release(vec![r2]));
    assert!(
        matches!(h.slot(r2), Some(Slot::Pending)),
        "kept until answered"
    );
    h.report(w1, &ToNode::RemoveGroup(big));
    assert!(h.slot(r2).is_none(), "answered and freed: nobody holds it");
    let r3 = ObjectId::new(TaskId::new(w1, 24), 0);
    h.report(
        w1,
        &ToNode::GroupReady {
            group: big,
            answer: r3,
        },
    );
    assert!(
        matches!(
            h.answer(w1, r3),
            Some(Answer::Refused(Refusal::GroupGone(_)))
        ),
        "a removed group is gone"
    );
}

#[test]
fn handles_inside_an_object_hold_their_actor_while_the_object_lives() {
    let mut h = Harness::new(1, 4.0);
    let (actor, _) = h.actor(0);
    // A task returns a value holding the handle; the driver drops its own.
    let spec = h.spec(Vec::new(), 0);
    let task = spec.task_id;
    let id = h.submit(spec);
    let worker = h.where_sent(task).expect("the task runs");
    let outcome = Outcome::Returned {
        values: vec![Value::Inline(vec![1])],
        nested: vec![Vec::new()],
        actors: vec![vec![actor]],
    };
    h.report(worker, &done(task, outcome));
    h.node.actor_release(actor);
    h.node.settle();
    h.drain();
    assert!(runs(&h, actor), "the returned value holds it");
    // Freeing the object lets the actor go.
    h.node.owner.release(id);
    h.node.settle();
    h.drain();
    assert!(!runs(&h, actor), "the value was its last holder");

    // The same for a worker's put.
    let (other, _) = h.actor(0);
    let put = ObjectId::new(TaskId::new(worker, 99), 0);
    h.report(
        worker,
        &ToNode::Put {
            id: put,
            value: Value::Inline(vec![2]),
            nested: Vec::new(),
            actors: vec![other],
        },
    );
    h.node.actor_release(other);
    h.node.settle();
    h.drain();
    assert!(runs(&h, other), "the put object holds it");
    h.report(worker, &ToNode::Release(vec![put]));
    assert!(!runs(&h, other), "the put object was its last holder");
}

#[test]
fn a_job_starting_on_many_nodes_spreads_its_binary_from_the_nodes_that_have_it() {
    // Six nodes start their first workers at once: the driver serves two fetches of the
    // binary, and each node whose worker connected serves the next ones.
    let h = Harness::new(6, 1.0);
    assert_eq!(h.started.len(), 6);
    let node = |i: usize| node_of(h.started[i]);
    let expected = [
        None,
        None,
        Some(node(0)),
        Some(node(0)),
        None,
        Some(node(1)),
    ];
    assert_eq!(h.binary_from, expected);
}

#[test]
fn a_worker_owner_is_leased_a_worker_and_the_node_relays_their_frames_as_they_are() {
    let mut h = Harness::new(1, 2.0);
    assert!(
        (h.connected.iter()).all(|w| h.sent.contains(&(*w, ToWorker::OwnTasks))),
        "every worker of a node that is all on this host may own its tasks"
    );
    // The owner runs a task of the driver's; the other worker is idle.
    let spec = h.spec(Vec::new(), 0);
    let parent = spec.task_id;
    h.submit(spec);
    let owner = h.where_sent(parent).expect("dispatched");
    let other = *h.connected.iter().find(|w| **w != owner).unwrap();
    let heard = h.node.worker_messages();
    let key = TaskId::new(owner, u64::MAX - 1);
    h.report(
        owner,
        &ToNode::Lease {
            key,
            shape: cpus(1.0),
            near: None,
        },
    );
    assert_eq!(
        h.sent.last(),
        Some(&(
            owner,
            ToWorker::Leased {
                key,
                worker: other,
                at: None,
                direct: None,
            }
        ))
    );

    // A push goes through byte for byte; a frame of another kind is refused.
    let child = TaskId::new(owner, 1);
    let exec = Execute {
        task: child,
        function: "tests::g".into(),
        fn_hash: 0,
        args: vec![Value::Inline(vec![7])],
        num_returns: 1,
        kind: TaskKind::Normal,
        stream: None,
        cpu: prism_graph::Amount::ZERO,
        run: 0,
        pull_from: Vec::new(),
    };
    let mut frame = Vec::new();
    encode_frame(&ToWorker::Push(vec![exec.clone()]), &mut frame).unwrap();
    h.report(
        owner,
        &ToNode::Forward {
            to: other,
            at: None,
            frame,
        },
    );
    assert_eq!(h.sent.last(), Some(&(other, ToWorker::Push(vec![exec]))));
    let mut shutdown = Vec::new();
    encode_frame(&ToWorker::Shutdown, &mut shutdown).unwrap();
    let sent = h.sent.len();
    h.report(
        owner,
        &ToNode::Forward {
            at: None,
            to: other,
            frame: shutdown,
        },
    );
    h.report(
        owner,
        &ToNode::Forward {
            at: None,
            to: other,
            frame: vec![1, 2, 3],
        },
    );
    assert_eq!(
        h.sent.len(),
        sent,
        "nothing relayed but pushes, ends, hand-backs and cancels"
    );
    // The node owns none of it: the owner's ask was the only task-like message it kept.
    assert_eq!(h.node.owner.task(child).map(|_| ()), None);
    assert_eq!(h.node.worker_messages(), heard + 4);

    // The leased worker dies: the owner hears, naming it; its lease is gone.
    h.dies(other);
    let Some((to, ToWorker::LeaseEnded { key: ended, reason })) = h.sent.last().cloned() else {
        panic!("the owner hears of the loss: {:?}", h.sent.last());
    };
    assert_eq!((to, ended), (owner, key));
    assert!(
        reason.contains(&format!("leased worker {other} died")),
        "{reason}"
    );
    assert!(!h.node.is_lease(key));

    // A lease given back frees its worker for the node's own tasks.
    let key = TaskId::new(owner, u64::MAX - 2);
    h.report(
        owner,
        &ToNode::Lease {
            key,
            shape: cpus(1.0),
            near: None,
        },
    );
    let replacement = *h.started.last().unwrap();
    assert!(
        !h.connected.contains(&replacement),
        "a worker starts for the ask"
    );
    h.connect(replacement);
    assert_eq!(
        h.sent.last(),
        Some(&(
            owner,
            ToWorker::Leased {
                at: None,
                key,
                worker: replacement,
                direct: None,
            }
        ))
    );
    let leased = replacement;
    h.report(owner, &ToNode::Unlease { key });
    assert!(!h.node.is_lease(key));
    let next = h.spec(Vec::new(), 0);
    let next_task = next.task_id;
    h.submit(next);
    assert_eq!(
        h.where_sent(next_task),
        Some(leased),
        "the idle worker takes it"
    );

    // An ask under another worker's key is refused, saying why.
    let theirs = TaskId::new(leased, u64::MAX - 1);
    h.report(
        owner,
        &ToNode::Lease {
            key: theirs,
            shape: cpus(1.0),
            near: None,
        },
    );
    let Some((
        to,
        ToWorker::LeaseEnded {
            key: refused,
            reason,
        },
    )) = h.sent.last().cloned()
    else {
        panic!("refused: {:?}", h.sent.last());
    };
    assert_eq!((to, refused), (owner, theirs));
    assert!(reason.contains("not the asking worker's"), "{reason}");
    assert!(!h.node.is_lease(theirs));
}

#[test]
fn a_lease_ask_on_a_node_that_drains_has_its_owner_hand_the_tasks_to_the_driver() {
    let mut h = Harness::new(2, 1.0);
    // The owner runs a task on node 0, whose one CPU it holds: its ask waits there.
    let spec = TaskSpec {
        resources: cpus(1.0),
        ..TaskSpec::call(TaskId::new(DRIVER_OWNER, 99), "tests::parent", Vec::new())
    };
    h.submit(spec);
    let owner = h
        .where_sent(TaskId::new(DRIVER_OWNER, 99))
        .expect("dispatched");
    let home = node_of(owner);
    let key = TaskId::new(owner, u64::MAX - 1);
    h.report(
        owner,
        &ToNode::Lease {
            key,
            shape: cpus(1.0),
            near: None,
        },
    );
    assert!(h.node.is_lease(key), "it waits");
    h.event(Event::NodeDraining {
        node: home,
        reason: "drained by the test".into(),
    });
    assert!(!h.node.is_lease(key));
    assert!(
        h.sent.iter().any(|(w, m)| *w == owner
            && matches!(m, ToWorker::Spill { key: k, room: 1, home: 1 } if *k == key)),
        "the owner is told to hand its tasks over: {:?}",
        h.sent.last()
    );
}

#[test]
fn a_full_node_s_owner_is_leased_a_worker_of_another_node_named_by_its_address() {
    let mut h = Harness::new(2, 1.0);
    let address = |idx: NodeIdx| format!("127.0.0.{}:4000", idx + 2);
    for idx in 0..2 {
        h.node.set_peer_address(idx, address(idx));
    }
    // The owner's task takes its node's one CPU: its lease ask goes to the other node at once
    // (not at the next rebalance), and the grant names where that node's daemon listens.
    let (owner, key) = h.owner_asks_lease();
    let granted = h.sent.iter().find_map(|(to, msg)| match msg {
        ToWorker::Leased {
            key: k, worker, at, ..
        } if *to == owner && *k == key => Some((*worker, at.clone())),
        _ => None,
    });
    let (worker, at) = granted.expect("granted at once");
    assert_ne!(node_of(worker), node_of(owner));
    assert_eq!(at, Some(address(node_of(worker))));
}

#[test]
fn an_owner_that_dies_has_the_worker_leased_to_it_killed_and_its_lease_ends_with_it() {
    let mut h = Harness::new(1, 2.0);
    let (owner, key, other) = h.owner_leases_the_other_worker();
    // The owner dies with tasks pushed to `other` that the node never saw: `other` is
    // killed, and stays leased (nothing else is sent to it) until it is gone.
    h.dies(owner);
    assert_eq!(h.killed, vec![other]);
    assert!(h.node.is_lease(key));
    let sent = h.sent.len();
    let task = h.submit_many(1, 0)[0];
    assert!(
        h.where_sent(task).is_none_or(|w| w != other),
        "nothing is sent to the worker being killed"
    );
    h.dies(other);
    assert!(!h.node.is_lease(key));
    assert!(
        !h.sent[sent..].iter().any(|(to, _)| *to == owner),
        "nothing for the dead owner: {:?}",
        &h.sent[sent..]
    );
    assert!(!h.node.outbox.contains_key(&owner), "no frames kept for it");
}

#[test]
fn an_owner_s_forced_cancel_kills_the_worker_it_leased_and_no_one_else_s() {
    let mut h = Harness::new(1, 2.0);
    let (owner, key, other) = h.owner_leases_the_other_worker();
    // The leased worker cannot have its own lease's worker killed (itself), nor can anyone
    // but the owner.
    h.report(other, &ToNode::KillLeased { key });
    assert!(h.killed.is_empty(), "{:?}", h.killed);
    h.report(owner, &ToNode::KillLeased { key });
    assert_eq!(h.killed, vec![other]);
}

#[test]
fn a_blocked_worker_s_cpu_goes_back_to_its_node_at_once_unless_a_task_there_takes_it() {
    // Two nodes of one CPU each: two tasks run, a third is pipelined behind one of them.
    let mut h = Harness::new(2, 1.0);
    let (queued, busy, idle_after) = h.three_on_two();
    h.returned.clear();
    // Both block in `get`, the busy one handing back what waited behind its task. The node
    // with nothing left to run gets its CPU back at once (for its daemon to lease to another
    // owner of the job), not at the second idle tick; the other keeps it for the task.
    for (worker, returned) in [(busy, vec![queued]), (idle_after, Vec::new())] {
        let blocked = ToNode::Blocked {
            depth: 0,
            returned,
            awaiting: Vec::new(),
            cpu: cpus(1.0).cpu,
        };
        h.report(worker, &blocked);
    }
    assert_eq!(h.returned, vec![(node_of(idle_after), cpus(1.0))]);
}

#[test]
fn a_node_s_own_worker_is_taken_only_within_the_numbers_its_pool_was_given() {
    use super::Refused;
    use crate::proto::nodes::pool_numbers;
    let mut h = Harness::new(2, 1.0);
    let now = h.now;
    let mut started = |node: NodeIdx, worker: WorkerId| {
        let event = Event::NodeStartedWorker {
            node,
            worker,
            pid: 4242,
        };
        h.node.handle(event, now)
    };
    let first = pool_numbers(0).start;
    assert!(started(0, first).is_ok());
    // Not twice; not another node's number, nor one of the driver's own.
    assert!(matches!(started(0, first), Err(Refused::SecondHello(w)) if w == first));
    let other = pool_numbers(1).start;
    assert!(matches!(
        started(0, other),
        Err(Refused::NotNodes { node: 0, .. })
    ));
    assert!(matches!(
        started(0, 1),
        Err(Refused::NotNodes { node: 0, .. })
    ));
    // The worker it took says hello and owns its tasks; it never joins the driver's
    // scheduler, and its death fails nothing of the driver's.
    h.event(Event::WorkerConnected {
        worker: first,
        direct: None,
    });
    let told: Vec<&ToWorker> = (h.sent.iter())
        .filter(|(w, _)| *w == first)
        .map(|(_, m)| m)
        .collect();
    assert!(told.contains(&&ToWorker::OwnTasks), "{told:?}");
    let reason = "idle".to_string();
    h.event(Event::WorkerExited {
        worker: first,
        reason,
    });
    h.event(Event::WorkerEof { worker: first });
    assert!(!h.node.running(first));
}

#[test]
fn the_driver_borrows_its_workers_from_a_node_s_pool_and_gives_idle_ones_back() {
    use super::Refused;
    use crate::proto::nodes::pool_numbers;
    // Two nodes of one CPU each, their first workers started at the driver's word (they
    // bring the job's binary); a third task pipelined behind one of the first two.
    let mut h = Harness::borrowing(2, 1.0);
    let (queued, busy, _) = h.three_on_two();
    let node = node_of(busy);
    let spawned = h.started.len();
    h.host.clear();
    // The busy worker blocks in `get`, handing back the task behind it: the node has a CPU
    // for it and borrows a worker of its pool rather than starting one of the driver's.
    let blocked = ToNode::Blocked {
        depth: 0,
        returned: vec![queued],
        awaiting: Vec::new(),
        cpu: cpus(1.0).cpu,
    };
    h.report(busy, &blocked);
    let borrow = HostRequest::LeaseWorker { beyond_cap: false };
    assert!(
        h.host
            .iter()
            .any(|(n, r)| *n == node && format!("{r:?}") == format!("{borrow:?}")),
        "{:?}",
        h.host
    );
    assert_eq!(h.started.len(), spawned, "no start of the driver's own");
    // The pool lends a worker (its relay and hello may come before or after): the task
    // runs there.
    let lent = h.lent_by(node);
    assert_eq!(h.where_sent(queued), Some(lent));
    // The same worker again, another node's number, or one of the driver's are refused.
    for (worker, on) in [(lent, node), (pool_numbers(1 - node).start, node), (1, 1)] {
        let again = Event::NodeLent {
            node: on,
            worker,
            pid: 7,
        };
        let refused = h.node.handle(again, h.now);
        assert!(
            matches!(
                refused,
                Err(Refused::NotNodes { .. } | Refused::SecondHello(_))
            ),
            "{worker}: {refused:?}"
        );
    }
    h.drain();
    let ran_on = lent;
    h.returns(ran_on, queued, Value::Inline(vec![1]));
    // Idle for a whole tick, the lent worker goes back to the pool (not stopped).
    h.host.clear();
    h.event(Event::Tick);
    h.now += IDLE_TICK;
    h.event(Event::Tick);
    let gave_back: Vec<WorkerId> = (h.host.iter())
        .filter_map(|(_, r)| match r {
            HostRequest::ReturnWorker { worker } => Some(*worker),
            _ => None,
        })
        .collect();
    assert!(gave_back.contains(&ran_on), "{gave_back:?}");
    assert!(!h.killed.contains(&ran_on));
    assert!(
        !h.sent
            .iter()
            .any(|(w, m)| *w == ran_on && *m == ToWorker::Shutdown),
        "a worker given back is not told to exit"
    );
}

#[test]
fn a_worker_the_pool_lent_that_takes_an_actor_is_the_driver_s_for_good() {
    // Both nodes' workers run a task: an actor of no CPU needs a worker, borrowed from a pool.
    let mut h = Harness::borrowing(2, 1.0);
    let busy = h.submit_many(2, 0);
    assert!(busy.iter().all(|t| h.where_sent(*t).is_some()));
    h.host.clear();
    let (_, creation) = h.create_actor(Resources::default(), 0);
    let node = (h.host.iter())
        .find(|(_, r)| matches!(r, HostRequest::LeaseWorker { .. }))
        .map(|(n, _)| *n)
        .expect("a borrow");
    let lent = h.lent_by(node);
    // The actor's constructor runs there, and the pool hears the worker is the driver's now.
    assert_eq!(h.where_sent(creation), Some(lent));
    let kept = |h: &Harness| {
        (h.host.iter()).any(|(n, r)| {
            *n == node && matches!(r, HostRequest::KeepWorker { worker } if *worker == lent)
        })
    };
    assert!(kept(&h), "{:?}", h.host);
    h.constructed(lent, creation);
    // Idle ticks later, the actor's worker is not given back.
    h.host.clear();
    h.event(Event::Tick);
    h.now += IDLE_TICK;
    h.event(Event::Tick);
    let returned = (h.host.iter())
        .any(|(_, r)| matches!(r, HostRequest::ReturnWorker { worker } if *worker == lent));
    assert!(!returned, "{:?}", h.host);
}

#[test]
fn each_node_s_pool_is_told_the_job_s_other_nodes_and_those_that_leave() {
    let mut h = Harness::borrowing(3, 1.0);
    let address = |idx: NodeIdx| format!("127.0.0.{}:4000", idx + 2);
    for idx in 0..3 {
        h.node.set_peer_address(idx, address(idx));
    }
    h.node.settle();
    h.drain();
    let told = |h: &mut Harness| -> Vec<(NodeIdx, Vec<String>, Vec<String>)> {
        let host = std::mem::take(&mut h.host);
        (host.into_iter())
            .filter_map(|(node, request)| match request {
                HostRequest::Peers { joined, left } => {
                    let joined = joined.into_iter().map(|(a, total)| {
                        assert_eq!(total, cpus(1.0));
                        a
                    });
                    Some((node, joined.collect(), left))
                }
                _ => None,
            })
            .collect()
    };
    let (a, b, c) = (address(0), address(1), address(2));
    assert_eq!(
        told(&mut h),
        [
            (0, vec![b.clone(), c.clone()], vec![]),
            (1, vec![a.clone(), c.clone()], vec![]),
            (2, vec![a.clone(), b.clone()], vec![]),
        ]
    );
    // Told once: nothing changed, nothing more.
    h.node.settle();
    h.drain();
    assert_eq!(told(&mut h), []);
    h.event(Event::NodeLost {
        node: 2,
        reason: "killed by the test".into(),
        lease_end: h.now,
    });
    assert_eq!(
        told(&mut h),
        [(0, vec![], vec![c.clone()]), (1, vec![], vec![c])]
    );
}

#[test]
fn a_hello_that_comes_after_its_worker_ended_is_late_not_a_stranger_s() {
    let mut h = Harness::new(1, 1.0);
    let (gone, stranger) = (77, 78);
    let reason = "killed".to_string();
    h.event(Event::WorkerExited {
        worker: gone,
        reason,
    });
    let late = h.node.handle(
        Event::WorkerConnected {
            worker: gone,
            direct: None,
        },
        h.now,
    );
    assert!(
        matches!(late, Err(super::Refused::EndedUnheard(77))),
        "{late:?}"
    );
    let unknown = h.node.handle(
        Event::WorkerConnected {
            worker: stranger,
            direct: None,
        },
        h.now,
    );
    assert!(
        matches!(unknown, Err(super::Refused::UnknownWorker(78))),
        "{unknown:?}"
    );
}

/// An actor creation of class `tests::Counter` by the driver, named `name`, detached or not.
fn creation(
    h: &mut Harness,
    name: Option<&str>,
    detached: bool,
) -> (TaskSpec, prism_transport::ActorConfig) {
    let mut spec = h.spec(Vec::new(), 0);
    spec.kind = TaskKind::ActorCreation {
        actor: ActorId(spec.task_id),
        max_concurrency: 1,
    };
    let setup = prism_transport::ActorConfig {
        class: "tests::Counter".into(),
        name: name.map(str::to_string),
        namespace: None,
        get_if_exists: false,
        max_restarts: 0,
        max_task_retries: 0,
        detached,
    };
    (spec, setup)
}

#[test]
fn a_detached_actor_lives_without_handles_until_it_is_killed() {
    let mut h = Harness::new(1, 2.0);
    let alive = |h: &Harness, actor: ActorId| {
        (h.node.actor_directory().iter())
            .find(|a| a.id == actor)
            .map(|a| !matches!(a.state, prism_transport::ActorState::Dead(_)))
    };
    let (spec, setup) = creation(&mut h, None, true);
    let detached = h.node.create_actor(spec, None, setup).unwrap();
    let (spec, setup) = creation(&mut h, None, false);
    let owned = h.node.create_actor(spec, None, setup).unwrap();
    h.node.settle();
    h.drain();
    for (worker, task) in h.creations() {
        h.returns(worker, task, Value::Inline(vec![0]));
    }
    h.node.actor_release(detached);
    h.node.actor_release(owned);
    h.node.settle();
    h.drain();
    assert_eq!(
        alive(&h, detached),
        Some(true),
        "a detached actor outlives its handles"
    );
    assert_ne!(
        alive(&h, owned),
        Some(true),
        "an unnamed actor stops with its last handle"
    );
    h.node.kill_actor(detached);
    let creations = h.creations();
    let (worker, _) = (creations.iter())
        .find(|(_, task)| *task == detached.0)
        .expect("the detached actor was made here");
    h.dies(*worker);
    assert_ne!(alive(&h, detached), Some(true), "killed, it dies");
}

#[test]
fn a_joined_job_has_the_head_make_its_detached_actors() {
    use prism_transport::{Answer, Refusal};
    let mut h = Harness::new(1, 2.0);
    h.node.names_at_head = true;
    h.node.detached_at_head = true;
    let w1 = h.connected[0];
    let waker = std::task::Waker::noop();
    // Its constructor's arguments must be values: a reference cannot outlive the job.
    let (mut spec, setup) = creation(&mut h, Some("keeper"), true);
    spec.args = vec![Arg::Ref(ObjectId::new(TaskId::new(0, 999), 0))];
    let refused = h.node.create_detached(spec, None, setup, None);
    assert!(
        matches!(refused, Err(Refusal::Detached { .. })),
        "{refused:?}"
    );
    // And they must fit in the head's request.
    let (mut spec, setup) = creation(&mut h, Some("keeper"), true);
    spec.args = vec![Arg::Value(vec![0; super::detached::DETACHED_ARGS_MAX + 1])];
    let refused = h.node.create_detached(spec, None, setup, None);
    assert!(
        matches!(&refused, Err(Refusal::Detached { reason, .. }) if reason.contains("bytes")),
        "{refused:?}"
    );
    // The driver's creation goes to the head, its name in the job's namespace; nothing
    // runs here.
    let (spec, setup) = creation(&mut h, Some("keeper"), true);
    let find = h.node.create_detached(spec, None, setup, None).unwrap();
    h.node.settle();
    h.drain();
    let (asked, _, sent) = h.detached.last().cloned().expect("asked of the head");
    assert_eq!(asked, find);
    assert_eq!(sent.namespace.as_deref(), Some(h.node.namespace()));
    assert_eq!(h.creations(), Vec::new(), "made by the head, not here");
    assert!(h.node.poll_find(find, waker).is_pending());
    let theirs = ActorId(TaskId::new(0, 1));
    let made = |actor: ActorId| super::foreign::Found {
        job: "detached-0011223344556677".into(),
        actor,
        class: "tests::Counter".into(),
        status: None,
    };
    h.event(Event::DetachedMade {
        find,
        outcome: Ok(made(theirs)),
    });
    let Poll::Ready(Ok((alias, class))) = h.node.poll_find(find, waker) else {
        panic!("the driver's creation is answered");
    };
    assert!(super::foreign::is_foreign(alias));
    assert_eq!(class, "tests::Counter");
    assert_eq!(
        h.watches,
        vec![(alias, "detached-0011223344556677".to_string(), theirs)]
    );
    // A worker's creation is answered in its object: the actor, or why not.
    let worker_creates = |h: &mut Harness, name: Option<&str>, answer: ObjectId| {
        let (spec, config) = creation(h, name, true);
        let create = ToNode::CreateActor {
            spec,
            failed: None,
            config,
            answer: Some(answer),
        };
        h.report(w1, &create);
    };
    let answer = ObjectId::new(TaskId::new(w1, 1_000_000), 0);
    worker_creates(&mut h, None, answer);
    assert_eq!(h.answer(w1, answer), None, "answered once the head is");
    let (find, _, _) = h.detached.last().cloned().unwrap();
    let second = ActorId(TaskId::new(0, 2));
    h.event(Event::DetachedMade {
        find,
        outcome: Ok(made(second)),
    });
    let Some(Answer::Actor {
        actor: worker_alias,
        ..
    }) = h.answer(w1, answer)
    else {
        panic!("the worker's creation is answered with the actor");
    };
    assert!(super::foreign::is_foreign(worker_alias) && worker_alias != alias);
    let answer = ObjectId::new(TaskId::new(w1, 1_000_001), 0);
    worker_creates(&mut h, Some("keeper"), answer);
    let (find, _, _) = h.detached.last().cloned().unwrap();
    let taken = Refusal::NameTaken {
        name: "keeper".into(),
        namespace: h.node.namespace().to_string(),
        holder: Some("detached-0011223344556677".into()),
    };
    h.event(Event::DetachedMade {
        find,
        outcome: Err(taken.clone()),
    });
    assert_eq!(h.answer(w1, answer), Some(Answer::Refused(taken)));
    // Killing it from this job goes through the head, as does killing another job's actor
    // that is not detached (its driver kills it on the head's order).
    h.node.kill_actor(alias);
    h.node.settle();
    h.drain();
    assert_eq!(
        h.foreign_kills,
        vec![("detached-0011223344556677".to_string(), theirs)]
    );
    let lookup = h.node.find_actor(ActorName {
        namespace: "svc".into(),
        name: "c".into(),
    });
    h.drain();
    let found = super::foreign::Found {
        job: "job-a".into(),
        ..made(ActorId(TaskId::new(0, 7)))
    };
    h.event(Event::NameFound {
        find: lookup,
        outcome: Ok(Some(found)),
    });
    let Poll::Ready(Ok((plain, _))) = h.node.poll_find(lookup, waker) else {
        panic!("found");
    };
    // The driver's API waits for the head's word.
    let kill = h
        .node
        .kill_from_api(plain)
        .expect("another job's: asked of the head");
    h.node.settle();
    h.drain();
    assert_eq!(
        h.foreign_kills,
        vec![
            ("detached-0011223344556677".to_string(), theirs),
            ("job-a".to_string(), ActorId(TaskId::new(0, 7)))
        ],
        "every other job's actor is killed through the head"
    );
    assert_eq!(h.kill_numbers.last(), Some(&kill));
    assert!(h.node.poll_kill(kill, waker).is_pending());
    h.event(Event::ForeignKilled {
        kill,
        outcome: Ok(()),
    });
    assert_eq!(h.node.poll_kill(kill, waker), Poll::Ready(Ok(())));
    // A worker's kill is answered in its object: done, or why not.
    let answer = ObjectId::new(TaskId::new(w1, 1_000_002), 0);
    h.report(
        w1,
        &ToNode::KillForeign {
            actor: plain,
            answer,
        },
    );
    assert_eq!(h.answer(w1, answer), None, "answered once the head is");
    let kill = *h.kill_numbers.last().unwrap();
    h.event(Event::ForeignKilled {
        kill,
        outcome: Err("job job-a takes no orders at the head".into()),
    });
    match h.answer(w1, answer) {
        Some(Answer::Refused(Refusal::NotKilled { job, reason, .. })) => {
            assert_eq!(job, "job-a");
            assert!(reason.contains("takes no orders"), "{reason}");
        }
        other => panic!("the worker hears why not: {other:?}"),
    }
    // This job's own actors are killed on the head's order; an alias or an unknown id is
    // refused with the reason.
    assert!(h.node.kill_ordered(plain).is_err());
    assert!(h.node.kill_ordered(ActorId(TaskId::new(0, 999))).is_err());
}

#[test]
fn a_worker_watching_another_hears_of_its_death_or_at_once_of_one_not_running() {
    let mut h = Harness::new(1, 3.0);
    let (lender, borrower) = an_owner_and_a_reader(&mut h);
    h.report(
        borrower,
        &ToNode::WatchWorker {
            worker: lender,
            at: None,
        },
    );
    h.report(
        borrower,
        &ToNode::WatchWorker {
            worker: 999,
            at: None,
        },
    );
    let gone = |h: &Harness, watched: WorkerId| {
        h.sent.iter().any(|(w, m)| {
            *w == borrower && matches!(m, ToWorker::WorkerGone { worker, .. } if *worker == watched)
        })
    };
    assert!(gone(&h, 999), "a worker not running: at once");
    assert!(!gone(&h, lender), "the lender runs");
    h.dies(lender);
    assert!(gone(&h, lender), "told of the lender's death");
}

#[test]
fn a_stopped_actor_s_worker_that_still_owes_work_is_asked_to_exit_again_each_tick() {
    let mut h = Harness::new(1, 4.0);
    let (actor, worker) = h.actor(0);
    let asked = |h: &Harness| {
        (h.sent.iter())
            .filter(|(w, m)| *w == worker && matches!(m, ToWorker::ExitIfIdle))
            .count()
    };
    // Its last handle goes: the actor stops, and its worker is asked to exit (not shut down:
    // it may lend objects to other workers, or run the actor's last calls).
    h.node.actor_release(actor);
    h.node.settle();
    h.drain();
    assert_eq!(asked(&h), 1);
    assert!(
        !h.sent
            .iter()
            .any(|(w, m)| *w == worker && *m == ToWorker::Shutdown)
    );
    // It still owes work: asked again with the next tick, and only after it said so.
    h.report(worker, &ToNode::Owes);
    h.event(Event::Tick);
    assert_eq!(asked(&h), 2, "asked again with the tick");
    h.event(Event::Tick);
    assert_eq!(asked(&h), 2, "not again before it answers");
}
