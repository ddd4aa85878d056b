//! Elastic data-parallel training with `prism::collective` (as Horovod on Ray): N trainer
//! actors, each in a bundle of a placement group (STRICT_SPREAD on a cluster, PACK locally),
//! train the examples' MLP by synchronous SGD on a synthetic regression set (a random
//! "teacher" network's outputs), each on its shard, averaging their gradients with an
//! allreduce every step so that every replica takes the same Adam step.
//!
//! After every epoch the driver keeps rank 0's checkpoint (parameters and optimiser) in the
//! object store. When a trainer dies (its node or its process), the epoch fails at every
//! member with the dead rank named; the group re-forms with the survivors (a new collective
//! group, new ranks) from the last checkpoint and goes on. When nodes join a cluster, the group
//! grows to them at the next epoch.
//!
//! `cargo run --release -p prism-examples --example data_parallel -- [--trainers 2]
//! [--target 0.02] [--kill-at EPOCH]` (`--kill-at` SIGKILLs one trainer's process during that
//! epoch, to show the group re-forming).

use std::time::{Duration, Instant};

use clap::Parser;
use ndarray::Array2;
use prism::collective::{Communicator, Group, Op};
use prism::{ActorHandle, Bundle, ObjectRef, PlacementGroup, PlacementStrategy, actor};
use prism_examples::nn::{Adam, Mlp};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

#[derive(Debug, Parser)]
struct Args {
    /// Trainers to start with (on a cluster: at most one per node, and the group grows to the
    /// nodes that join, up to `--max-trainers`).
    #[arg(long, default_value_t = 2)]
    trainers: u32,
    /// The most trainers on a cluster.
    #[arg(long, default_value_t = 8)]
    max_trainers: u32,
    /// Stop once the validation loss (MSE over the targets' variance) is below this.
    #[arg(long, default_value_t = 0.02)]
    target: f64,
    /// The most epochs.
    #[arg(long, default_value_t = 200)]
    epochs: u32,
    /// SGD steps per epoch.
    #[arg(long, default_value_t = 25)]
    steps: u32,
    /// Samples per trainer per step.
    #[arg(long, default_value_t = 64)]
    batch: u32,
    /// SIGKILL one trainer's process during this epoch.
    #[arg(long)]
    kill_at: Option<u32>,
}

/// Inputs per sample.
const FEATURES: usize = 8;
/// Samples in the training set (each trainer takes every n-th).
const SAMPLES: usize = 8192;

/// What every trainer knows of the run.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Setup {
    steps: u32,
    batch: u32,
    lr: f32,
}

/// The training state the driver keeps between epochs.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Checkpoint {
    /// Epochs trained.
    epoch: u32,
    params: Vec<f32>,
    adam: Adam,
}

/// One epoch's outcome at one trainer.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct EpochReport {
    /// The mean training loss over the group's shards (the same at every rank).
    loss: f64,
    /// The validation loss of the parameters after the epoch.
    validation: f64,
}

/// The synthetic data set: inputs from a normal distribution, targets from a fixed random
/// teacher network (so a student of the same or larger shape can fit them).
fn dataset(seed: u64, count: usize) -> (Array2<f32>, Vec<f32>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let teacher = Mlp::new(FEATURES, &[16], 1);
    let weights = teacher.init(&mut SmallRng::seed_from_u64(7), 1.0);
    let x = Array2::from_shape_fn((count, FEATURES), |_| StandardNormal.sample(&mut rng));
    let y = teacher
        .forward_batch(&weights, x.view())
        .output()
        .iter()
        .copied()
        .collect();
    (x, y)
}

fn student() -> Mlp {
    Mlp::new(FEATURES, &[64, 64], 1)
}

/// The mean squared error of `out` against `y`, and its gradient with respect to `out`.
fn mse(out: &Array2<f32>, y: &[f32]) -> (f64, Array2<f32>) {
    let n = y.len() as f32;
    let mut d = Array2::zeros((y.len(), 1));
    let mut sq = 0.0f64;
    for (i, &target) in y.iter().enumerate() {
        let err = out[[i, 0]] - target;
        sq += f64::from(err * err);
        d[[i, 0]] = 2.0 * err / n;
    }
    (sq / f64::from(n), d)
}

/// Mean squared error over the targets' variance, and the gradient of the MSE.
fn loss_and_grad(model: &Mlp, params: &[f32], x: &Array2<f32>, y: &[f32]) -> (f64, Vec<f32>) {
    let acts = model.forward_batch(params, x.view());
    let (error, d) = mse(acts.output(), y);
    let grad = model.backward(params, &acts, d);
    (error / variance(y), grad)
}

fn variance(y: &[f32]) -> f64 {
    let mean = y.iter().map(|&v| f64::from(v)).sum::<f64>() / y.len() as f64;
    y.iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / y.len() as f64
}

/// A replica: its shard, the model and the optimiser, and its place in the group.
#[actor]
struct Trainer {
    comm: Option<Communicator>,
    shard: (Array2<f32>, Vec<f32>),
    /// The validation set and its targets' variance.
    validation: (Array2<f32>, Vec<f32>, f64),
    model: Mlp,
    params: Vec<f32>,
    adam: Adam,
    epoch: u32,
}

#[actor]
impl Trainer {
    fn new() -> Self {
        let (x, y) = dataset(2, 1024);
        let scale = variance(&y);
        // The parameters and the optimiser come with the checkpoint `join` takes up.
        Trainer {
            comm: None,
            shard: (Array2::zeros((0, FEATURES)), Vec::new()),
            validation: (x, y, scale),
            model: student(),
            params: Vec::new(),
            adam: Adam::new(0, 0.0),
            epoch: 0,
        }
    }

    /// Joins `group` as `rank` and takes up `checkpoint`: its shard is every `world`-th sample
    /// from `rank` on.
    fn join(&mut self, group: Group, rank: u32, checkpoint: Checkpoint) -> Result<u32, String> {
        self.comm = None;
        let world = group.world_size() as usize;
        let (x, y) = dataset(1, SAMPLES);
        let rows: Vec<usize> = (rank as usize..SAMPLES).step_by(world).collect();
        self.shard = (
            x.select(ndarray::Axis(0), &rows),
            rows.iter().map(|&r| y[r]).collect(),
        );
        self.params = checkpoint.params;
        self.adam = checkpoint.adam;
        self.epoch = checkpoint.epoch;
        self.comm = Some(group.join(rank).map_err(|e| e.to_string())?);
        Ok(std::process::id())
    }

    /// One epoch of synchronous SGD: each step a minibatch of the shard, the gradient averaged
    /// over the group by an allreduce, and the same Adam step at every replica.
    fn train_epoch(&mut self, setup: Setup) -> Result<EpochReport, String> {
        let comm = self.comm.as_mut().ok_or("the trainer is in no group")?;
        let mut rng = SmallRng::seed_from_u64(u64::from(self.epoch) << 16 | u64::from(comm.rank()));
        let rows = self.shard.1.len();
        let mut sum = [0.0f64];
        self.adam.set_lr(setup.lr);
        for _ in 0..setup.steps {
            let pick: Vec<usize> = (0..setup.batch)
                .map(|_| rng.random_range(0..rows))
                .collect();
            let x = self.shard.0.select(ndarray::Axis(0), &pick);
            let y: Vec<f32> = pick.iter().map(|&r| self.shard.1[r]).collect();
            let (loss, mut grad) = loss_and_grad(&self.model, &self.params, &x, &y);
            comm.allreduce(&mut grad, Op::Mean)
                .map_err(|e| e.to_string())?;
            self.adam.step(&mut self.params, &grad);
            sum[0] += loss / f64::from(setup.steps);
        }
        comm.allreduce(&mut sum, Op::Mean)
            .map_err(|e| e.to_string())?;
        self.epoch += 1;
        let (x, y, scale) = &self.validation;
        let out = self.model.forward_batch(&self.params, x.view());
        let validation = mse(out.output(), y).0 / scale;
        Ok(EpochReport {
            loss: sum[0],
            validation,
        })
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            epoch: self.epoch,
            params: self.params.clone(),
            adam: self.adam.clone(),
        }
    }

    fn node(&self) -> String {
        prism::node_name().unwrap_or_else(|| "local".into())
    }
}

/// The trainers of one generation of the group.
struct Gang {
    trainers: Vec<ActorHandle<Trainer>>,
    pids: Vec<u32>,
    nodes: Vec<String>,
    /// The placement group holding them.
    placement: PlacementGroup,
}

/// Places `count` new trainers: on a cluster one bundle of a CPU each, on distinct nodes;
/// locally packed, sharing the node's CPUs.
fn start_trainers(
    count: u32,
    cluster: bool,
) -> anyhow::Result<(Vec<ActorHandle<Trainer>>, PlacementGroup)> {
    let (strategy, cpus) = match cluster {
        true => (PlacementStrategy::StrictSpread, 1.0),
        false => {
            let total = prism::cluster_resources()?
                .get("CPU")
                .copied()
                .unwrap_or(1.0);
            let share = (total / f64::from(count) * 100.0).floor() / 100.0;
            (PlacementStrategy::Pack, share.min(1.0))
        }
    };
    let bundles = (0..count).map(|_| Bundle::new().cpus(cpus)).collect();
    let placement = prism::placement_group(bundles, strategy)?;
    if !placement.wait_blocking(Duration::from_secs(60))? {
        anyhow::bail!("no room for {count} trainers (one per node on a cluster)");
    }
    let trainers = (0..count)
        .map(|i| Trainer::options().placement(&placement, i).remote())
        .collect();
    Ok((trainers, placement))
}

/// Joins `trainers` into a new group `generation` from `checkpoint`.
fn form(
    generation: u32,
    trainers: Vec<ActorHandle<Trainer>>,
    placement: PlacementGroup,
    checkpoint: &ObjectRef<Checkpoint>,
) -> anyhow::Result<Gang> {
    let group = Group::create(
        &format!("data-parallel-{generation}"),
        trainers.len() as u32,
    )?;
    let joins: Vec<_> = trainers
        .iter()
        .enumerate()
        .map(|(rank, t)| t.join(group.clone(), rank as u32, checkpoint.clone()))
        .collect();
    let mut pids = Vec::new();
    for join in joins {
        pids.push(join.get_blocking()?.map_err(anyhow::Error::msg)?);
    }
    let nodes = trainers
        .iter()
        .map(|t| t.node().get_blocking())
        .collect::<Result<_, _>>()?;
    Ok(Gang {
        trainers,
        pids,
        nodes,
        placement,
    })
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    prism::init()?;
    let cluster = prism::nodes()?.len() > 1;
    let start = Instant::now();
    let setup = Setup {
        steps: args.steps,
        batch: args.batch,
        lr: 3e-3,
    };
    let model = student();
    let mut checkpoint = prism::put(Checkpoint {
        epoch: 0,
        params: model.init(&mut SmallRng::seed_from_u64(1), 1.0),
        adam: Adam::new(model.num_params(), setup.lr),
    })?;
    let (trainers, placement) = start_trainers(args.trainers, cluster)?;
    let mut generation = 0;
    let mut gang = form(generation, trainers, placement, &checkpoint)?;
    println!("{} trainers on {:?}", gang.trainers.len(), gang.nodes);
    println!(
        "{:>6} {:>8} {:>10} {:>10} {:>8}",
        "epoch", "trainers", "train", "valid.", "seconds"
    );
    let mut reached = None;
    let mut epoch = 0;
    let mut last_epoch = Duration::from_millis(100);
    while epoch < args.epochs {
        let began = Instant::now();
        let runs: Vec<_> = gang
            .trainers
            .iter()
            .map(|t| t.train_epoch(setup.clone()))
            .collect();
        if args.kill_at == Some(epoch) && gang.trainers.len() > 1 {
            args.kill_at = None;
            // Mid-epoch: half as long as the last one took.
            std::thread::sleep(last_epoch / 2);
            let victim = gang.trainers.len() - 1;
            println!(
                "killing trainer {victim} (pid {}) during epoch {epoch}",
                gang.pids[victim]
            );
            // SAFETY: kill(2) with SIGKILL on the pid of a trainer's worker process, which this
            // job started and which answered its join.
            unsafe { libc::kill(gang.pids[victim] as i32, libc::SIGKILL) };
        }
        let mut report = None;
        let mut survivors = Vec::new();
        let mut failures = Vec::new();
        for (rank, (run, trainer)) in runs.into_iter().zip(&gang.trainers).enumerate() {
            match run.get_blocking() {
                Ok(Ok(r)) => {
                    report.get_or_insert(r);
                    survivors.push(trainer.clone());
                }
                Ok(Err(collective)) => {
                    failures.push(format!("rank {rank}: {collective}"));
                    survivors.push(trainer.clone());
                }
                Err(died) => failures.push(format!("rank {rank} is gone: {died}")),
            }
        }
        if !failures.is_empty() {
            // Re-form with the survivors from the last checkpoint.
            for failure in &failures {
                println!("  {failure}");
            }
            generation += 1;
            let placement = gang.placement.clone();
            gang = form(generation, survivors, placement, &checkpoint)?;
            epoch = checkpoint.get_blocking()?.epoch;
            println!(
                "re-formed: {} trainers on {:?} from the checkpoint of epoch {epoch}",
                gang.trainers.len(),
                gang.nodes
            );
            continue;
        }
        let report = report.expect("every trainer reported");
        last_epoch = began.elapsed();
        epoch += 1;
        checkpoint = gang.trainers[0].checkpoint();
        println!(
            "{epoch:>6} {:>8} {:>10.5} {:>10.5} {:>8.2}",
            gang.trainers.len(),
            report.loss,
            report.validation,
            start.elapsed().as_secs_f64()
        );
        if report.validation < args.target {
            reached = Some((epoch, report.validation));
            break;
        }
        // Nodes that joined: grow at this epoch boundary to one trainer per node. The old
        // placement goes (its trainers with it: the checkpoint holds their state) and a group
        // spread over every node takes over.
        let nodes = prism::nodes()?.len() as u32;
        let world = gang.trainers.len() as u32;
        if cluster && nodes > world && world < args.max_trainers {
            checkpoint = prism::put(checkpoint.get_blocking()?)?;
            prism::remove_placement_group(&gang.placement)?;
            let (trainers, placement) = start_trainers(nodes.min(args.max_trainers), true)?;
            generation += 1;
            gang = form(generation, trainers, placement, &checkpoint)?;
            println!("grew: {} trainers on {:?}", gang.trainers.len(), gang.nodes);
        }
    }
    match reached {
        Some((epoch, loss)) => println!(
            "reached validation loss {loss:.5} < {} after {epoch} epochs in {:.2} s",
            args.target,
            start.elapsed().as_secs_f64()
        ),
        None => anyhow::bail!(
            "the loss did not reach {} in {} epochs",
            args.target,
            args.epochs
        ),
    }
    drop(gang);
    prism::shutdown();
    Ok(())
}
