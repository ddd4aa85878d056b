//! A task or an actor's method does with actors and placement groups what the driver does:
//! creates actors (named or not, in namespaces), looks them up by name, kills them, and makes, awaits and
//! removes placement groups, on an embedded cluster of 4 CPUs; and a handle inside an object
//! (a task's return value, a `put`) holds its actor while the object lives. (The same requests
//! from a worker on another node: `cluster_jobs`.)

mod common;

use std::time::Duration;

use common::{Case, alive, ensure, eventually};
use libtest_mimic::Failed;
use prism::{ActorHandle, Bundle, PlacementStrategy, TaskError, actor, placement_group, remote};

#[actor]
struct Counter {
    value: u64,
}

#[actor]
impl Counter {
    fn new(start: u64) -> Self {
        Counter { value: start }
    }

    fn inc(&mut self) -> u64 {
        self.value += 1;
        self.value
    }

    fn get(&self) -> u64 {
        self.value
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }
}

/// An actor that makes actors of its own in its constructor and calls them.
#[actor]
struct Team {
    members: Vec<ActorHandle<Counter>>,
}

#[actor]
impl Team {
    fn new(size: u64) -> Self {
        Team {
            members: (0..size).map(Counter::remote).collect(),
        }
    }

    /// Increments every member once: the sum of what they return.
    fn inc_all(&self) -> u64 {
        let calls: Vec<_> = self.members.iter().map(|m| m.inc()).collect();
        prism::get_all_blocking(&calls)
            .expect("the members answer")
            .into_iter()
            .sum()
    }
}

/// An async actor (its calls run on one event loop) that makes and finds actors and groups.
#[actor]
struct Maker {
    made: u64,
}

#[actor]
impl Maker {
    fn new() -> Self {
        Maker { made: 0 }
    }

    /// Names a counter, finds it again, awaits its answer, and awaits a placement group:
    /// the counter's value after one increment.
    async fn make_and_find(&mut self, name: String) -> u64 {
        let made = Counter::options().name(&name).remote(40);
        let found = prism::get_actor::<Counter>(&name).expect("the name was just taken");
        assert_eq!(made.id(), found.id(), "one actor under the name");
        let group = placement_group(vec![Bundle::new().cpus(0.5)], PlacementStrategy::Pack)
            .expect("the group is made");
        group.ready().await.expect("the group is reserved");
        prism::remove_placement_group(&group).expect("removed");
        self.made += 1;
        prism::get(&found.inc()).await.expect("the counter answers")
    }
}

#[remote]
fn five() -> u64 {
    5
}

/// Creates an unnamed actor, calls it `times` times: its last value and its process.
#[remote]
fn count_in_a_task(times: u64) -> (u64, u32) {
    let counter = Counter::remote(0);
    let mut last = 0;
    for _ in 0..times {
        last = counter
            .inc()
            .get_blocking()
            .expect("the task's actor answers");
    }
    (last, counter.pid().get_blocking().expect("pid"))
}

/// Creates the actor named `name` starting at `start`; its id as text, or why not.
#[remote]
fn name_an_actor(name: String, start: u64, get_if_exists: bool) -> Result<String, String> {
    let counter = Counter::options()
        .name(&name)
        .get_if_exists(get_if_exists)
        .try_remote(start)
        .map_err(|e| e.to_string())?;
    Ok(counter.id().to_string())
}

/// Finds the actor named `name` and increments it: its new value, or why not.
#[remote]
fn find_and_inc(name: String) -> Result<u64, String> {
    let counter = prism::get_actor::<Counter>(&name).map_err(|e| e.to_string())?;
    counter.inc().get_blocking().map_err(|e| e.to_string())
}

/// Creates the actor named `name` in `namespace` starting at `start`: its id as text, or why
/// not.
#[remote]
fn name_an_actor_in(name: String, namespace: String, start: u64) -> Result<String, String> {
    let counter = Counter::options()
        .name(&name)
        .namespace(&namespace)
        .try_remote(start)
        .map_err(|e| e.to_string())?;
    Ok(counter.id().to_string())
}

/// Finds the actor named `name` in `namespace` and increments it: its new value, or why not.
#[remote]
fn find_in_and_inc(name: String, namespace: String) -> Result<u64, String> {
    let counter = prism::get_actor_in::<Counter>(&name, &namespace).map_err(|e| e.to_string())?;
    counter.inc().get_blocking().map_err(|e| e.to_string())
}

/// Creates an actor starting at `start`, increments it once and returns its handle (the
/// task's own handle goes when it ends).
#[remote]
fn make_counter(start: u64) -> ActorHandle<Counter> {
    let counter = Counter::remote(start);
    counter.inc().get_blocking().expect("the new actor answers");
    counter
}

/// Calls the actor whose handle its child returned, after the child's value is gone (the
/// child's worker let its own handle go meanwhile).
#[remote]
fn call_a_childs_actor(start: u64) -> u64 {
    let made = make_counter::remote(start);
    let counter = prism::get_blocking(&made).expect("the child's handle");
    drop(made);
    std::thread::sleep(Duration::from_millis(100));
    counter.inc().get_blocking().expect("the actor answers")
}

/// Kills the actor it was handed.
#[remote]
fn kill_it(counter: ActorHandle<Counter>) -> bool {
    prism::kill(&counter).is_ok()
}

/// Makes a group of one bundle of `cpus`, waits up to `wait_ms` for it, runs `five` in it if
/// it is ready, and removes it: (ready, what ran, what `ready` says after the removal).
#[remote]
fn use_a_group(cpus: f64, wait_ms: u64) -> (bool, u64, String) {
    let group = placement_group(vec![Bundle::new().cpus(cpus)], PlacementStrategy::Pack)
        .expect("the group is made");
    let ready = group
        .wait_blocking(Duration::from_millis(wait_ms))
        .expect("the wait ends");
    let ran = if ready {
        five::options()
            .placement(&group, 0)
            .remote()
            .get_blocking()
            .expect("the task in the group runs")
    } else {
        0
    };
    prism::remove_placement_group(&group).expect("the group is removed");
    let after = match group.wait_blocking(Duration::from_secs(10)) {
        Ok(ready) => format!("ready: {ready}"),
        Err(e) => e.to_string(),
    };
    (ready, ran, after)
}

fn a_task_creates_calls_and_drops_an_actor() -> Result<(), Failed> {
    let (last, pid) = count_in_a_task::remote(7).get_blocking()?;
    ensure(last == 7, format!("seven increments, got {last}"))?;
    ensure(
        eventually(10, || !alive(pid)),
        "the actor stopped once the task that made it dropped its handle",
    )
}

fn a_task_returns_the_handle_of_the_actor_it_made() -> Result<(), Failed> {
    let made = make_counter::remote(5);
    let counter = made.get_blocking()?;
    // Long enough for the task's end, and its worker's release of its handle, to be seen.
    std::thread::sleep(Duration::from_millis(300));
    ensure(
        counter.inc().get_blocking()? == 7,
        "the returned handle reaches the actor after its creator let go",
    )?;
    let pid = counter.pid().get_blocking()?;
    drop(counter);
    std::thread::sleep(Duration::from_millis(300));
    ensure(alive(pid), "the returned object still holds the actor")?;
    drop(made);
    ensure(
        eventually(10, || !alive(pid)),
        "the actor stopped once the object and the handle read from it were gone",
    )
}

fn a_task_calls_the_actor_its_child_made_and_returned() -> Result<(), Failed> {
    let last = call_a_childs_actor::remote(5).get_blocking()?;
    ensure(last == 7, format!("two increments from 5, got {last}"))
}

fn a_handle_put_in_an_object_keeps_its_actor() -> Result<(), Failed> {
    let counter = Counter::remote(0);
    let pid = counter.pid().get_blocking()?;
    let stored = prism::put(counter)?;
    std::thread::sleep(Duration::from_millis(300));
    ensure(alive(pid), "the object holds the driver's only handle")?;
    let back: ActorHandle<Counter> = stored.get_blocking()?;
    ensure(
        back.inc().get_blocking()? == 1,
        "the handle read back works",
    )?;
    drop((back, stored));
    ensure(
        eventually(10, || !alive(pid)),
        "the actor stopped once the object went",
    )
}

fn a_task_names_an_actor_that_others_find() -> Result<(), Failed> {
    let id = name_an_actor::remote("team-lead".to_string(), 10, false).get_blocking()?;
    let id = id.map_err(|e| format!("the task could not name its actor: {e}"))?;
    // The task is over and its handle gone: the name keeps the actor.
    let found = prism::get_actor::<Counter>("team-lead")?;
    ensure(
        found.id().to_string() == id,
        "the driver finds the task's actor",
    )?;
    ensure(found.inc().get_blocking()? == 11, "it answers the driver")?;
    let from_task = find_and_inc::remote("team-lead".to_string()).get_blocking()?;
    ensure(
        from_task == Ok(12),
        format!("another task finds it: {from_task:?}"),
    )?;
    let taken = name_an_actor::remote("team-lead".to_string(), 0, false).get_blocking()?;
    ensure(
        taken.as_ref().is_err_and(|e| e.contains("team-lead")),
        format!("a second actor of that name is refused: {taken:?}"),
    )?;
    let reused = name_an_actor::remote("team-lead".to_string(), 0, true).get_blocking()?;
    ensure(
        reused.as_deref() == Ok(id.as_str()),
        format!("get_if_exists in a task gives the same actor: {reused:?}"),
    )?;
    let missing = find_and_inc::remote("nobody-here".to_string()).get_blocking()?;
    ensure(
        missing.as_ref().is_err_and(|e| e.contains("nobody-here")),
        format!("a missing name is an error naming it: {missing:?}"),
    )?;
    prism::kill(&found)?;
    ensure(
        eventually(10, || prism::get_actor::<Counter>("team-lead").is_err()),
        "the killed actor's name is free again",
    )
}

/// The job's namespace this file's driver configures.
const JOB_NAMESPACE: &str = "from-tasks";

fn names_are_per_namespace() -> Result<(), Failed> {
    ensure(
        prism::namespace()? == JOB_NAMESPACE,
        "the driver says its namespace",
    )?;
    // Without a namespace, a name is in the job's (the configured one here).
    let mine = Counter::options().name("shared").remote(1);
    let theirs = Counter::options()
        .name("shared")
        .namespace("svc")
        .remote(100);
    ensure(
        mine.id() != theirs.id(),
        "two actors of one name, one per namespace",
    )?;
    let found = prism::get_actor::<Counter>("shared")?;
    ensure(
        found.id() == mine.id(),
        "get_actor looks in the job's namespace",
    )?;
    let found = prism::get_actor_in::<Counter>("shared", JOB_NAMESPACE)?;
    ensure(
        found.id() == mine.id(),
        "the job's namespace is the configured one",
    )?;
    let found = prism::get_actor_in::<Counter>("shared", "svc")?;
    ensure(
        found.id() == theirs.id(),
        "get_actor_in looks in the one named",
    )?;
    let taken = Counter::options()
        .name("shared")
        .namespace("svc")
        .try_remote(0);
    ensure(
        matches!(
            &taken,
            Err(prism::Error::ActorNameTaken { name, namespace, holder: None })
                if name == "shared" && namespace == "svc"
        ),
        format!(
            "the name is taken in that namespace: {:?}",
            taken.map(|h| h.id())
        ),
    )?;
    let missing = prism::get_actor_in::<Counter>("shared", "nowhere");
    ensure(
        matches!(
            &missing,
            Err(prism::Error::ActorNotFound { namespace, .. }) if namespace == "nowhere"
        ),
        "a namespace without the name has no such actor",
    )?;
    // From a task: the same names, and one made there.
    let from_task =
        find_in_and_inc::remote("shared".to_string(), "svc".to_string()).get_blocking()?;
    ensure(
        from_task == Ok(101),
        format!("a task finds the actor by namespace: {from_task:?}"),
    )?;
    let from_task = find_and_inc::remote("shared".to_string()).get_blocking()?;
    ensure(
        from_task == Ok(2),
        format!("a task's get_actor looks in the job's namespace: {from_task:?}"),
    )?;
    let made = name_an_actor_in::remote("made".to_string(), "svc".to_string(), 7).get_blocking()?;
    let made = made.map_err(|e| format!("the task could not name its actor: {e}"))?;
    let found = prism::get_actor_in::<Counter>("made", "svc")?;
    ensure(found.id().to_string() == made, "the driver finds it there")?;
    ensure(
        prism::get_actor::<Counter>("made").is_err(),
        "and not in the job's namespace",
    )?;
    for handle in [&mine, &theirs, &found] {
        prism::kill(handle)?;
    }
    ensure(
        eventually(10, || {
            prism::get_actor_in::<Counter>("shared", "svc").is_err()
        }),
        "a killed actor's name is free again in its namespace",
    )
}

fn a_task_kills_an_actor() -> Result<(), Failed> {
    let counter = Counter::remote(0);
    counter.inc().get_blocking()?;
    ensure(
        kill_it::remote(counter.clone()).get_blocking()?,
        "the kill was sent",
    )?;
    let call = counter.get().get_blocking();
    ensure(
        matches!(call, Err(prism::Error::Task(TaskError::ActorDied { .. }))),
        format!("calls fail once the task killed the actor: {call:?}"),
    )
}

fn an_actor_makes_actors() -> Result<(), Failed> {
    let team = Team::remote(3);
    ensure(
        team.inc_all().get_blocking()? == 1 + 2 + 3,
        "the members start at 0, 1 and 2",
    )?;
    ensure(
        team.inc_all().get_blocking()? == 2 + 3 + 4,
        "the members keep their state",
    )
}

fn an_async_actor_makes_and_finds_actors_on_its_event_loop() -> Result<(), Failed> {
    let maker = Maker::remote();
    ensure(
        maker
            .make_and_find("made-on-a-loop".to_string())
            .get_blocking()?
            == 41,
        "the async method made, found and called its actor",
    )?;
    let found = prism::get_actor::<Counter>("made-on-a-loop")?;
    ensure(found.get().get_blocking()? == 41, "the driver finds it too")?;
    prism::kill(&found)?;
    Ok(())
}

fn a_task_makes_awaits_and_removes_a_placement_group() -> Result<(), Failed> {
    let (ready, ran, after) = use_a_group::remote(1.0, 20_000).get_blocking()?;
    ensure(ready, "the group was reserved")?;
    ensure(ran == 5, "a task ran in the group")?;
    ensure(
        after.contains("removed"),
        format!("ready after removal fails: {after}"),
    )?;
    // Larger than the node: the wait times out and the group is removed while pending.
    let (ready, ran, after) = use_a_group::remote(64.0, 200).get_blocking()?;
    ensure(!ready && ran == 0, "a group that cannot fit is not ready")?;
    ensure(
        after.contains("removed"),
        format!("ready after removal fails: {after}"),
    )
}

fn main() {
    let config = prism::Config::new().num_cpus(4.0).namespace(JOB_NAMESPACE);
    let cases: &[Case] = &[
        ("names_are_per_namespace", names_are_per_namespace),
        (
            "a_task_creates_calls_and_drops_an_actor",
            a_task_creates_calls_and_drops_an_actor,
        ),
        (
            "a_task_returns_the_handle_of_the_actor_it_made",
            a_task_returns_the_handle_of_the_actor_it_made,
        ),
        (
            "a_task_calls_the_actor_its_child_made_and_returned",
            a_task_calls_the_actor_its_child_made_and_returned,
        ),
        (
            "a_handle_put_in_an_object_keeps_its_actor",
            a_handle_put_in_an_object_keeps_its_actor,
        ),
        (
            "a_task_names_an_actor_that_others_find",
            a_task_names_an_actor_that_others_find,
        ),
        ("a_task_kills_an_actor", a_task_kills_an_actor),
        ("an_actor_makes_actors", an_actor_makes_actors),
        (
            "an_async_actor_makes_and_finds_actors_on_its_event_loop",
            an_async_actor_makes_and_finds_actors_on_its_event_loop,
        ),
        (
            "a_task_makes_awaits_and_removes_a_placement_group",
            a_task_makes_awaits_and_removes_a_placement_group,
        ),
    ];
    common::run(config, cases)
}
