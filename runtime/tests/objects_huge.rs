//! Objects past 4 GiB (rkyv's 64-bit relative pointers): a 4 GiB put read without copying in a
//! task and in the driver, and values too large for the store fail with `ObjectTooLarge`, in
//! the driver and in a worker, never with a panic; a value past the frame limit passed by
//! value goes through the store, from the driver and from a task.
//!
//! Needs about 9 GiB of free `/dev/shm` and memory; skipped with a message elsewhere.

mod common;

use common::{Case, ensure, rss_anon};
use libtest_mimic::Failed;
use prism::{Archived, remote};

const GIB: usize = 1 << 30;
/// Elements of the huge object: 8-byte words past 4 GiB, so that relative pointers and
/// lengths above `u32::MAX` are exercised (words, not bytes: a debug build checks and copies
/// an archived vector element by element).
const HUGE: usize = (4 * GIB + 4096) / 8;
/// Words per GiB.
const WORDS_PER_GIB: usize = GIB / 8;
/// The store of this test binary.
const CAPACITY: u64 = 6 * GIB as u64;

/// Bytes free in `/dev/shm` (0 when unknown).
fn shm_free() -> u64 {
    let Ok(path) = std::ffi::CString::new("/dev/shm") else {
        return 0;
    };
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stat` points to writable memory of the
    // right type; statvfs fills it when it returns 0, and only then is it read.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return 0;
    }
    // SAFETY: statvfs returned 0, so it initialised `stat`.
    let stat = unsafe { stat.assume_init() };
    stat.f_bavail.saturating_mul(stat.f_frsize)
}

/// Where the marker words of the huge object go: one per GiB, and the last word.
fn marks() -> Vec<(usize, u64)> {
    let mut marks: Vec<(usize, u64)> = (0..4)
        .map(|k| (k * WORDS_PER_GIB + 7, k as u64 + 1))
        .collect();
    marks.push((HUGE - 1, u64::MAX - 1));
    marks
}

/// Reads the huge object through a zero-copy view: its length, its marker words, and the
/// worker's private memory while the view is held.
#[remote]
fn probe(values: &Archived<Vec<u64>>, at: Vec<u64>) -> (u64, Vec<u64>, u64) {
    let picked = at.iter().map(|&i| values[i as usize].to_native()).collect();
    (values.len() as u64, picked, rss_anon())
}

/// Puts a value bigger than the store from inside a task: the error, as text.
#[remote]
fn put_too_much(bytes: u64) -> String {
    match prism::put(vec![0u8; bytes as usize]) {
        Ok(_) => "stored".to_string(),
        Err(e) => e.to_string(),
    }
}

/// The number of words in `words` and whether each is `word`.
#[remote]
fn words_of(words: Vec<u64>, word: u64) -> (u64, bool) {
    (words.len() as u64, words.iter().all(|&w| w == word))
}

/// From inside a task: passes `count` words by value to a child, its answer.
#[remote]
fn pass_words(count: u64) -> (u64, bool) {
    words_of::remote(vec![9u64; count as usize], 9)
        .get_blocking()
        .expect("the child reads its argument")
}

fn enough_room() -> bool {
    let free = shm_free();
    if free < 9 * GIB as u64 {
        eprintln!(
            "skipped: needs 9 GiB free in /dev/shm, has {} MiB",
            free >> 20
        );
        return false;
    }
    true
}

fn a_4_gib_object_is_read_without_copies() -> Result<(), Failed> {
    if !enough_room() {
        return Ok(());
    }
    // Zeroed pages cost nothing until written: only the marker pages are touched here.
    let mut data = vec![0u64; HUGE];
    for (at, value) in marks() {
        data[at] = value;
    }
    let r = prism::put_ref(&data)?;
    drop(data);
    let view = prism::get_archived_blocking(&r)?;
    ensure(view.is_shared(), "a 4 GiB object is in shared memory")?;
    ensure(
        view.len() == HUGE,
        format!("the driver sees {} words", view.len()),
    )?;
    for (at, value) in marks() {
        ensure(view[at] == value, format!("word {at} in the driver"))?;
    }
    drop(view);
    let at: Vec<u64> = marks().iter().map(|&(i, _)| i as u64).collect();
    let (len, picked, private) = probe::remote(&r, at).get_blocking()?;
    ensure(len == HUGE as u64, format!("the task sees {len} words"))?;
    let expected: Vec<u64> = marks().iter().map(|&(_, v)| v).collect();
    ensure(picked == expected, format!("the task reads {picked:?}"))?;
    ensure(
        private < 256 << 20,
        format!(
            "the worker holds {} MiB of private memory: the object was copied",
            private >> 20
        ),
    )
}

fn too_large_values_fail_with_an_error() -> Result<(), Failed> {
    if !enough_room() {
        return Ok(());
    }
    let too_much = CAPACITY as usize + GIB;
    let err = prism::put(vec![0u8; too_much]).unwrap_err();
    ensure(
        matches!(err, prism::Error::ObjectTooLarge { .. }),
        format!("the driver's put: {err}"),
    )?;
    let text = put_too_much::remote(too_much as u64).get_blocking()?;
    ensure(
        text.contains(&CAPACITY.to_string()),
        format!("a worker's put names the capacity: {text}"),
    )?;
    let small = prism::put(vec![1u8; 1 << 20])?;
    ensure(
        small.get_blocking()?.len() == 1 << 20,
        "the store still works",
    )
}

fn a_value_past_the_frame_limit_goes_by_reference() -> Result<(), Failed> {
    if !enough_room() {
        return Ok(());
    }
    // 640 MiB by value: more than a frame carries (512 MiB), so it goes through the store.
    let count = (640 << 20) / 8;
    let read = words_of::remote(vec![7u64; count], 7).get_blocking()?;
    ensure(
        read == (count as u64, true),
        format!("the task read {read:?}"),
    )?;
    let read = pass_words::remote(count as u64).get_blocking()?;
    ensure(
        read == (count as u64, true),
        format!("a task's child read {read:?}"),
    )
}

fn main() {
    let config = prism::Config::new()
        .num_cpus(2.0)
        .object_store_memory(CAPACITY);
    let cases: &[Case] = &[
        (
            "a_4_gib_object_is_read_without_copies",
            a_4_gib_object_is_read_without_copies,
        ),
        (
            "too_large_values_fail_with_an_error",
            too_large_values_fail_with_an_error,
        ),
        (
            "a_value_past_the_frame_limit_goes_by_reference",
            a_value_past_the_frame_limit_goes_by_reference,
        ),
    ];
    // One at a time: each needs most of the store.
    common::run_with_threads(config, cases, Some(1))
}
