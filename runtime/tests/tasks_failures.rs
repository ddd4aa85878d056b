//! Failures with real worker processes: every error names the function and the task.
//! Panics, workers that die mid-task (retried, then `WorkerDied`), values that fail rkyv
//! validation, unknown functions, failure propagation, cancellation and infeasible demands.

mod common;

use std::time::Duration;

use common::{Case, ensure, temp_path};
use libtest_mimic::Failed;
use prism::__private::{ArgSlot, TaskOptions, submit};
use prism::{ObjectRef, TaskError, remote};

#[remote]
fn boom(message: String) -> u64 {
    panic!("{message}")
}

#[remote]
fn add_one(x: u64) -> u64 {
    x + 1
}

#[remote(max_retries = 2)]
fn always_abort() -> u64 {
    std::process::abort()
}

/// Aborts the first time (no marker yet), succeeds after its retry.
#[remote(max_retries = 1)]
fn abort_once(marker: String) -> u64 {
    if std::fs::metadata(&marker).is_err() {
        std::fs::write(&marker, b"died once").expect("write marker");
        std::process::abort();
    }
    7
}

/// Panics the first time, succeeds after a retry: only with `retry_exceptions`.
#[remote(max_retries = 1, retry_exceptions = true)]
fn panic_once(marker: String) -> u64 {
    if std::fs::metadata(&marker).is_err() {
        std::fs::write(&marker, b"panicked once").expect("write marker");
        panic!("first attempt fails");
    }
    8
}

#[remote(num_cpus = 0, resources(slot = 1))]
fn hold_slot(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    1
}

#[remote(num_cpus = 0, resources(slot = 1))]
fn touch(marker: String) -> u64 {
    std::fs::write(&marker, b"ran").expect("write marker");
    2
}

fn task_error(result: prism::Result<impl std::fmt::Debug>) -> Result<TaskError, Failed> {
    match result {
        Err(prism::Error::Task(e)) => Ok(e),
        other => Err(format!("expected a task error, got {other:?}").into()),
    }
}

fn a_panic_reaches_get_with_function_and_message() -> Result<(), Failed> {
    let r = boom::remote("the answer is not 42".to_string());
    let e = task_error(r.get_blocking())?;
    let text = e.to_string();
    ensure(
        matches!(e, TaskError::Panicked { .. }),
        format!("panicked: {text}"),
    )?;
    ensure(
        text.contains("boom") && text.contains("the answer is not 42"),
        text.clone(),
    )?;
    ensure(e.task() == r.id().task, "names the task")
}

fn a_failure_propagates_to_dependent_tasks() -> Result<(), Failed> {
    let failed = boom::remote("upstream".to_string());
    let first = add_one::remote(&failed);
    let second = add_one::remote(&first);
    let e = task_error(second.get_blocking())?;
    ensure(
        e.function().ends_with("boom"),
        format!("names the failing function: {e}"),
    )?;
    ensure(e.to_string().contains("upstream"), e.to_string())
}

fn a_dead_worker_is_retried_then_reported() -> Result<(), Failed> {
    let marker = temp_path("abort-once");
    let r = abort_once::remote(marker.clone());
    ensure(r.get_blocking()? == 7, "succeeds on its retry")?;
    let _ = std::fs::remove_file(marker);

    let r = always_abort::remote();
    let e = task_error(r.get_blocking())?;
    let text = e.to_string();
    match e {
        TaskError::WorkerDied {
            attempts,
            ref reason,
            ..
        } => {
            ensure(attempts == 3, format!("1 run + 2 retries: {text}"))?;
            ensure(
                reason.contains("SIGABRT"),
                format!("names the signal: {text}"),
            )?;
        }
        other => return Err(format!("expected WorkerDied, got {other}").into()),
    }
    ensure(text.contains("always_abort"), text.clone())?;
    // The pool replaced the dead workers.
    ensure(
        add_one::remote(1).get_blocking()? == 2,
        "the node still runs tasks",
    )
}

fn panics_are_retried_only_when_asked() -> Result<(), Failed> {
    let marker = temp_path("panic-once");
    let r = panic_once::remote(marker.clone());
    let value = r.get_blocking();
    let _ = std::fs::remove_file(marker);
    ensure(value? == 8, "retried after the panic")
}

fn invalid_argument_bytes_are_a_clear_error() -> Result<(), Failed> {
    // Bytes that are not an archived u64 (too short), sent under add_one's real name.
    let mut garbage = prism::__private::AlignedVec::new();
    garbage.extend_from_slice(&[0xff]);
    let refs = submit(
        add_one::__NAME,
        add_one::__HASH,
        vec![ArgSlot::Value(Ok(garbage))],
        &TaskOptions::default(),
        1,
    );
    let r: ObjectRef<u64> = ObjectRef::from_raw(refs.into_iter().next().expect("one return"));
    let e = task_error(r.get_blocking())?;
    let text = e.to_string();
    ensure(matches!(e, TaskError::InvalidValue { .. }), text.clone())?;
    ensure(
        text.contains("add_one") && text.contains("argument 0 (x: u64)"),
        text,
    )
}

fn reading_as_the_wrong_type_is_a_typed_error() -> Result<(), Failed> {
    let r = prism::put(String::from("not a vector of u64"))?;
    let wrong: ObjectRef<Vec<u64>> = r.__cast();
    let e = task_error(wrong.get_blocking())?;
    ensure(matches!(e, TaskError::InvalidValue { .. }), e.to_string())?;
    ensure(e.to_string().contains("Vec<u64>"), e.to_string())
}

fn an_unknown_function_is_named() -> Result<(), Failed> {
    let refs = submit("no_such::function", 1, vec![], &TaskOptions::default(), 1);
    let r: ObjectRef<u64> = ObjectRef::from_raw(refs.into_iter().next().expect("one return"));
    let e = task_error(r.get_blocking())?;
    ensure(
        matches!(e, TaskError::UnknownFunction { .. }),
        e.to_string(),
    )?;
    ensure(e.to_string().contains("no_such::function"), e.to_string())?;

    let refs = submit(
        add_one::__NAME,
        add_one::__HASH ^ 1,
        vec![],
        &TaskOptions::default(),
        1,
    );
    let r: ObjectRef<u64> = ObjectRef::from_raw(refs.into_iter().next().expect("one return"));
    let e = task_error(r.get_blocking())?;
    ensure(e.to_string().contains("signature differs"), e.to_string())
}

fn invalid_options_fail_the_call() -> Result<(), Failed> {
    let r = add_one::options().num_cpus(-1.0).remote(1);
    let e = task_error(r.get_blocking())?;
    ensure(matches!(e, TaskError::InvalidOptions { .. }), e.to_string())?;
    ensure(e.to_string().contains("num_cpus"), e.to_string())
}

fn cancel_a_queued_task_and_force_cancel_a_running_one() -> Result<(), Failed> {
    // The node has one `slot`: the holder runs, the second waits in the queue.
    let holder = hold_slot::remote(60_000);
    let marker = temp_path("never-runs");
    let queued = touch::remote(marker.clone());
    std::thread::sleep(Duration::from_millis(200));
    prism::cancel(&queued)?;
    let e = task_error(queued.get_blocking())?;
    ensure(matches!(e, TaskError::Cancelled { .. }), e.to_string())?;
    ensure(e.to_string().contains("touch"), e.to_string())?;

    // A plain cancel leaves a running task alone; a forced one kills its worker.
    prism::cancel(&holder)?;
    let still = prism::get_timeout_blocking(&holder, Duration::from_millis(200));
    ensure(
        still.as_ref().is_err_and(|e| e.is_timeout()),
        format!("still running: {still:?}"),
    )?;
    prism::cancel_force(&holder)?;
    let e = task_error(holder.get_blocking())?;
    ensure(matches!(e, TaskError::Cancelled { .. }), e.to_string())?;
    ensure(
        std::fs::metadata(&marker).is_err(),
        "the cancelled task never ran",
    )?;

    // The slot is free again and the node works.
    let after = touch::remote(marker.clone());
    ensure(after.get_blocking()? == 2, "runs after the cancel")?;
    let _ = std::fs::remove_file(marker);
    Ok(())
}

/// Creates `marker`, then sleeps `ms` milliseconds on a CPU.
#[remote]
fn nap(marker: String, ms: u64) -> u64 {
    let _ = std::fs::write(&marker, b"started");
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Submits a child (owned by this worker, pushed to a leased one), cancels it by force once
/// it runs, and says how its `get` ended.
#[remote]
fn force_cancel_own_child(marker: String) -> String {
    let child = nap::remote(marker.clone(), 60_000);
    let started = std::time::Instant::now();
    // Working without calling into the runtime: the child starts all the same.
    while std::fs::metadata(&marker).is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            return "the child did not start within 20 s".into();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Err(e) = prism::cancel_force(&child) {
        return format!("cancel_force failed: {e}");
    }
    match prism::get_timeout_blocking(&child, Duration::from_secs(20)) {
        Ok(ms) => format!("the child ran to its end ({ms} ms)"),
        Err(e) => e.to_string(),
    }
}

fn a_worker_force_cancels_a_child_it_owns() -> Result<(), Failed> {
    // The child runs on a worker leased to its parent: the node kills that worker, and the
    // child fails as cancelled (not as a dead worker's task run again).
    let marker = temp_path("child-started");
    let ended = force_cancel_own_child::remote(marker.clone()).get_blocking()?;
    let _ = std::fs::remove_file(marker);
    ensure(ended.contains("cancelled"), ended)
}

/// Makes `started`, sleeps `ms`, then makes `finished`.
#[remote]
fn slow_child(started: String, finished: String, ms: u64) -> u64 {
    let _ = std::fs::write(started, b"");
    std::thread::sleep(Duration::from_millis(ms));
    let _ = std::fs::write(finished, b"");
    ms
}

/// The first run submits a slow child, waits until it runs and dies; the run after says so.
#[remote(max_retries = 1)]
fn dies_while_its_child_runs(dir: String) -> String {
    if !common::first_run(&dir) {
        return "run again".into();
    }
    let started = format!("{dir}/child-started");
    let _child = slow_child::remote(started.clone(), format!("{dir}/child-finished"), 2_000);
    common::wait_for_file(&started);
    std::process::abort();
}

fn a_dead_owner_s_running_child_is_stopped_with_it() -> Result<(), Failed> {
    // The child ran on a worker leased to its parent: with the parent gone its end has
    // nowhere to go, so the node kills that worker (as Ray does) instead of letting it run
    // on, and frees its CPU.
    let dir = temp_path("dead-owner");
    std::fs::create_dir(&dir)?;
    let said = dies_while_its_child_runs::remote(dir.clone()).get_blocking();
    let started = std::path::Path::new(&dir).join("child-started").exists();
    std::thread::sleep(Duration::from_millis(2_500));
    let finished = std::path::Path::new(&dir).join("child-finished").exists();
    let _ = std::fs::remove_dir_all(&dir);
    ensure(said? == "run again", "the parent runs again")?;
    ensure(started, "the child started before its parent died")?;
    ensure(!finished, "the orphaned child ran to its end")
}

fn an_infeasible_demand_is_reported_with_what_the_node_has() -> Result<(), Failed> {
    let r = add_one::options().num_cpus(64.0).remote(1);
    let err = prism::get_timeout_blocking(&r, Duration::from_millis(300)).unwrap_err();
    let text = err.to_string();
    ensure(err.is_timeout(), text.clone())?;
    ensure(
        text.contains("infeasible") && text.contains("CPU: 64") && text.contains("CPU: 2"),
        text.clone(),
    )?;
    let r = add_one::options().resources("tpu", 1.0).remote(1);
    let text = prism::get_timeout_blocking(&r, Duration::from_millis(100))
        .unwrap_err()
        .to_string();
    ensure(
        text.contains("infeasible") && text.contains("tpu: 1"),
        text.clone(),
    )?;
    prism::cancel(&r)?;
    ensure(
        r.get_blocking().is_err_and(|e| e.is_cancelled()),
        "an infeasible task can be cancelled",
    )
}

fn main() {
    let config = prism::Config::new().num_cpus(2.0).resource("slot", 1.0);
    let cases: &[Case] = &[
        (
            "a_panic_reaches_get_with_function_and_message",
            a_panic_reaches_get_with_function_and_message,
        ),
        (
            "a_failure_propagates_to_dependent_tasks",
            a_failure_propagates_to_dependent_tasks,
        ),
        (
            "a_dead_worker_is_retried_then_reported",
            a_dead_worker_is_retried_then_reported,
        ),
        (
            "panics_are_retried_only_when_asked",
            panics_are_retried_only_when_asked,
        ),
        (
            "invalid_argument_bytes_are_a_clear_error",
            invalid_argument_bytes_are_a_clear_error,
        ),
        (
            "reading_as_the_wrong_type_is_a_typed_error",
            reading_as_the_wrong_type_is_a_typed_error,
        ),
        ("an_unknown_function_is_named", an_unknown_function_is_named),
        (
            "invalid_options_fail_the_call",
            invalid_options_fail_the_call,
        ),
        (
            "cancel_a_queued_task_and_force_cancel_a_running_one",
            cancel_a_queued_task_and_force_cancel_a_running_one,
        ),
        (
            "a_worker_force_cancels_a_child_it_owns",
            a_worker_force_cancels_a_child_it_owns,
        ),
        (
            "a_dead_owner_s_running_child_is_stopped_with_it",
            a_dead_owner_s_running_child_is_stopped_with_it,
        ),
        (
            "an_infeasible_demand_is_reported_with_what_the_node_has",
            an_infeasible_demand_is_reported_with_what_the_node_has,
        ),
    ];
    common::run(config, cases)
}
