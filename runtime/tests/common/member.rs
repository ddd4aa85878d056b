//! A member of a collective group for the collective tests: each method runs one collective
//! on what it is given, and returns the result or the error's text.

use std::time::{Duration, Instant};

use libtest_mimic::Failed;
use prism::ObjectRef;
use prism::actor;
use prism::collective::{Communicator, Group, Op};

fn op_named(op: &str) -> Op {
    match op {
        "sum" => Op::Sum,
        "mean" => Op::Mean,
        "max" => Op::Max,
        _ => Op::Min,
    }
}

/// A member of a group: each method runs one collective on what it is given.
#[actor]
pub struct Member {
    comm: Communicator,
}

#[actor]
impl Member {
    fn new(group: Group, rank: u32) -> Self {
        let comm = group.join(rank).expect("join the group");
        Member { comm }
    }

    fn allreduce(&mut self, mut data: Vec<f64>, op: String) -> Result<Vec<f64>, String> {
        let op = op_named(&op);
        self.comm
            .allreduce(&mut data, op)
            .map_err(|e| e.to_string())?;
        Ok(data)
    }

    fn allreduce_f32(&mut self, mut data: Vec<f32>) -> Result<Vec<f32>, String> {
        let sum = Op::Sum;
        self.comm
            .allreduce(&mut data, sum)
            .map_err(|e| e.to_string())?;
        Ok(data)
    }

    fn broadcast(&mut self, mut data: Vec<f32>, root: u32) -> Result<Vec<f32>, String> {
        self.comm
            .broadcast(&mut data, root)
            .map_err(|e| e.to_string())?;
        Ok(data)
    }

    fn allgather(&mut self, data: Vec<f64>) -> Result<Vec<f64>, String> {
        let mut out = vec![0.0; data.len() * self.comm.world_size() as usize];
        self.comm
            .allgather(&data, &mut out)
            .map_err(|e| e.to_string())?;
        Ok(out)
    }

    fn reduce_scatter(&mut self, data: Vec<f64>, op: String) -> Result<Vec<f64>, String> {
        let mut out = vec![0.0; data.len() / self.comm.world_size() as usize];
        let op = op_named(&op);
        self.comm
            .reduce_scatter(&data, &mut out, op)
            .map_err(|e| e.to_string())?;
        Ok(out)
    }

    fn barrier(&mut self) -> Result<(), String> {
        self.comm.barrier().map_err(|e| e.to_string())
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }

    fn node(&self) -> String {
        prism::node_name().unwrap_or_else(|| "local".into())
    }
}

/// The group's members.
pub struct Members {
    pub handles: Vec<prism::ActorHandle<Member>>,
}

impl std::ops::Index<usize> for Members {
    type Output = prism::ActorHandle<Member>;

    fn index(&self, rank: usize) -> &Self::Output {
        &self.handles[rank]
    }
}

#[allow(dead_code)] // the cluster test places its members
pub fn start(name: &str, world: u32) -> Result<Members, Failed> {
    start_on(name, &vec![""; world as usize])
}

/// A group of one member per entry of `resources`, each needing one of the custom resource
/// named there (none when empty). The driver drops its `Group` at once: the members'
/// constructors hold the meeting point until they joined.
pub fn start_on(name: &str, resources: &[&str]) -> Result<Members, Failed> {
    let group = Group::create(name, resources.len() as u32)?;
    let handles = (0..resources.len() as u32)
        .map(|rank| match resources[rank as usize] {
            "" => Member::remote(group.clone(), rank),
            resource => Member::options()
                .resources(resource, 1.0)
                .remote(group.clone(), rank),
        })
        .collect();
    drop(group);
    Ok(Members { handles })
}

pub fn all<T>(refs: Vec<ObjectRef<Result<T, String>>>) -> Result<Vec<T>, Failed>
where
    Result<T, String>: prism::Remotable,
{
    let mut out = Vec::new();
    for r in refs {
        out.push(r.get_blocking()??);
    }
    Ok(out)
}

pub fn input(rank: u32, len: usize) -> Vec<f64> {
    (0..len)
        .map(|i| (i % 977) as f64 + f64::from(rank) * 0.25)
        .collect()
}

/// Ranks 0 and 2 enter an allreduce of `len` elements; rank 1 is SIGKILLed 300 ms later.
/// Returns each survivor's error and how long after the kill the last one came.
pub fn kill_rank_one_during_allreduce(
    members: &Members,
    len: usize,
) -> Result<(Vec<String>, Duration), Failed> {
    let victim = members[1].pid().get_blocking()?;
    let waiting: Vec<_> = [0usize, 2]
        .iter()
        .map(|&r| members[r].allreduce(input(r as u32, len), "sum".to_string()))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    // SAFETY: kill(2) with SIGKILL on the pid of the member's worker, which this test's
    // cluster started on this host and which just answered; no memory is involved.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let mut errors = Vec::new();
    for call in waiting {
        match call.get_blocking()? {
            Ok(_) => return Err("an allreduce without rank 1 succeeded".into()),
            Err(e) => errors.push(e),
        }
    }
    Ok((errors, killed.elapsed()))
}
