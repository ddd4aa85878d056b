//! A task's calls to an actor go from its worker straight to the actor's worker (Ray's direct
//! actor calls): in the order they were made, without the driver on their path, retried on the
//! restarted actor while `max_task_retries` lasts, and failing with the actor's death
//! otherwise; async actors and large arguments included. An embedded cluster of 4 CPUs, one
//! test at a time (one counts the driver's messages). (The same across nodes: `cluster_owners`.)

mod common;

use common::{Case, ensure};
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

    /// The length of `bytes`, counted in.
    fn add_len(&mut self, bytes: Vec<u8>) -> u64 {
        self.value += bytes.len() as u64;
        self.value
    }
}

/// An actor whose first process dies in `die_once`.
#[actor]
struct Phoenix {
    calls: u64,
}

#[actor]
impl Phoenix {
    fn new() -> Self {
        Phoenix { calls: 0 }
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }

    /// Exits the process when it is `first` (the actor's first incarnation); else its pid.
    fn die_once(&mut self, first: u32) -> u32 {
        if std::process::id() == first {
            std::process::exit(3);
        }
        self.calls += 1;
        std::process::id()
    }
}

/// An async actor: its calls run on one event loop.
#[actor]
struct Echo {
    seen: u64,
}

#[actor]
impl Echo {
    fn new() -> Self {
        Echo { seen: 0 }
    }

    async fn echo(&mut self, x: u64) -> u64 {
        self.seen += 1;
        x
    }
}

/// A counter whose constructor takes `ms` milliseconds.
#[actor]
struct Slow {
    value: u64,
}

#[actor]
impl Slow {
    fn new(ms: u64) -> Self {
        std::thread::sleep(std::time::Duration::from_millis(ms));
        Slow { value: 0 }
    }

    fn inc(&mut self) -> u64 {
        self.value += 1;
        self.value
    }

    fn get(&self) -> u64 {
        self.value
    }
}

/// Calls `slow.inc()` `times` times and ends without waiting for them.
#[remote(num_cpus = 0)]
fn fire_and_forget(slow: ActorHandle<Slow>, times: u64) -> u64 {
    for _ in 0..times {
        drop(slow.inc());
    }
    // Blocked a while, so that the node starts more workers than it has CPUs (for the other
    // tasks and for this one's child): idle beyond the CPUs once all is done.
    nap::remote(300).get_blocking().expect("the nap") + times
}

/// Sleeps `ms` milliseconds.
#[remote]
fn nap(ms: u64) -> u64 {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    0
}

/// Calls `counter.inc()` `times` times without waiting, then gathers the values.
#[remote]
fn call_many(counter: ActorHandle<Counter>, times: u64) -> Vec<u64> {
    let calls: Vec<ObjectRef<u64>> = (0..times).map(|_| counter.inc()).collect();
    prism::get_all_blocking(&calls).expect("the actor answers")
}

/// Asks the Phoenix its pid, then has it die once: (the first pid, what the call after the
/// death returned or why it failed, the call after that).
#[remote]
fn outlive(phoenix: ActorHandle<Phoenix>) -> (u32, Result<u32, String>, Result<u32, String>) {
    let first = phoenix.pid().get_blocking().expect("the first pid");
    let dying = phoenix.die_once(first);
    let after = phoenix.pid();
    let text = |r: prism::Result<u32>| r.map_err(|e| e.to_string());
    (
        first,
        text(dying.get_blocking()),
        text(after.get_blocking()),
    )
}

/// Puts `len` bytes and has the counter count them, twice (by reference and by value).
#[remote]
fn count_bytes(counter: ActorHandle<Counter>, len: usize) -> (u64, u64) {
    let bytes = prism::put(vec![7u8; len]).expect("put");
    let by_ref = counter.add_len(&bytes);
    let by_value = counter.add_len(vec![1u8; len]);
    (
        by_ref.get_blocking().expect("by reference"),
        by_value.get_blocking().expect("by value"),
    )
}

/// Calls the async actor `times` times: the values, in order.
#[remote]
fn echo_many(echo: ActorHandle<Echo>, times: u64) -> Vec<u64> {
    let calls: Vec<ObjectRef<u64>> = (0..times).map(|i| echo.echo(i)).collect();
    prism::get_all_blocking(&calls).expect("the async actor answers")
}

fn a_task_s_calls_reach_the_actor_in_order_without_the_driver() -> Result<(), Failed> {
    let counter = Counter::remote(0);
    ensure(counter.inc().get_blocking()? == 1, "the actor answers")?;
    let before = prism::worker_messages_received()?;
    let values = call_many::remote(counter.clone(), 5_000).get_blocking()?;
    let messages = prism::worker_messages_received()? - before;
    let expected: Vec<u64> = (2..5_002).collect();
    ensure(
        values == expected,
        format!(
            "the calls ran in the order they were made: {:?}...",
            &values[..values.len().min(10)]
        ),
    )?;
    println!("driver messages for a task's 5,000 calls: {messages}");
    // Embedded, this process is also the node that relays the actor's ends to the task (one
    // frame per call, passed on unread; the task's calls go in a few pushes): not two per
    // call, as when the driver owned them (9,944). Across nodes the driver hears none of
    // them (`cluster_owners`).
    ensure(
        messages < 5_100,
        format!("the driver received {messages} messages for a task's 5,000 calls"),
    )?;
    // The driver's own calls still go in order after the task's.
    ensure(counter.inc().get_blocking()? == 5_002, "the driver's call")?;
    // The task's worker reported its calls' events: listed as actor tasks.
    let calls = prism::state::list_tasks()?
        .into_iter()
        .filter(|t| t.function.ends_with("Counter::inc"))
        .filter(|t| t.kind == prism::state::TaskType::ActorTask)
        .count();
    ensure(
        calls >= 5_000,
        format!("{calls} of the calls are listed as actor tasks"),
    )
}

fn a_call_in_flight_runs_again_on_the_restarted_actor() -> Result<(), Failed> {
    let phoenix = Phoenix::options()
        .max_restarts(1)
        .max_task_retries(1)
        .remote();
    let (first, dying, after) = outlive::remote(phoenix).get_blocking()?;
    let second = dying.map_err(|e| format!("the call retried on the new process failed: {e}"))?;
    ensure(
        second != first,
        "the call ran again in the restarted process",
    )?;
    ensure(
        after == Ok(second),
        format!("the next call reaches the new process: {after:?}"),
    )
}

fn calls_to_an_actor_that_died_for_good_fail_naming_it() -> Result<(), Failed> {
    let phoenix = Phoenix::remote();
    let (_, dying, after) = outlive::remote(phoenix).get_blocking()?;
    let dying = dying.err().unwrap_or_default();
    ensure(
        dying.contains("Phoenix") && dying.contains("died"),
        format!("the call in flight fails with the actor's death: {dying}"),
    )?;
    let after = after.err().unwrap_or_default();
    ensure(
        after.contains("Phoenix") && after.contains("died"),
        format!("a later call fails naming the dead actor: {after}"),
    )
}

fn a_task_passes_large_arguments_to_an_actor() -> Result<(), Failed> {
    let counter = Counter::remote(0);
    let len = 3 << 20;
    let (by_ref, by_value) = count_bytes::remote(counter, len).get_blocking()?;
    ensure(
        by_ref == len as u64 && by_value == 2 * len as u64,
        format!("the actor counted {by_ref} then {by_value} bytes"),
    )
}

fn a_task_calls_an_async_actor() -> Result<(), Failed> {
    let echo = Echo::remote();
    let values = echo_many::remote(echo, 1_000).get_blocking()?;
    ensure(
        values == (0..1_000).collect::<Vec<u64>>(),
        "the async actor answered every call, in order",
    )
}

fn a_call_to_a_killed_actor_fails() -> Result<(), Failed> {
    let counter = Counter::remote(0);
    ensure(counter.inc().get_blocking()? == 1, "the actor answers")?;
    prism::kill(&counter)?;
    match call_many::remote(counter, 10).get_blocking() {
        Err(prism::Error::Task(TaskError::Panicked { message, .. })) => ensure(
            message.contains("killed"),
            format!("the task's calls fail naming the kill: {message}"),
        ),
        other => Err(format!("the task's calls to a killed actor: {other:?}").into()),
    }
}

fn calls_a_task_left_behind_run_though_its_worker_idles() -> Result<(), Failed> {
    // The actor is up only after the tasks ended: their idle workers, more than the CPUs,
    // still owe it their calls.
    let slow = Slow::remote(3_000);
    let tasks: Vec<ObjectRef<u64>> = (0..8)
        .map(|_| fire_and_forget::remote(slow.clone(), 5))
        .collect();
    prism::get_all_blocking(&tasks)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let value = slow.get().get_blocking()?;
        if value == 40 {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("the actor ran {value} of the 40 calls left behind").into());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn main() {
    let config = prism::Config::new().num_cpus(4.0);
    let cases: &[Case] = &[
        (
            "a_task_s_calls_reach_the_actor_in_order_without_the_driver",
            a_task_s_calls_reach_the_actor_in_order_without_the_driver,
        ),
        (
            "a_call_in_flight_runs_again_on_the_restarted_actor",
            a_call_in_flight_runs_again_on_the_restarted_actor,
        ),
        (
            "calls_to_an_actor_that_died_for_good_fail_naming_it",
            calls_to_an_actor_that_died_for_good_fail_naming_it,
        ),
        (
            "a_task_passes_large_arguments_to_an_actor",
            a_task_passes_large_arguments_to_an_actor,
        ),
        ("a_task_calls_an_async_actor", a_task_calls_an_async_actor),
        (
            "a_call_to_a_killed_actor_fails",
            a_call_to_a_killed_actor_fails,
        ),
        (
            "calls_a_task_left_behind_run_though_its_worker_idles",
            calls_a_task_left_behind_run_though_its_worker_idles,
        ),
    ];
    common::run_with_threads(config, cases, Some(1));
}
