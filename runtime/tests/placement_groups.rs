//! Placement groups on an embedded cluster of 4 CPUs and 2 `disk`: reservations leave the
//! node's free resources and come back on removal; tasks and actors in a bundle use only what it
//! reserved; a group that does not fit waits, as do tasks submitted to it; removal fails what
//! waits in it. Cases run one at a time, since they share the node's resources.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Case, ensure};
use libtest_mimic::Failed;
use prism::{Bundle, ObjectRef, PlacementStrategy, actor, placement_group, remote};

/// Sleeps `ms`; returns when it ran, as (start, end) in microseconds since the epoch.
#[remote]
fn span(ms: u64) -> (u64, u64) {
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    };
    let start = now();
    std::thread::sleep(Duration::from_millis(ms));
    (start, now())
}

#[actor]
struct Counter {
    n: u64,
}

#[actor]
impl Counter {
    fn new() -> Self {
        Counter { n: 0 }
    }

    fn bump(&mut self) -> u64 {
        self.n += 1;
        self.n
    }
}

fn free(name: &str) -> f64 {
    prism::available_resources()
        .ok()
        .and_then(|r| r.get(name).copied())
        .unwrap_or(0.0)
}

fn ready(group: &prism::PlacementGroup) -> Result<bool, Failed> {
    Ok(group.wait_blocking(Duration::from_secs(10))?)
}

fn a_reservation_leaves_the_free_resources_until_removed() -> Result<(), Failed> {
    let before = (free("CPU"), free("disk"));
    let group = placement_group(
        vec![
            Bundle::new().cpus(1.0),
            Bundle::new().cpus(1.0).resource("disk", 1.0),
        ],
        PlacementStrategy::Pack,
    )?;
    ensure(ready(&group)?, "the group is reserved")?;
    ensure(
        (free("CPU"), free("disk")) == (before.0 - 2.0, before.1 - 1.0),
        format!(
            "reserved: CPU {} of {}, disk {} of {}",
            free("CPU"),
            before.0,
            free("disk"),
            before.1
        ),
    )?;
    prism::remove_placement_group(&group)?;
    ensure(
        (free("CPU"), free("disk")) == before,
        "the reservation went back",
    )
}

fn tasks_in_a_bundle_share_only_what_it_reserved() -> Result<(), Failed> {
    let group = placement_group(vec![Bundle::new().cpus(1.0)], PlacementStrategy::Pack)?;
    // Submitted before the group is known to be ready: they wait with it.
    let spans: Vec<ObjectRef<(u64, u64)>> = (0..4)
        .map(|_| span::options().placement(&group, 0).remote(100))
        .collect();
    let mut spans = prism::get_all_blocking(&spans)?;
    spans.sort_unstable();
    ensure(
        spans.windows(2).all(|w| w[0].1 <= w[1].0),
        format!("one CPU in the bundle: the tasks ran one after another: {spans:?}"),
    )?;
    // Outside the group the other three CPUs run tasks side by side.
    let outside: Vec<ObjectRef<(u64, u64)>> = (0..3).map(|_| span::remote(200)).collect();
    let mut outside = prism::get_all_blocking(&outside)?;
    outside.sort_unstable();
    ensure(
        outside.windows(2).any(|w| w[1].0 < w[0].1),
        format!("tasks outside the group overlap: {outside:?}"),
    )?;
    // An actor in any bundle of the group.
    let counter = Counter::options().placement_group(&group).remote();
    ensure(
        counter.bump().get_blocking()? == 1,
        "the actor in the group runs",
    )?;
    prism::remove_placement_group(&group)?;
    Ok(())
}

fn a_group_that_does_not_fit_waits_for_room() -> Result<(), Failed> {
    let big = placement_group(vec![Bundle::new().cpus(3.0)], PlacementStrategy::StrictPack)?;
    ensure(ready(&big)?, "3 of 4 CPUs")?;
    let second = placement_group(
        vec![Bundle::new().cpus(1.0), Bundle::new().cpus(1.0)],
        PlacementStrategy::Pack,
    )?;
    ensure(
        !second.wait_blocking(Duration::from_millis(300))?,
        "two more CPUs do not fit yet",
    )?;
    let waiting = span::options().placement(&second, 1).remote(1);
    prism::remove_placement_group(&big)?;
    ensure(
        ready(&second)?,
        "the second group fits after the first went",
    )?;
    waiting.get_blocking()?;
    // One node cannot hold two bundles that must be on different nodes.
    let apart = placement_group(
        vec![Bundle::new().cpus(1.0), Bundle::new().cpus(1.0)],
        PlacementStrategy::StrictSpread,
    )?;
    ensure(
        !apart.wait_blocking(Duration::from_millis(300))?,
        "strict spread on one node waits",
    )?;
    prism::remove_placement_group(&apart)?;
    prism::remove_placement_group(&second)?;
    Ok(())
}

fn removal_fails_what_waits_in_the_group() -> Result<(), Failed> {
    let group = placement_group(vec![Bundle::new().cpus(1.0)], PlacementStrategy::Pack)?;
    ensure(ready(&group)?, "reserved")?;
    let running = span::options().placement(&group, 0).remote(2_000);
    let queued = span::options().placement(&group, 0).remote(1);
    std::thread::sleep(Duration::from_millis(300));
    let removed_at = Instant::now();
    prism::remove_placement_group(&group)?;
    for (what, r) in [("queued", &queued), ("running", &running)] {
        let error = prism::get_blocking(r)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        ensure(
            error.contains("span") && error.contains(&format!("{:x} was removed", group.id())),
            format!("the {what} task reads: {error:?}"),
        )?;
    }
    ensure(
        removed_at.elapsed() < Duration::from_millis(1_500),
        "the running task was stopped, not waited for",
    )?;
    ensure(
        group.wait_blocking(Duration::from_millis(10)).is_err(),
        "a removed group never becomes ready",
    )?;
    let error = prism::get_blocking(&span::options().placement(&group, 3).remote(1))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure(
        error.contains("bundle 3") && error.contains("1 bundle(s)"),
        format!("a bundle the group lacks: {error:?}"),
    )?;
    ensure(
        placement_group(vec![], PlacementStrategy::Pack).is_err()
            && placement_group(vec![Bundle::new()], PlacementStrategy::Pack).is_err(),
        "no bundles, or an empty one, is refused",
    )
}

fn main() {
    let config = prism::Config::new().num_cpus(4.0).resource("disk", 2.0);
    let cases: &[Case] = &[
        (
            "a_reservation_leaves_the_free_resources_until_removed",
            a_reservation_leaves_the_free_resources_until_removed,
        ),
        (
            "tasks_in_a_bundle_share_only_what_it_reserved",
            tasks_in_a_bundle_share_only_what_it_reserved,
        ),
        (
            "a_group_that_does_not_fit_waits_for_room",
            a_group_that_does_not_fit_waits_for_room,
        ),
        (
            "removal_fails_what_waits_in_the_group",
            removal_fails_what_waits_in_the_group,
        ),
    ];
    common::run_with_threads(config, cases, Some(1))
}
