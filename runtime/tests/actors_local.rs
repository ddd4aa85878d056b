//! Actors with real worker processes: state across calls, submission order, references as
//! arguments, named actors, panics, restarts after the process dies (including SIGKILL in the
//! middle of a call), `kill`, constructor failures, and stopping on the last handle's drop;
//! threaded actors (`max_concurrency` threads) and async actors (one event loop, 1,000 calls at
//! once by default).

mod common;

use std::time::Duration;

use common::{Case, alive, ensure, eventually, temp_path};
use libtest_mimic::Failed;
use prism::{ActorHandle, ObjectRef, TaskError, actor, remote};

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

    fn add(&mut self, n: u64) -> u64 {
        self.value += n;
        self.value
    }

    fn get(&self) -> u64 {
        self.value
    }

    /// Adds what a nested task returns: the call blocks in `get` while later calls wait.
    fn add_five(&mut self) -> u64 {
        self.value += five::remote().get_blocking().expect("nested get");
        self.value
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }

    fn crash(&self) -> u64 {
        std::process::abort()
    }

    fn boom(&self) -> u64 {
        panic!("counter at {} refuses", self.value)
    }

    /// Sleeps, then increments: a call that is in flight for a while.
    fn slow_inc(&mut self, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        self.inc()
    }

    /// Aborts the first time (no marker yet), increments after a restart.
    fn abort_once(&mut self, marker: String) -> u64 {
        if std::fs::metadata(&marker).is_err() {
            std::fs::write(&marker, b"died once").expect("write marker");
            std::process::abort();
        }
        self.inc()
    }
}

#[actor]
struct Picky {
    label: String,
}

#[actor]
impl Picky {
    fn new(label: String) -> Result<Self, String> {
        if label.is_empty() {
            Err("an empty label is not allowed".to_string())
        } else {
            Ok(Picky { label })
        }
    }

    fn label(&self) -> String {
        self.label.clone()
    }
}

#[remote]
fn five() -> u64 {
    5
}

#[remote]
fn no_label() -> String {
    panic!("no label today")
}

/// A task that calls an actor through a handle it was given.
#[remote]
fn bump_many(counter: ActorHandle<Counter>, times: u64) -> u64 {
    bump_many_inline(&counter, times)
}

/// A task that waits, then calls an actor through the handle it was given.
#[remote]
fn bump_later(counter: ActorHandle<Counter>, wait_ms: u64, times: u64) -> u64 {
    std::thread::sleep(std::time::Duration::from_millis(wait_ms));
    bump_many_inline(&counter, times)
}

fn bump_many_inline(counter: &ActorHandle<Counter>, times: u64) -> u64 {
    let refs: Vec<ObjectRef<u64>> = (0..times).map(|_| counter.inc()).collect();
    let values = prism::get_all_blocking(&refs).expect("increments");
    values.into_iter().max().unwrap_or(0)
}

/// An actor holding a handle to another actor.
#[actor]
struct Relay {
    target: ActorHandle<Counter>,
}

#[actor]
impl Relay {
    fn new(target: ActorHandle<Counter>) -> Self {
        Relay { target }
    }

    fn forward(&self, n: u64) -> u64 {
        self.target
            .add(n)
            .get_blocking()
            .expect("the target answers")
    }
}

/// An actor for concurrent calls.
#[actor]
struct Meeting {
    count: u64,
}

#[actor]
impl Meeting {
    fn new() -> Self {
        Meeting { count: 0 }
    }

    /// Leaves `mine`, then waits (up to 20 s) for `other`: true only if both calls ran at once.
    fn meet(&self, mine: String, other: String) -> bool {
        std::fs::write(&mine, b"here").expect("write marker");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if std::path::Path::new(&other).exists() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    fn bump(&mut self) -> u64 {
        let seen = self.count;
        std::thread::sleep(Duration::from_micros(50));
        self.count = seen + 1;
        self.count
    }

    fn count(&self) -> u64 {
        self.count
    }

    /// A nested call from a concurrent actor.
    fn five_plus(&self, n: u64) -> u64 {
        five::remote().get_blocking().expect("nested get") + n
    }
}

/// Not Sync: cannot run calls on several threads.
#[actor]
struct Lonely {
    cell: std::cell::Cell<u64>,
}

#[actor]
impl Lonely {
    fn new() -> Self {
        Lonely {
            cell: std::cell::Cell::new(0),
        }
    }

    fn get(&self) -> u64 {
        self.cell.get()
    }
}

fn concurrent_actors_run_calls_at_once() -> Result<(), Failed> {
    let m = Meeting::options().max_concurrency(4).remote();
    let (a, b) = (temp_path("meet-a"), temp_path("meet-b"));
    let first = m.meet(a.clone(), b.clone());
    let second = m.meet(b.clone(), a.clone());
    let met = prism::get_all_blocking(&[first, second])?;
    let _ = (std::fs::remove_file(&a), std::fs::remove_file(&b));
    ensure(
        met == vec![true, true],
        "two &self calls ran at the same time",
    )?;
    let bumps: Vec<ObjectRef<u64>> = (0..200).map(|_| m.bump()).collect();
    prism::get_all_blocking(&bumps)?;
    ensure(
        m.count().get_blocking()? == 200,
        "&mut self calls stay exclusive",
    )?;
    let nested: Vec<ObjectRef<u64>> = (0..8).map(|i| m.five_plus(i)).collect();
    let values = prism::get_all_blocking(&nested)?;
    ensure(
        values == (5..13).collect::<Vec<_>>(),
        format!("nested gets: {values:?}"),
    )
}

fn concurrency_needs_a_sync_actor() -> Result<(), Failed> {
    let alone = Lonely::remote();
    ensure(alone.get().get_blocking()? == 0, "one at a time is fine")?;
    let threaded = Lonely::options().max_concurrency(2).remote();
    let e = task_error(threaded.get().get_blocking())?;
    let text = e.to_string();
    ensure(matches!(e, TaskError::ActorDied { .. }), text.clone())?;
    ensure(
        text.contains("must be Sync") && text.contains("Lonely"),
        text,
    )
}

/// An async actor (it has `async` methods): not `Sync`, as one event loop runs its calls.
#[actor]
struct Sleeper {
    running: std::cell::Cell<u64>,
    most: std::cell::Cell<u64>,
    count: u64,
}

#[actor]
impl Sleeper {
    fn new() -> Self {
        Sleeper {
            running: std::cell::Cell::new(0),
            most: std::cell::Cell::new(0),
            count: 0,
        }
    }

    /// Sleeps `ms` on the event loop; gives the most calls seen running at once and the
    /// threads of the worker process.
    async fn nap(&self, ms: u64) -> (u64, u64) {
        self.running.set(self.running.get() + 1);
        self.most.set(self.most.get().max(self.running.get()));
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.running.set(self.running.get() - 1);
        (self.most.get(), common::proc_status("Threads:"))
    }

    /// Exclusive across its await: no update is lost however the calls interleave.
    async fn bump(&mut self) -> u64 {
        let seen = self.count;
        tokio::task::yield_now().await;
        self.count = seen + 1;
        self.count
    }

    /// A plain method of an async actor: runs on the event loop too.
    fn count(&self) -> u64 {
        self.count
    }

    /// Waits for the value inside `refs` while the actor's other calls go on.
    async fn wait_for(&self, refs: Vec<ObjectRef<u64>>) -> u64 {
        let values = prism::get_all(&refs).await.expect("the value");
        values.iter().sum()
    }

    /// A value after a sleep on the event loop.
    async fn slow_value(&self, ms: u64, value: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        value
    }

    async fn fail(&self) -> u64 {
        tokio::task::yield_now().await;
        panic!("an async method fails")
    }
}

fn async_actors_run_a_thousand_calls_on_one_loop() -> Result<(), Failed> {
    let sleeper = Sleeper::remote();
    let naps: Vec<ObjectRef<(u64, u64)>> = (0..1000).map(|_| sleeper.nap(300)).collect();
    let seen = prism::get_all_blocking(&naps)?;
    let most = seen.iter().map(|s| s.0).max().unwrap_or(0);
    let threads = seen.iter().map(|s| s.1).max().unwrap_or(0);
    // The calls arrive in batches while the first ones sleep: most are asleep together.
    ensure(
        most > 500,
        format!("at most {most} of 1,000 calls ran at once"),
    )?;
    ensure(
        threads < 16,
        format!("the async actor's worker has {threads} threads"),
    )?;
    let limited = Sleeper::options().max_concurrency(2).remote();
    let naps: Vec<ObjectRef<(u64, u64)>> = (0..20).map(|_| limited.nap(5)).collect();
    let most = prism::get_all_blocking(&naps)?
        .iter()
        .map(|s| s.0)
        .max()
        .unwrap_or(0);
    ensure(most == 2, format!("max_concurrency 2: {most} at once"))
}

fn async_actors_keep_mut_methods_exclusive_and_survive_panics() -> Result<(), Failed> {
    let sleeper = Sleeper::remote();
    let bumps: Vec<ObjectRef<u64>> = (0..300).map(|_| sleeper.bump()).collect();
    let mut values = prism::get_all_blocking(&bumps)?;
    values.sort_unstable();
    ensure(
        values == (1..=300).collect::<Vec<_>>() && sleeper.count().get_blocking()? == 300,
        "&mut self async methods have the state alone across their awaits",
    )?;
    let e = task_error(sleeper.fail().get_blocking())?;
    ensure(
        matches!(&e, TaskError::Panicked { function, message, .. }
            if function.ends_with("Sleeper::fail") && message.contains("an async method fails")),
        format!("the panic names the method: {e}"),
    )?;
    ensure(
        sleeper.count().get_blocking()? == 300,
        "the actor goes on after a panic",
    )
}

fn async_actors_await_objects_without_blocking_the_loop() -> Result<(), Failed> {
    let sleeper = Sleeper::remote();
    // The value comes from a later call on the same actor: a wait that blocked the loop
    // would never let it run.
    let later = sleeper.slow_value(200, 7);
    let waiting = sleeper.wait_for(vec![later.clone(), five::remote()]);
    ensure(
        prism::get_timeout_blocking(&waiting, Duration::from_secs(60))? == 12,
        "the awaiting call got the values made meanwhile",
    )
}

fn task_error<T: std::fmt::Debug>(r: prism::Result<T>) -> Result<TaskError, Failed> {
    match r {
        Err(prism::Error::Task(e)) => Ok(e),
        other => Err(format!("expected a task error, got {other:?}").into()),
    }
}

fn state_persists_and_calls_run_in_order() -> Result<(), Failed> {
    let c = Counter::remote(0);
    let refs: Vec<ObjectRef<u64>> = (0..200).map(|_| c.inc()).collect();
    let values = prism::get_all_blocking(&refs)?;
    ensure(
        values == (1..=200).collect::<Vec<_>>(),
        "200 increments in order",
    )?;
    ensure(c.get().get_blocking()? == 200, "state after the calls")?;
    ensure(
        c.pid().get_blocking()? != std::process::id(),
        "runs in a worker process",
    )
}

fn references_flow_into_actor_calls() -> Result<(), Failed> {
    let c = Counter::remote(10);
    let n = five::remote();
    let r = c.add(&n);
    let again = c.add(prism::put(7u64)?);
    ensure(
        r.get_blocking()? == 15 && again.get_blocking()? == 22,
        "refs as arguments",
    )?;
    // A call waiting for its argument holds back later calls from the same caller.
    let slow = Counter::remote(0);
    let late = slow.slow_inc(300);
    let first = c.add(&late);
    let second = c.inc();
    ensure(
        first.get_blocking()? == 23 && second.get_blocking()? == 24,
        "order kept behind a pending argument",
    )
}

fn handles_are_values() -> Result<(), Failed> {
    let c = Counter::remote(0);
    let d: ActorHandle<Counter> = c.clone();
    c.inc().get_blocking()?;
    d.inc().get_blocking()?;
    drop(c);
    ensure(d.get().get_blocking()? == 2, "both handles reach one actor")
}

fn handles_pass_into_tasks_and_other_actors() -> Result<(), Failed> {
    let c = Counter::remote(0);
    let tasks: Vec<ObjectRef<u64>> = (0..3).map(|_| bump_many::remote(c.clone(), 10)).collect();
    prism::get_all_blocking(&tasks)?;
    ensure(
        c.get().get_blocking()? == 30,
        "30 increments from three tasks",
    )?;
    let relay = Relay::remote(c.clone());
    ensure(
        relay.forward(5).get_blocking()? == 35,
        "an actor calls another",
    )?;
    let stored = prism::put(c.clone())?;
    let back: ActorHandle<Counter> = stored.get_blocking()?;
    ensure(
        back.get().get_blocking()? == 35,
        "a handle stored in an object",
    )
}

fn named_actors() -> Result<(), Failed> {
    let c = Counter::options().name("shared-counter").remote(100);
    c.inc().get_blocking()?;
    let found = prism::get_actor::<Counter>("shared-counter")?;
    ensure(found.get().get_blocking()? == 101, "the named actor")?;
    let same = Counter::options()
        .name("shared-counter")
        .get_if_exists(true)
        .remote(0);
    ensure(
        same.id() == c.id(),
        "get_if_exists returns the existing actor",
    )?;
    let wrong = prism::get_actor::<Picky>("shared-counter")
        .unwrap_err()
        .to_string();
    ensure(wrong.contains("Counter") && wrong.contains("Picky"), wrong)?;
    let missing = prism::get_actor::<Counter>("nobody")
        .unwrap_err()
        .to_string();
    ensure(missing.contains("nobody"), missing)?;
    prism::kill(&c)?;
    ensure(
        eventually(10, || {
            prism::get_actor::<Counter>("shared-counter").is_err()
        }),
        "a killed actor's name is free again",
    )
}

fn a_panicking_method_fails_alone() -> Result<(), Failed> {
    let c = Counter::remote(3);
    let e = task_error(c.boom().get_blocking())?;
    ensure(matches!(e, TaskError::Panicked { .. }), e.to_string())?;
    ensure(
        e.to_string().contains("Counter::boom") && e.to_string().contains("counter at 3 refuses"),
        e.to_string(),
    )?;
    ensure(c.inc().get_blocking()? == 4, "the actor lives on")
}

fn restarts_then_dies_for_good() -> Result<(), Failed> {
    let c = Counter::options().max_restarts(1).remote(10);
    c.inc().get_blocking()?;
    let e = task_error(c.crash().get_blocking())?;
    ensure(matches!(e, TaskError::ActorDied { .. }), e.to_string())?;
    ensure(e.to_string().contains("SIGABRT"), e.to_string())?;
    ensure(
        c.get().get_blocking()? == 10,
        "restarted: the constructor ran again",
    )?;
    let e = task_error(c.crash().get_blocking())?;
    ensure(e.to_string().contains("restart"), e.to_string())?;
    let e = task_error(c.get().get_blocking())?;
    let text = e.to_string();
    ensure(
        matches!(e, TaskError::ActorDied { .. }) && text.contains("Counter"),
        text.clone(),
    )?;
    ensure(text.contains("after 1 restart"), text)
}

fn calls_in_flight_are_retried_after_a_restart() -> Result<(), Failed> {
    let marker = temp_path("actor-abort-once");
    let c = Counter::options()
        .max_restarts(1)
        .max_task_retries(1)
        .remote(0);
    let r = c.abort_once(marker.clone());
    let value = r.get_blocking();
    let _ = std::fs::remove_file(&marker);
    ensure(value? == 1, "the call ran again on the restarted actor")
}

fn sigkill_in_the_middle_of_a_call() -> Result<(), Failed> {
    let c = Counter::options()
        .max_restarts(1)
        .max_task_retries(1)
        .remote(0);
    let pid = c.pid().get_blocking()?;
    let call = c.slow_inc(1_500);
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on the actor's worker process, which this test's cluster started.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    ensure(call.get_blocking()? == 1, "retried after the SIGKILL")?;
    let new_pid = c.pid().get_blocking()?;
    ensure(new_pid != pid, "a new process holds the actor")
}

fn kill_fails_every_call() -> Result<(), Failed> {
    let c = Counter::options().max_restarts(5).remote(0);
    let pid = c.pid().get_blocking()?;
    let slow = c.slow_inc(5_000);
    prism::kill(&c)?;
    let e = task_error(slow.get_blocking())?;
    ensure(e.to_string().contains("killed"), e.to_string())?;
    let e = task_error(c.inc().get_blocking())?;
    ensure(matches!(e, TaskError::ActorDied { .. }), e.to_string())?;
    ensure(
        eventually(10, || !alive(pid)),
        "the process is gone, not restarted",
    )
}

fn a_failing_constructor_fails_the_calls() -> Result<(), Failed> {
    let ok = Picky::remote("fine".to_string());
    ensure(ok.label().get_blocking()? == "fine", "a good constructor")?;
    let bad = Picky::remote(String::new());
    let e = task_error(bad.label().get_blocking())?;
    let text = e.to_string();
    ensure(matches!(e, TaskError::ActorDied { .. }), text.clone())?;
    ensure(text.contains("an empty label is not allowed"), text)
}

fn a_constructor_whose_argument_failed_fails_the_calls() -> Result<(), Failed> {
    let bad = Picky::remote(no_label::remote());
    let e = task_error(bad.label().get_blocking())?;
    let text = e.to_string();
    ensure(text.contains("no label today"), text)
}

fn calls_queued_behind_a_blocked_call_run_after_it_in_order() -> Result<(), Failed> {
    let c = Counter::remote(0);
    let results: Vec<prism::ObjectRef<u64>> = (0..40)
        .map(|i| if i % 2 == 0 { c.add_five() } else { c.inc() })
        .collect();
    let values = prism::get_all_blocking(&results)?;
    let expected: Vec<u64> = (0..40u64)
        .scan(0, |v, i| {
            *v += if i % 2 == 0 { 5 } else { 1 };
            Some(*v)
        })
        .collect();
    ensure(values == expected, format!("{values:?}"))
}

fn dropping_the_last_handle_stops_the_actor() -> Result<(), Failed> {
    let c = Counter::remote(0);
    let pid = c.pid().get_blocking()?;
    let pending = c.slow_inc(200);
    drop(c);
    ensure(pending.get_blocking()? == 1, "calls already made still run")?;
    ensure(
        eventually(10, || !alive(pid)),
        "the actor's process stopped",
    )
}

fn a_detached_actor_outlives_its_last_handle() -> Result<(), Failed> {
    let c = Counter::options()
        .lifetime(prism::Lifetime::Detached)
        .remote(0);
    let pid = c.pid().get_blocking()?;
    let id = c.id();
    drop(c);
    // As long as an ordinary actor takes to stop once its last handle goes.
    std::thread::sleep(std::time::Duration::from_millis(500));
    ensure(
        alive(pid),
        "the detached actor's process lives on without handles",
    )?;
    let listed = prism::state::list_actors()?;
    ensure(
        listed
            .iter()
            .any(|a| a.actor_id == id.to_string() && a.state == "ALIVE"),
        format!("it is listed alive: {listed:?}"),
    )?;
    // The unnamed one is unreachable now (as in Ray; it goes with the driver); a named one
    // is found again after its handles went, and killed.
    let named = Counter::options()
        .name("detached-counter")
        .lifetime(prism::Lifetime::Detached)
        .remote(0);
    let named_pid = named.pid().get_blocking()?;
    drop(named);
    prism::kill(&prism::get_actor::<Counter>("detached-counter")?)?;
    ensure(
        eventually(10, || !alive(named_pid)),
        "a killed detached actor stops",
    )
}

fn a_handle_lent_to_a_task_keeps_the_actor_alive() -> Result<(), Failed> {
    let c = Counter::remote(0);
    let pid = c.pid().get_blocking()?;
    // The driver's only handle goes into the task: the actor lives while the task holds it.
    let task = bump_later::remote(c, 300, 5);
    ensure(
        task.get_blocking()? == 5,
        "the task's calls reached the actor after the driver dropped its handle",
    )?;
    ensure(
        eventually(10, || !alive(pid)),
        "the actor stopped once the task's handle went too",
    )
}

fn an_actor_holding_a_handle_keeps_its_target_alive() -> Result<(), Failed> {
    let c = Counter::remote(0);
    let pid = c.pid().get_blocking()?;
    let relay = Relay::remote(c);
    // Long enough for the driver's own handle and the constructor's argument to be gone.
    std::thread::sleep(std::time::Duration::from_millis(300));
    ensure(alive(pid), "the relay's handle keeps the target")?;
    ensure(
        relay.forward(5).get_blocking()? == 5,
        "the relay reaches its target",
    )?;
    drop(relay);
    ensure(
        eventually(10, || !alive(pid)),
        "the target stopped once the relay (its last holder) stopped",
    )
}

fn main() {
    let config = prism::Config::new().num_cpus(2.0);
    let cases: &[Case] = &[
        (
            "state_persists_and_calls_run_in_order",
            state_persists_and_calls_run_in_order,
        ),
        (
            "references_flow_into_actor_calls",
            references_flow_into_actor_calls,
        ),
        ("handles_are_values", handles_are_values),
        (
            "calls_queued_behind_a_blocked_call_run_after_it_in_order",
            calls_queued_behind_a_blocked_call_run_after_it_in_order,
        ),
        ("named_actors", named_actors),
        (
            "handles_pass_into_tasks_and_other_actors",
            handles_pass_into_tasks_and_other_actors,
        ),
        (
            "a_panicking_method_fails_alone",
            a_panicking_method_fails_alone,
        ),
        ("restarts_then_dies_for_good", restarts_then_dies_for_good),
        (
            "calls_in_flight_are_retried_after_a_restart",
            calls_in_flight_are_retried_after_a_restart,
        ),
        (
            "sigkill_in_the_middle_of_a_call",
            sigkill_in_the_middle_of_a_call,
        ),
        ("kill_fails_every_call", kill_fails_every_call),
        (
            "a_failing_constructor_fails_the_calls",
            a_failing_constructor_fails_the_calls,
        ),
        (
            "a_constructor_whose_argument_failed_fails_the_calls",
            a_constructor_whose_argument_failed_fails_the_calls,
        ),
        (
            "dropping_the_last_handle_stops_the_actor",
            dropping_the_last_handle_stops_the_actor,
        ),
        (
            "a_detached_actor_outlives_its_last_handle",
            a_detached_actor_outlives_its_last_handle,
        ),
        (
            "a_handle_lent_to_a_task_keeps_the_actor_alive",
            a_handle_lent_to_a_task_keeps_the_actor_alive,
        ),
        (
            "an_actor_holding_a_handle_keeps_its_target_alive",
            an_actor_holding_a_handle_keeps_its_target_alive,
        ),
        (
            "concurrent_actors_run_calls_at_once",
            concurrent_actors_run_calls_at_once,
        ),
        (
            "concurrency_needs_a_sync_actor",
            concurrency_needs_a_sync_actor,
        ),
        (
            "async_actors_run_a_thousand_calls_on_one_loop",
            async_actors_run_a_thousand_calls_on_one_loop,
        ),
        (
            "async_actors_keep_mut_methods_exclusive_and_survive_panics",
            async_actors_keep_mut_methods_exclusive_and_survive_panics,
        ),
        (
            "async_actors_await_objects_without_blocking_the_loop",
            async_actors_await_objects_without_blocking_the_loop,
        ),
    ];
    common::run(config, cases)
}
