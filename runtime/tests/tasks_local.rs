//! Tasks on one machine, with real worker processes: fan-out, tree reduction, references as
//! arguments, several return values, options, put/get, wait with a timeout, resources.

mod common;

use std::time::Duration;

use common::{Case, ensure};
use libtest_mimic::Failed;
use prism::{ObjectRef, remote};

#[remote]
fn double(x: u64) -> u64 {
    x * 2
}

#[remote]
fn add(a: Vec<f64>, b: Vec<f64>) -> Vec<f64> {
    a.iter().zip(&b).map(|(x, y)| x + y).collect()
}

#[remote]
fn make_array(value: f64, n: u64) -> Vec<f64> {
    vec![value; n as usize]
}

#[remote(num_returns = 3)]
fn split(x: u64) -> (u64, String, Vec<u8>) {
    (x + 1, format!("#{x}"), vec![x as u8; 3])
}

/// 3,000 return objects from one call, as a count: no tuple type to compile.
#[remote(num_returns = 3000)]
fn thousands(base: u64) -> Vec<u64> {
    (base..base + 3000).collect()
}

/// Says it returns 5 values and returns 4.
#[remote(num_returns = 5)]
fn short_list() -> Vec<u64> {
    vec![1, 2, 3, 4]
}

#[remote(num_cpus = 0.5, max_retries = 0)]
async fn async_square(x: i64) -> i64 {
    tokio_free_yield().await;
    x * x
}

async fn tokio_free_yield() {}

#[remote]
fn sleep_then(ms: u64, value: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    value
}

/// Waits until `other` exists (or 20 s pass), after creating `mine`: true when both tasks ran
/// at the same time.
#[remote(num_cpus = 0, num_gpus = 0.5)]
fn rendezvous(mine: String, other: String) -> bool {
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

#[remote(num_cpus = 0, resources(widget = 1))]
fn uses_widget() -> u32 {
    std::process::id()
}

fn fan_out_10k() -> Result<(), Failed> {
    let refs: Vec<ObjectRef<u64>> = (0..10_000u64).map(double::remote).collect();
    let values = prism::get_all_blocking(&refs)?;
    ensure(values.len() == 10_000, "10,000 results")?;
    for (i, v) in values.iter().enumerate() {
        ensure(*v == 2 * i as u64, format!("result {i} is {v}"))?;
    }
    Ok(())
}

fn tree_reduction_1000() -> Result<(), Failed> {
    let mut level: Vec<ObjectRef<Vec<f64>>> = (0..1000)
        .map(|i| make_array::remote(i as f64, 16))
        .collect();
    let mut tasks = level.len();
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len() / 2 + 1);
        for pair in level.chunks(2) {
            if pair.len() == 2 {
                next.push(add::remote(&pair[0], &pair[1]));
                tasks += 1;
            } else {
                next.push(pair[0].clone());
            }
        }
        level = next;
    }
    let sum = level[0].get_blocking()?;
    let expected = (0..1000).sum::<u64>() as f64;
    ensure(
        sum == vec![expected; 16],
        format!("reduced to {:?}", &sum[..2]),
    )?;
    ensure(tasks == 1999, format!("{tasks} tasks"))
}

fn refs_and_values_mix() -> Result<(), Failed> {
    let a = make_array::remote(1.0, 3);
    let put = prism::put(vec![10.0, 20.0, 30.0])?;
    let sum = add::remote(&a, put);
    let again = add::remote(vec![1.0, 1.0, 1.0], &sum);
    ensure(
        prism::get_blocking(&again)? == vec![12.0, 22.0, 32.0],
        "mixed refs and values",
    )?;
    ensure(
        a.get_blocking()? == vec![1.0; 3],
        "a ref stays readable after being passed",
    )
}

fn several_return_values() -> Result<(), Failed> {
    let (n, s, v) = split::remote(6);
    ensure(n.get_blocking()? == 7, "first")?;
    ensure(s.get_blocking()? == "#6", "second")?;
    ensure(v.get_blocking()? == vec![6u8; 3], "third")
}

fn thousands_of_return_values_as_a_count() -> Result<(), Failed> {
    let refs = thousands::remote(10);
    ensure(refs.len() == 3000, format!("{} references", refs.len()))?;
    let values = prism::get_all_blocking(&refs)?;
    ensure(
        values == (10..3010).collect::<Vec<u64>>(),
        "every element its own object, in order",
    )?;
    // One alone, after the others are gone.
    let last = refs[2999].clone();
    drop(refs);
    ensure(last.get_blocking()? == 3009, "the last element")?;
    let short = short_list::remote();
    let err = short[0]
        .get_blocking()
        .expect_err("4 values for 5 returns is an error");
    ensure(
        err.to_string()
            .contains("returns 4 values, the caller expects 5"),
        err.to_string(),
    )
}

fn async_functions_and_per_call_options() -> Result<(), Failed> {
    let r = async_square::options()
        .num_cpus(1.0)
        .max_retries(1)
        .remote(-9);
    ensure(r.get_blocking()? == 81, "async remote fn")?;
    let r = double::options()
        .resources("widget", 1.0)
        .num_cpus(0.0)
        .remote(4);
    ensure(r.get_blocking()? == 8, "custom resource per call")
}

fn put_get_and_await() -> Result<(), Failed> {
    let r = prism::put(String::from("hello"))?;
    ensure(r.get_blocking()? == "hello", "put then get")?;
    let doubled = double::remote(21);
    let value = futures_lite_block_on(async move { doubled.await })?;
    ensure(value == 42, "await a ref")
}

fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    // Any executor can drive Prism's futures.
    futures::executor::block_on(f)
}

fn wait_with_timeout() -> Result<(), Failed> {
    let mut refs: Vec<ObjectRef<u64>> = (0..4).map(double::remote).collect();
    refs.push(sleep_then::options().num_cpus(0.0).remote(3_000, 1));
    let (done, pending) = prism::wait_blocking(&refs, 5, Some(Duration::from_millis(1_000)))?;
    ensure(
        done.len() == 4 && pending.len() == 1,
        format!("{} done, {} pending", done.len(), pending.len()),
    )?;
    ensure(pending[0] == refs[4], "the slow one is pending")?;
    let (done, _) = prism::wait_blocking(&refs, 2, None)?;
    ensure(done.len() == 2, "wait for 2 returns 2")?;
    let err = prism::wait_blocking(&refs, 6, None)
        .err()
        .map(|e| e.to_string());
    ensure(
        err.is_some_and(|e| e.contains("wait for 6 of 5")),
        "more than given is an error",
    )?;
    // Ray's loop, with the list moved in: every reference comes out exactly once, in order.
    let mut pending: Vec<ObjectRef<u64>> = (0..20).map(double::remote).collect();
    let expected = pending.clone();
    let mut seen = Vec::new();
    while !pending.is_empty() {
        let (done, rest) = prism::wait_blocking(pending, 1, None)?;
        ensure(done.len() == 1, "one at a time")?;
        seen.extend(done);
        pending = rest;
    }
    let mut sorted = seen.clone();
    sorted.sort_by_key(|r| expected.iter().position(|e| e == r));
    ensure(sorted == expected, "each reference comes out once")?;
    ensure(
        prism::get_all_blocking(&seen)?.len() == 20,
        "the references still read",
    )
}

fn fractional_gpus_share_one_gpu() -> Result<(), Failed> {
    let (a, b) = (common::temp_path("gpu-a"), common::temp_path("gpu-b"));
    let first = rendezvous::remote(a.clone(), b.clone());
    let second = rendezvous::remote(b.clone(), a.clone());
    let both = prism::get_all_blocking(&[first, second])?;
    let _ = (std::fs::remove_file(&a), std::fs::remove_file(&b));
    ensure(
        both == vec![true, true],
        "two tasks of 0.5 GPU ran together on 1 GPU",
    )
}

fn custom_resources_run_where_they_exist() -> Result<(), Failed> {
    let pids = prism::get_all_blocking(&(0..4).map(|_| uses_widget::remote()).collect::<Vec<_>>())?;
    ensure(
        pids.iter().all(|p| *p != std::process::id()),
        "ran in worker processes",
    )
}

fn get_timeout_on_a_slow_task_says_where_it_is() -> Result<(), Failed> {
    let slow = sleep_then::options().num_cpus(0.0).remote(2_000, 5);
    let err = prism::get_timeout_blocking(&slow, Duration::from_millis(100)).unwrap_err();
    ensure(err.is_timeout(), format!("timeout, got {err}"))?;
    let text = err.to_string();
    ensure(
        text.contains("sleep_then"),
        format!("names the function: {text}"),
    )?;
    ensure(slow.get_blocking()? == 5, "a later get still succeeds")
}

fn main() {
    let config = prism::Config::new()
        .num_cpus(2.0)
        .num_gpus(1.0)
        .resource("widget", 1.0);
    let cases: &[Case] = &[
        (
            "thousands_of_return_values_as_a_count",
            thousands_of_return_values_as_a_count,
        ),
        ("fan_out_10k", fan_out_10k),
        ("tree_reduction_1000", tree_reduction_1000),
        ("refs_and_values_mix", refs_and_values_mix),
        ("several_return_values", several_return_values),
        (
            "async_functions_and_per_call_options",
            async_functions_and_per_call_options,
        ),
        ("put_get_and_await", put_get_and_await),
        ("wait_with_timeout", wait_with_timeout),
        (
            "fractional_gpus_share_one_gpu",
            fractional_gpus_share_one_gpu,
        ),
        (
            "custom_resources_run_where_they_exist",
            custom_resources_run_where_they_exist,
        ),
        (
            "get_timeout_on_a_slow_task_says_where_it_is",
            get_timeout_on_a_slow_task_says_where_it_is,
        ),
    ];
    common::run(config, cases)
}
