//! Streaming generators on a 2-CPU local cluster: items reach the caller while the task runs,
//! in order, small and large; errors end the stream after the items made; backpressure pauses
//! the generator; a retry after its worker died skips the items delivered; actor methods and
//! tasks (as consumers) stream too; items may hold references to the generator's children; a
//! dropped stream leaves nothing behind.

mod common;

use std::time::Duration;

use common::{Case, ensure, eventually, temp_path};
use futures::StreamExt;
use libtest_mimic::Failed;
use prism::{ObjectRef, ObjectRefStream, Stream, actor, remote};

/// Items `0..n`, then waits for `gate` (when not empty) to exist before it ends.
#[remote]
fn count_then_wait(n: u64, gate: String) -> Stream<u64> {
    Stream::new((0..n).chain(std::iter::from_fn(move || {
        while !gate.is_empty() && !std::path::Path::new(&gate).exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    })))
}

#[remote]
fn squares(n: u64) -> Stream<u64> {
    Stream::new((0..n).map(|i| i * i))
}

/// `n` items of `len` bytes each, item `i` filled with `i`.
#[remote]
fn blocks(n: u32, len: u32) -> Stream<Vec<u8>> {
    Stream::new((0..n).map(move |i| vec![i as u8; len as usize]))
}

/// Two items, then a panic.
#[remote(max_retries = 0)]
fn fails_after_two() -> Stream<u32> {
    Stream::new((1..=3).inspect(|&i| {
        assert!(i < 3, "the generator broke at item {i}");
    }))
}

/// Items until one is an error.
#[remote]
fn errs_at_three() -> Stream<u32> {
    Stream::try_new((1..=5).map(|i| if i == 3 { Err("three is bad") } else { Ok(i) }))
}

/// Items `1..=n`, noting in `made` how many it has made so far.
#[remote(backpressure = 2)]
fn noted(n: u32, made: String) -> Stream<u32> {
    Stream::new((1..=n).inspect(move |i| {
        std::fs::write(&made, i.to_string()).expect("note the count");
    }))
}

/// Items `1..=n`; the first run's worker dies after item `die_after` (`marker` tells runs
/// apart).
#[remote(max_retries = 1)]
fn dies_once(n: u32, die_after: u32, marker: String) -> Stream<u32> {
    let first = !std::path::Path::new(&marker).exists();
    if first {
        std::fs::write(&marker, "ran").expect("mark the first run");
    }
    Stream::new((1..=n).inspect(move |&i| {
        if first && i == die_after + 1 {
            std::process::abort();
        }
    }))
}

/// Consumes a stream inside a task: the sum of `squares(n)`.
#[remote]
fn sum_of_squares(n: u64) -> u64 {
    squares::remote(n)
        .into_iter()
        .map(|item| item.and_then(|r| r.get_blocking()).expect("an item"))
        .sum()
}

#[remote]
fn square(x: u64) -> u64 {
    x * x
}

/// References to `n` children, each yielded once the child has ended (its last reference
/// in this worker goes with the item).
#[remote]
fn children_as_they_end(n: u64) -> Stream<ObjectRef<u64>> {
    Stream::new((0..n).map(|i| {
        let child = square::remote(i);
        child.get_blocking().expect("a child's value");
        child
    }))
}

#[actor]
struct Source {
    base: u64,
}

#[actor]
impl Source {
    fn new(base: u64) -> Self {
        Source { base }
    }

    fn items(&mut self, n: u64) -> Stream<u64> {
        self.base += 1000;
        let base = self.base;
        Stream::new((0..n).map(move |i| base + i))
    }
}

fn values<T: prism::Remotable>(stream: ObjectRefStream<T>) -> Result<Vec<T>, Failed> {
    let mut out = Vec::new();
    for item in stream {
        out.push(item?.get_blocking()?);
    }
    Ok(out)
}

/// The values of the stream's next `n` items.
fn take<T: prism::Remotable>(stream: &mut ObjectRefStream<T>, n: usize) -> Result<Vec<T>, Failed> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            stream
                .next_blocking()
                .ok_or("the stream ended early")??
                .get_blocking()?,
        );
    }
    Ok(out)
}

fn items_arrive_while_the_task_runs() -> Result<(), Failed> {
    let gate = temp_path("stream-gate");
    let mut stream = count_then_wait::remote(3, gate.clone());
    for want in 0..3 {
        let item = stream.next_blocking().ok_or("the stream ended early")??;
        ensure(item.get_blocking()? == want, format!("item {want}"))?;
    }
    let end = prism::wait_blocking(&[stream.completed().clone()], 1, Some(Duration::ZERO))?;
    ensure(
        end.0.is_empty(),
        "the task still runs after its three items were read",
    )?;
    std::fs::write(&gate, "open")?;
    ensure(stream.next_blocking().is_none(), "the stream ends")?;
    ensure(stream.next_blocking().is_none(), "and stays ended")?;
    ensure(
        stream.completed().get_blocking()? == 3,
        "the end object counts 3",
    )?;
    let _ = std::fs::remove_file(&gate);
    Ok(())
}

fn ten_thousand_small_items_in_order() -> Result<(), Failed> {
    let got = values(squares::remote(10_000))?;
    let want: Vec<u64> = (0..10_000).map(|i| i * i).collect();
    ensure(got == want, "10,000 squares in order, blocking")?;
    let got: Vec<u64> = futures::executor::block_on(async {
        let mut out = Vec::new();
        let mut stream = squares::remote(1_000);
        while let Some(item) = stream.next().await {
            out.push(item?.await?);
        }
        Ok::<_, prism::Error>(out)
    })?;
    ensure(
        got[..] == want[..1_000],
        "1,000 squares as a futures::Stream",
    )?;
    ensure(values(squares::remote(0))?.is_empty(), "an empty stream")
}

fn large_items_travel_through_shared_memory() -> Result<(), Failed> {
    let len = 2 << 20;
    for (i, item) in blocks::remote(5, len).into_iter().enumerate() {
        let view = prism::get_archived_blocking(&item?)?;
        ensure(view.is_shared(), format!("item {i} is in shared memory"))?;
        ensure(
            view.len() == len as usize && view.iter().all(|&b| b == i as u8),
            format!("item {i} holds its bytes"),
        )?;
    }
    Ok(())
}

fn a_failure_ends_the_stream_after_the_items_made() -> Result<(), Failed> {
    let mut stream = fails_after_two::remote();
    let first = take(&mut stream, 2)?;
    ensure(first == [1, 2], format!("two items first, got {first:?}"))?;
    let error = match stream.next_blocking() {
        Some(Err(e)) => e.to_string(),
        other => return Err(format!("expected the panic, got {other:?}").into()),
    };
    ensure(
        error.contains("the generator broke at item 3") && error.contains("fails_after_two"),
        error,
    )?;
    ensure(stream.next_blocking().is_none(), "nothing after the error")?;

    let mut stream = errs_at_three::remote();
    ensure(take(&mut stream, 2)? == [1, 2], "items before the error")?;
    let error = stream
        .next_blocking()
        .expect("the error")
        .err()
        .ok_or("an error")?;
    ensure(
        error.to_string().contains("item 3 failed: three is bad"),
        error.to_string(),
    )
}

fn backpressure_pauses_the_generator() -> Result<(), Failed> {
    let made = temp_path("stream-made");
    let count = || {
        std::fs::read_to_string(&made)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let mut stream = noted::remote(20, made.clone());
    ensure(eventually(10, || count() == 2), "two items made")?;
    std::thread::sleep(Duration::from_millis(300));
    ensure(
        count() == 2,
        format!("no more than the window while nobody reads: {}", count()),
    )?;
    // Asking for item 2 means item 1 was taken: one more may be made.
    for _ in 0..2 {
        stream.next_blocking().ok_or("an item")??;
    }
    ensure(
        eventually(10, || count() == 3),
        "a third item after one was taken",
    )?;
    std::thread::sleep(Duration::from_millis(300));
    ensure(count() == 3, format!("and no more: {}", count()))?;
    let rest: Vec<u32> = stream
        .into_iter()
        .map(|item| item.and_then(|r| r.get_blocking()))
        .collect::<Result<_, _>>()?;
    ensure(
        rest == (3..=20).collect::<Vec<_>>(),
        format!("the rest in order: {rest:?}"),
    )?;
    let _ = std::fs::remove_file(&made);

    // Without backpressure it runs to the end on its own.
    let made_free = temp_path("stream-made-free");
    let stream = noted::options()
        .backpressure(0)
        .remote(20, made_free.clone());
    ensure(
        eventually(10, || {
            std::fs::read_to_string(&made_free).ok().as_deref() == Some("20")
        }),
        "all 20 made with no limit",
    )?;
    ensure(values(stream)?.len() == 20, "and all read")?;
    let _ = std::fs::remove_file(&made_free);
    Ok(())
}

fn a_retry_skips_the_items_delivered() -> Result<(), Failed> {
    let marker = temp_path("stream-dies");
    let got = values(dies_once::remote(8, 3, marker.clone()))?;
    let _ = std::fs::remove_file(&marker);
    ensure(
        got == (1..=8).collect::<Vec<_>>(),
        format!("each item once, in order, across the retry: {got:?}"),
    )
}

fn items_may_hold_references_the_generator_owned() -> Result<(), Failed> {
    let refs = values(children_as_they_end::remote(20))?;
    let squares = prism::get_all_blocking(&refs)?;
    ensure(
        squares == (0..20u64).map(|i| i * i).collect::<Vec<_>>(),
        format!("{squares:?}"),
    )
}

fn actor_methods_and_tasks_stream_too() -> Result<(), Failed> {
    let source = Source::remote(0);
    ensure(
        values(source.items(3))? == [1000, 1001, 1002],
        "an actor method's stream",
    )?;
    ensure(
        values(source.items(2))? == [2000, 2001],
        "its state moved on",
    )?;
    // Backpressure 1: the method pauses after each item until it is taken; all arrive.
    let paced = source.with_backpressure(1);
    ensure(
        values(paced.items(50))? == (3000..3050).collect::<Vec<_>>(),
        "a paced method's stream",
    )?;
    let want: u64 = (0..500u64).map(|i| i * i).sum();
    ensure(
        sum_of_squares::remote(500).get_blocking()? == want,
        "a task read a stream it started",
    )
}

fn a_dropped_stream_leaves_nothing() -> Result<(), Failed> {
    let base = prism::owned_object_count()?;
    let made = temp_path("stream-dropped");
    let mut stream = noted::remote(10, made.clone());
    let first: ObjectRef<u32> = stream.next_blocking().ok_or("an item")??;
    drop(stream);
    // The paused generator runs to its end, and the items nobody took go.
    ensure(
        eventually(10, || {
            std::fs::read_to_string(&made).ok().as_deref() == Some("10")
        }),
        "the generator finished after its stream was dropped",
    )?;
    ensure(
        first.get_blocking()? == 1,
        "a taken item outlives its stream",
    )?;
    drop(first);
    let _ = std::fs::remove_file(&made);
    ensure(
        eventually(10, || prism::owned_object_count().ok() == Some(base)),
        format!(
            "{} objects left behind",
            prism::owned_object_count()?.saturating_sub(base)
        ),
    )
}

fn main() {
    let config = prism::Config::new().num_cpus(2.0);
    let cases: &[Case] = &[
        (
            "items_arrive_while_the_task_runs",
            items_arrive_while_the_task_runs,
        ),
        (
            "ten_thousand_small_items_in_order",
            ten_thousand_small_items_in_order,
        ),
        (
            "large_items_travel_through_shared_memory",
            large_items_travel_through_shared_memory,
        ),
        (
            "a_failure_ends_the_stream_after_the_items_made",
            a_failure_ends_the_stream_after_the_items_made,
        ),
        (
            "backpressure_pauses_the_generator",
            backpressure_pauses_the_generator,
        ),
        (
            "a_retry_skips_the_items_delivered",
            a_retry_skips_the_items_delivered,
        ),
        (
            "items_may_hold_references_the_generator_owned",
            items_may_hold_references_the_generator_owned,
        ),
        (
            "actor_methods_and_tasks_stream_too",
            actor_methods_and_tasks_stream_too,
        ),
        (
            "a_dropped_stream_leaves_nothing",
            a_dropped_stream_leaves_nothing,
        ),
    ];
    // One at a time: the dropped-stream case counts every object this driver owns.
    common::run_with_threads(config, cases, Some(1));
}
