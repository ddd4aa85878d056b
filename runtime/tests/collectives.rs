//! Collectives among actors on a 2-CPU local cluster: every collective gives every rank the
//! answer computed here, over buffers that cross many chunks; bad calls are clear errors; a
//! member killed during a collective fails it at every other rank, naming the dead rank,
//! within seconds; nothing stays in the session's shared memory.

mod common;
#[path = "common/member.rs"]
mod member;

use std::time::Duration;

use common::{Case, ensure};
use libtest_mimic::Failed;
use member::{all, input, start};
use prism::collective::Group;

fn every_collective_gives_every_rank_the_same_answer() -> Result<(), Failed> {
    let world = 3;
    let members = start("every-collective", world)?;
    // Longer than many chunks, and not a multiple of the group's size.
    let len = 300_001;
    let inputs: Vec<Vec<f64>> = (0..world).map(|r| input(r, len)).collect();
    for op in ["sum", "mean", "max", "min"] {
        let refs = (0..world)
            .map(|r| members[r as usize].allreduce(input(r, len), op.to_string()))
            .collect();
        let got = all(refs)?;
        let want: Vec<f64> = (0..len)
            .map(|i| {
                let values = inputs.iter().map(|input| input[i]);
                match op {
                    "sum" => values.sum(),
                    "mean" => values.sum::<f64>() / f64::from(world),
                    "max" => values.fold(f64::MIN, f64::max),
                    _ => values.fold(f64::MAX, f64::min),
                }
            })
            .collect();
        for (rank, buf) in got.iter().enumerate() {
            let wrong = buf
                .iter()
                .zip(&want)
                .position(|(a, b)| (a - b).abs() > 1e-9);
            ensure(
                wrong.is_none(),
                format!("{op}: rank {rank} differs at {wrong:?}"),
            )?;
        }
    }
    let refs = (0..world)
        .map(|r| members[r as usize].allreduce_f32(vec![r as f32 + 1.0; 70_000]))
        .collect();
    for buf in all(refs)? {
        ensure(buf.iter().all(|&v| v == 6.0), "f32 sums")?;
    }
    // Broadcast from rank 2: everyone ends with its buffer.
    let refs = (0..world)
        .map(|r| members[r as usize].broadcast(vec![r as f32; 100_003], 2))
        .collect();
    for buf in all(refs)? {
        ensure(buf.iter().all(|&v| v == 2.0), "broadcast from rank 2")?;
    }
    // Allgather: every rank's part in rank order.
    let part = 50_000;
    let refs = (0..world)
        .map(|r| members[r as usize].allgather(input(r, part)))
        .collect();
    let want: Vec<f64> = (0..world).flat_map(|r| input(r, part)).collect();
    for buf in all(refs)? {
        ensure(buf == want, "allgather in rank order")?;
    }
    // Reduce-scatter: rank r gets part r of the sum.
    let refs = (0..world)
        .map(|r| members[r as usize].reduce_scatter(input(r, part * 3), "sum".to_string()))
        .collect();
    for (rank, buf) in all(refs)?.into_iter().enumerate() {
        let inputs: Vec<Vec<f64>> = (0..world).map(|r| input(r, part * 3)).collect();
        let want: Vec<f64> = (rank * part..(rank + 1) * part)
            .map(|i| inputs.iter().map(|input| input[i]).sum())
            .collect();
        ensure(buf == want, format!("reduce-scatter part {rank}"))?;
    }
    let refs = (0..world).map(|r| members[r as usize].barrier()).collect();
    all(refs)?;
    Ok(())
}

fn bad_calls_are_clear_errors_and_a_group_of_one_works() -> Result<(), Failed> {
    let solo = start("solo", 1)?;
    let got = solo[0]
        .allreduce(vec![1.5, 2.5], "sum".to_string())
        .get_blocking()??;
    ensure(got == vec![1.5, 2.5], "a group of one keeps its buffer")?;
    let members = start("bad-calls", 2)?;
    let refs = (0..2)
        .map(|r| members[r].broadcast(vec![0.0; 4], 7))
        .collect::<Vec<_>>();
    for r in refs {
        let err = r.get_blocking()?.expect_err("root 7 of 2");
        ensure(
            err.contains("bad-calls") && err.contains("root 7"),
            format!("names the group and the root: {err}"),
        )?;
    }
    // Sizes that do not fit: the call's own check, before any traffic.
    let err = members[0]
        .reduce_scatter(vec![1.0; 5], "sum".to_string())
        .get_blocking()?
        .expect_err("5 elements do not split in 2");
    ensure(
        err.contains("reduce_scatter"),
        format!("names the call: {err}"),
    )?;
    let group = Group::create("driver", 2)?;
    let err = group.join(0).expect_err("the driver is no worker");
    ensure(err.to_string().contains("worker"), format!("{err}"))?;
    Ok(())
}

fn a_dead_member_fails_the_collective_at_every_rank() -> Result<(), Failed> {
    let world = 3;
    let members = start("dies", world)?;
    let (errors, took) = member::kill_rank_one_during_allreduce(&members, 200_000)?;
    for (r, err) in [0, 2].into_iter().zip(errors) {
        ensure(
            err.contains("rank 1") && err.contains("dies") && err.contains("allreduce"),
            format!("rank {r} names the group, the call and the dead rank: {err}"),
        )?;
    }
    ensure(
        took < Duration::from_secs(10),
        format!("failed within seconds, not {took:?}"),
    )?;
    // The communicator stays broken: the next call fails at once, the same way.
    let err = members[0].barrier().get_blocking()?.expect_err("broken");
    ensure(err.contains("rank 1"), err)?;
    Ok(())
}

fn nothing_stays_in_shared_memory() -> Result<(), Failed> {
    let members = start("leaves-nothing", 2)?;
    let refs = (0..2).map(|r| members[r].barrier()).collect();
    all(refs)?;
    let links: Vec<String> = std::fs::read_dir("/dev/shm")?
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|dir| {
            std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("collective-"))
        .collect();
    ensure(links.is_empty(), format!("link files left: {links:?}"))
}

fn main() {
    let config = prism::Config::new().num_cpus(2.0);
    let cases: &[Case] = &[
        (
            "every_collective_gives_every_rank_the_same_answer",
            every_collective_gives_every_rank_the_same_answer,
        ),
        (
            "bad_calls_are_clear_errors_and_a_group_of_one_works",
            bad_calls_are_clear_errors_and_a_group_of_one_works,
        ),
        (
            "a_dead_member_fails_the_collective_at_every_rank",
            a_dead_member_fails_the_collective_at_every_rank,
        ),
        (
            "nothing_stays_in_shared_memory",
            nothing_stays_in_shared_memory,
        ),
    ];
    common::run_with_threads(config, cases, Some(1));
}
