//! The shared-memory object store with real worker processes: large objects (>= 100 KiB) live
//! in shared memory and are read without copying (`get_archived`, `&Archived<T>` parameters),
//! task returns above the threshold go there too, objects are freed with their last reference,
//! and a value larger than the store fails with `ObjectTooLarge` (a put) or a task error naming
//! the return value (a return).

mod common;

use common::{Case, ensure, eventually, rss_anon};
use libtest_mimic::Failed;
use prism::{Archived, Location, ObjectRef, remote};

const MIB: usize = 1 << 20;

/// Sums a large vector through a zero-copy view; returns (sum, private memory of the worker).
#[remote]
fn sum_view(values: &Archived<Vec<f32>>) -> (f64, u64) {
    let sum = values.iter().map(|v| f64::from(v.to_native())).sum();
    (sum, rss_anon())
}

#[remote]
fn make_big(n: u64, value: u32) -> Vec<u32> {
    vec![value; n as usize]
}

#[remote]
fn first_and_len(values: Vec<u32>) -> (u32, u64) {
    (values[0], values.len() as u64)
}

/// Reads a large object made by another task, through `get` inside a task.
#[remote]
fn nested_read(n: u64) -> u64 {
    let big = make_big::remote(n, 3);
    let view = prism::get_archived_blocking(&big).expect("view in a worker");
    view.iter().map(|v| u64::from(v.to_native())).sum()
}

fn large_objects_are_shared_and_read_without_copies() -> Result<(), Failed> {
    let n = 64 * MIB / 4; // 64 MiB of f32
    let data: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();
    let expected: f64 = data.iter().map(|v| f64::from(*v)).sum();
    let r = prism::put(data)?;
    let view = prism::get_archived_blocking(&r)?;
    ensure(view.is_shared(), "a 64 MiB object is in shared memory")?;
    ensure(view.len() == n, "the view has every element")?;
    drop(view);
    let calls: Vec<ObjectRef<(f64, u64)>> = (0..12).map(|_| sum_view::remote(&r)).collect();
    for (sum, private) in prism::get_all_blocking(&calls)? {
        ensure(sum == expected, format!("sum {sum} != {expected}"))?;
        ensure(
            private < 32 * MIB as u64,
            format!(
                "a worker holds {} MiB of private memory: the object was copied",
                private >> 20
            ),
        )?;
    }
    Ok(())
}

fn large_returns_go_to_shared_memory() -> Result<(), Failed> {
    let big = make_big::remote(MIB as u64, 7); // 4 MiB
    let small = make_big::remote(10, 7);
    ensure(
        prism::get_archived_blocking(&big)?.is_shared(),
        "4 MiB return is shared",
    )?;
    ensure(
        !prism::get_archived_blocking(&small)?.is_shared(),
        "40 B return is inline",
    )?;
    ensure(big.get_blocking()?.len() == MIB, "get copies it out whole")?;
    let (first, len) = first_and_len::remote(&big).get_blocking()?;
    ensure(first == 7 && len == MIB as u64, "passed on to another task")?;
    ensure(
        nested_read::remote(200_000).get_blocking()? == 600_000,
        "read inside a task",
    )
}

fn objects_are_freed_with_their_last_reference() -> Result<(), Failed> {
    let before = prism::memory()?;
    let r = prism::put(vec![1u8; 8 * MIB])?;
    let during = prism::memory()?;
    let info = during
        .objects
        .iter()
        .find(|o| o.id == r.id())
        .ok_or("the object is reported")?;
    ensure(info.location == Location::SharedMemory, format!("{info:?}"))?;
    ensure(
        info.size >= 8 * MIB as u64 && info.refs == 1 && info.function == "put" && info.owner == 0,
        format!("{info:?}"),
    )?;
    ensure(
        during.shared_bytes >= before.shared_bytes + 8 * MIB as u64,
        "counted in the store",
    )?;
    let reader = sum_len::remote(&r);
    drop(r);
    ensure(
        reader.get_blocking()? == 8 * MIB as u64,
        "a task still read it after the drop",
    )?;
    ensure(
        eventually(10, || {
            prism::memory().is_ok_and(|m| m.shared_bytes == before.shared_bytes)
        }),
        "the segment is freed after the last reference and reader",
    )?;

    // A zero-copy view holds the object like a reference: dropping the ObjectRef first leaves
    // the object (and its memory) counted until the view goes.
    let r = prism::put(vec![2u8; 8 * MIB])?;
    let view = prism::get_archived_blocking(&r)?;
    drop(r);
    std::thread::sleep(std::time::Duration::from_millis(50));
    ensure(
        prism::memory()?.shared_bytes >= before.shared_bytes + 8 * MIB as u64,
        "a live view keeps its object counted",
    )?;
    ensure(
        view.len() == 8 * MIB && view.iter().all(|b| *b == 2),
        "the view reads the bytes",
    )?;
    drop(view);
    ensure(
        eventually(10, || {
            prism::memory().is_ok_and(|m| m.shared_bytes == before.shared_bytes)
        }),
        "freed with the view",
    )
}

#[remote]
fn sum_len(values: &Archived<Vec<u8>>) -> u64 {
    values.iter().map(|v| u64::from(*v)).sum()
}

#[remote]
fn square(x: u64) -> u64 {
    x * x
}

/// Submits children and returns their references (worker-owned refs inside a return value).
#[remote]
fn spawn_children(n: u64) -> Vec<ObjectRef<u64>> {
    (0..n).map(square::remote).collect()
}

/// Submits children, lets them end while it works on, and returns their references: the
/// children are done (and their ends read) before the returned value is dropped.
#[remote]
fn spawn_children_then_work(n: u64) -> Vec<ObjectRef<u64>> {
    let children: Vec<ObjectRef<u64>> = (0..n).map(square::remote).collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    children
}

/// A task that submits children and returns their references.
type Spawner = fn(u64) -> ObjectRef<Vec<ObjectRef<u64>>>;

/// Reads every reference inside the value it was given.
#[remote]
fn sum_refs(refs: Vec<ObjectRef<u64>>) -> u64 {
    prism::get_all_blocking(&refs)
        .expect("nested refs")
        .iter()
        .sum()
}

fn references_inside_objects_keep_their_targets_alive() -> Result<(), Failed> {
    let base = prism::owned_object_count()?;
    let refs: Vec<ObjectRef<u64>> = (0..1000).map(square::remote).collect();
    let container = prism::put(refs.clone())?;
    drop(refs);
    let inner: Vec<ObjectRef<u64>> = container.get_blocking()?;
    let expected: u64 = (0..1000u64).map(|x| x * x).sum();
    ensure(
        prism::get_all_blocking(&inner)?.iter().sum::<u64>() == expected,
        "read through the container",
    )?;
    drop(inner);
    ensure(
        sum_refs::remote(&container).get_blocking()? == expected,
        "a task reads them too",
    )?;

    drop(container);

    let spawners: [(Spawner, &str); 2] = [
        (spawn_children::remote, "refs a worker made and returned"),
        (
            spawn_children_then_work::remote,
            "refs to children that ended before their parent returned",
        ),
    ];
    for (spawn, what) in spawners {
        let made = spawn(50);
        let children = made.get_blocking()?;
        let values = prism::get_all_blocking(&children).map_err(|e| format!("{what}: {e}"))?;
        let total: u64 = values.iter().sum();
        ensure(total == (0..50u64).map(|x| x * x).sum::<u64>(), what)?;
    }
    ensure(
        eventually(10, || prism::owned_object_count().ok() == Some(base)),
        format!(
            "all freed with the containers: {:?} left",
            prism::owned_object_count()? - base
        ),
    )
}

fn references_inside_arguments_live_until_the_task_ends() -> Result<(), Failed> {
    let base = prism::owned_object_count()?;
    // Ready objects whose only handles go into the argument value and are dropped with it
    // right after submission: the task must still read them all.
    let refs: Vec<ObjectRef<u64>> = (0..200u64).map(prism::put).collect::<prism::Result<_>>()?;
    let total = sum_refs::remote(refs);
    ensure(
        total.get_blocking()? == (0..200u64).sum::<u64>(),
        "the task read every reference",
    )?;
    drop(total);
    ensure(
        eventually(10, || prism::owned_object_count().ok() == Some(base)),
        format!(
            "freed once the task ended: {:?} left",
            prism::owned_object_count()? - base
        ),
    )
}

fn full_stores_spill_to_disk_and_restore_on_read() -> Result<(), Failed> {
    // Three 100 MiB objects in a 256 MiB store: the least recently used one goes to disk.
    let objects: Vec<ObjectRef<Vec<u8>>> = (0..3u8)
        .map(|i| prism::put(vec![i; 100 * MIB]))
        .collect::<prism::Result<_>>()?;
    let report = prism::memory()?;
    let spilled: Vec<_> = report
        .objects
        .iter()
        .filter(|o| o.location == Location::Spilled)
        .collect();
    ensure(
        spilled.len() == 1 && spilled[0].id == objects[0].id(),
        format!("{spilled:?}"),
    )?;
    ensure(
        report.spilled_bytes >= 100 * MIB as u64,
        "spilled bytes counted",
    )?;
    ensure(
        report.shared_bytes <= report.capacity,
        "the store stays within capacity",
    )?;
    // Reading the spilled one brings it back (and spills another).
    let view = prism::get_archived_blocking(&objects[0])?;
    ensure(
        view.len() == 100 * MIB && view[12345] == 0,
        "restored intact",
    )?;
    drop(view);
    ensure(
        sum_len::remote(&objects[1]).get_blocking()? == 100 * MIB as u64,
        "a task reads one",
    )?;
    ensure(
        sum_len::remote(&objects[2]).get_blocking()? == 2 * 100 * MIB as u64,
        "and the other",
    )?;
    drop(objects);
    let after = prism::memory()?;
    ensure(
        after.spilled_bytes == 0,
        format!("spill files removed: {after:?}"),
    )
}

/// Reads the view, then dies holding it.
#[remote(max_retries = 0)]
fn die_holding_view(values: &Archived<Vec<u8>>) -> u64 {
    let first = u64::from(values[0]);
    if first < 255 {
        std::process::abort();
    }
    first
}

fn a_worker_dying_with_a_view_leaks_nothing() -> Result<(), Failed> {
    let before = prism::memory()?.shared_bytes;
    let r = prism::put(vec![9u8; 4 * MIB])?;
    let died = die_holding_view::remote(&r).get_blocking();
    ensure(
        died.as_ref().is_err_and(|e| e.is_worker_died()),
        format!("{died:?}"),
    )?;
    ensure(
        sum_len::remote(&r).get_blocking()? == 9 * 4 * MIB as u64,
        "the object is intact",
    )?;
    drop(r);
    ensure(
        eventually(10, || {
            prism::memory().is_ok_and(|m| m.shared_bytes == before)
        }),
        "and freed afterwards",
    )
}

/// Returns `bytes` zero bytes (a value larger than the store when asked).
#[remote]
fn zeros(bytes: u64) -> Vec<u8> {
    vec![0u8; bytes as usize]
}

fn a_value_beyond_capacity_fails_clearly() -> Result<(), Failed> {
    // The store of this test binary holds 256 MiB.
    let err = prism::put(vec![0u8; 300 * MIB]).unwrap_err();
    let text = err.to_string();
    ensure(
        matches!(err, prism::Error::ObjectTooLarge { .. }),
        text.clone(),
    )?;
    ensure(
        text.contains("268435456"),
        format!("names the capacity: {text}"),
    )?;
    let text = match zeros::remote(300 * MIB as u64).get_blocking() {
        Ok(v) => return Err(format!("a {} byte return was stored", v.len()).into()),
        Err(e) => e.to_string(),
    };
    ensure(
        text.contains("return value 0") && text.contains("268435456") && text.contains("zeros"),
        format!("a return names the task, the value and the capacity: {text}"),
    )?;
    // An argument passed by value goes through the store when large: too large for it, the
    // call fails naming the argument, the function and the capacity.
    let text = match first_and_len::remote(vec![0u32; 300 * MIB / 4]).get_blocking() {
        Ok(read) => return Err(format!("a 300 MiB argument was read: {read:?}").into()),
        Err(e) => e.to_string(),
    };
    ensure(
        text.contains("argument 0") && text.contains("268435456") && text.contains("first_and_len"),
        format!("an argument names the task, the argument and the capacity: {text}"),
    )?;
    let small = prism::put(vec![0u8; MIB])?;
    ensure(small.get_blocking()?.len() == MIB, "the store still works")
}

/// Freed segments are reused for later puts (see `SegmentPool`): the reused bytes are the new
/// object's, in the driver and in a worker, while an object still referenced is untouched.
fn reused_segments_hold_only_the_new_object() -> Result<(), Failed> {
    let kept = prism::put(vec![9u32; 1 << 20])?;
    for round in 0..4u32 {
        let first = prism::put(vec![round; 2 << 20])?;
        drop(first);
        let n = (1 << 20) + round as usize * 1000;
        let second = prism::put(vec![round + 100; n])?;
        let read = prism::get_blocking(&second)?;
        ensure(
            read.len() == n && read.iter().all(|&v| v == round + 100),
            format!("round {round}: the driver reads the new object whole"),
        )?;
        let (first_value, len) = first_and_len::remote(second).get_blocking()?;
        ensure(
            (first_value, len) == (round + 100, n as u64),
            format!("round {round}: a worker reads {first_value} x {len}"),
        )?;
    }
    let kept = prism::get_blocking(&kept)?;
    ensure(
        kept.iter().all(|&v| v == 9),
        "a live object is never reused",
    )
}

fn main() {
    let config = prism::Config::new()
        .num_cpus(2.0)
        .object_store_memory(256 * MIB as u64);
    let cases: &[Case] = &[
        (
            "reused_segments_hold_only_the_new_object",
            reused_segments_hold_only_the_new_object,
        ),
        (
            "large_objects_are_shared_and_read_without_copies",
            large_objects_are_shared_and_read_without_copies,
        ),
        (
            "large_returns_go_to_shared_memory",
            large_returns_go_to_shared_memory,
        ),
        (
            "objects_are_freed_with_their_last_reference",
            objects_are_freed_with_their_last_reference,
        ),
        (
            "a_value_beyond_capacity_fails_clearly",
            a_value_beyond_capacity_fails_clearly,
        ),
        (
            "references_inside_objects_keep_their_targets_alive",
            references_inside_objects_keep_their_targets_alive,
        ),
        (
            "references_inside_arguments_live_until_the_task_ends",
            references_inside_arguments_live_until_the_task_ends,
        ),
        (
            "full_stores_spill_to_disk_and_restore_on_read",
            full_stores_spill_to_disk_and_restore_on_read,
        ),
        (
            "a_worker_dying_with_a_view_leaks_nothing",
            a_worker_dying_with_a_view_leaks_nothing,
        ),
    ];
    // One at a time: the tests read the store's totals.
    common::run_with_threads(config, cases, Some(1))
}
