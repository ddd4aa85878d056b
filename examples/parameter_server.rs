//! A parameter server (the Ray paper's pattern): an actor holds the model's parameters; worker
//! tasks, each given the actor's handle, repeatedly fetch the parameters, compute a gradient on
//! their shard of the data and send it back (asynchronous SGD). The driver watches the loss on
//! held-out data until it falls below a target, printing the curve.
//!
//! The problem is linear regression on generated data: y = x·w* + noise.
//!
//! Run: `cargo run --release --example parameter_server -- [--workers 2] [--target 0.0105]`

use std::time::{Duration, Instant};

use prism::{ActorHandle, ObjectRef, actor, remote};

const FEATURES: usize = 16;
const NOISE: f64 = 0.1;

/// SplitMix64: small, seedable, good enough for generated data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal sample (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.uniform().max(f64::MIN_POSITIVE);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// The true weights every shard is generated from.
fn true_weights() -> Vec<f64> {
    let mut rng = Rng(42);
    (0..FEATURES).map(|_| rng.normal()).collect()
}

/// `n` samples (features, target) from seed `seed`.
fn samples(seed: u64, n: usize) -> (Vec<Vec<f64>>, Vec<f64>) {
    let w = true_weights();
    let mut rng = Rng(seed);
    let mut xs = Vec::with_capacity(n);
    let mut ys = Vec::with_capacity(n);
    for _ in 0..n {
        let x: Vec<f64> = (0..FEATURES).map(|_| rng.normal()).collect();
        let y = x.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() + NOISE * rng.normal();
        xs.push(x);
        ys.push(y);
    }
    (xs, ys)
}

fn mse(params: &[f64], xs: &[Vec<f64>], ys: &[f64]) -> f64 {
    xs.iter()
        .zip(ys)
        .map(|(x, y)| {
            let pred: f64 = x.iter().zip(params).map(|(a, b)| a * b).sum();
            (pred - y).powi(2)
        })
        .sum::<f64>()
        / ys.len() as f64
}

/// Holds the parameters; applies gradients as they come.
#[actor]
struct ParameterServer {
    params: Vec<f64>,
    lr: f64,
    updates: u64,
}

#[actor]
impl ParameterServer {
    fn new(dim: u64, lr: f64) -> Self {
        ParameterServer {
            params: vec![0.0; dim as usize],
            lr,
            updates: 0,
        }
    }

    fn get_params(&self) -> Vec<f64> {
        self.params.clone()
    }

    fn update_params(&mut self, grad: Vec<f64>) -> u64 {
        for (p, g) in self.params.iter_mut().zip(&grad) {
            *p -= self.lr * g;
        }
        self.updates += 1;
        self.updates
    }

    fn updates(&self) -> u64 {
        self.updates
    }
}

/// One worker: `steps` rounds of fetch, gradient on a mini-batch of its shard, push.
#[remote]
fn train_worker(ps: ActorHandle<ParameterServer>, shard: u64, steps: u64, batch: u64) -> u64 {
    let (xs, ys) = samples(1000 + shard, 4096);
    let mut rng = Rng(shard);
    for _ in 0..steps {
        let params = ps.get_params().get_blocking().expect("parameters");
        let mut grad = vec![0.0; FEATURES];
        for _ in 0..batch {
            let i = (rng.next_u64() % xs.len() as u64) as usize;
            let pred: f64 = xs[i].iter().zip(&params).map(|(a, b)| a * b).sum();
            let err = pred - ys[i];
            for (g, x) in grad.iter_mut().zip(&xs[i]) {
                *g += 2.0 * err * x / batch as f64;
            }
        }
        ps.update_params(grad).get_blocking().expect("update");
    }
    steps
}

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[prism::main]
fn main() -> anyhow::Result<()> {
    let workers: u64 = arg("--workers", 2);
    let target: f64 = arg("--target", 0.0105);
    let steps: u64 = arg("--steps", 2_000);
    let start = Instant::now();

    let ps = ParameterServer::remote(FEATURES as u64, 0.002);
    let (val_x, val_y) = samples(7, 2_000);
    let jobs: Vec<ObjectRef<u64>> = (0..workers)
        .map(|shard| train_worker::remote(ps.clone(), shard, steps, 32))
        .collect();

    println!("{:>8} {:>10} {:>12}", "updates", "seconds", "val. loss");
    let mut reached = None;
    loop {
        let params = ps.get_params().get_blocking()?;
        let updates = ps.updates().get_blocking()?;
        let loss = mse(&params, &val_x, &val_y);
        println!(
            "{updates:>8} {:>10.3} {loss:>12.6}",
            start.elapsed().as_secs_f64()
        );
        if loss < target {
            reached = Some((updates, loss));
            break;
        }
        let (done, _) = prism::wait_blocking(&jobs, jobs.len(), Some(Duration::from_millis(10)))?;
        if done.len() == jobs.len() {
            break;
        }
    }
    for job in &jobs {
        prism::cancel(job)?;
    }
    match reached {
        Some((updates, loss)) => println!(
            "reached loss {loss:.6} < {target} after {updates} updates from {workers} workers in {:.2} s",
            start.elapsed().as_secs_f64()
        ),
        None => {
            anyhow::bail!("the loss did not fall below {target} within {steps} steps per worker")
        }
    }
    Ok(())
}
