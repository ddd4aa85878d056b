//! One object read on many nodes (issue 20's broadcast): the driver puts an object of `--mib`
//! MiB, then one reader task per node (placed by the custom resource `r<i>`, i = 1..=`--nodes`)
//! reads it through a zero-copy view, so each node pulls it into its store once. Timed from the
//! readers' submission to the last one's answer, `--trials` times with a new object each.
//!
//! `bash benches/broadcast-bench.sh [N=3] [--mib 1024] [--trials 3]` starts a head and N nodes
//! on 127.0.0.x and passes `--address` and `--token`.

use std::time::Instant;

use clap::Parser;
use prism::{Archived, remote};

#[derive(Debug, Parser)]
struct Args {
    /// Nodes that read the object (each carries the custom resource `r<i>`).
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// The object's size in MiB.
    #[arg(long, default_value_t = 1024)]
    mib: usize,
    /// Timed broadcasts, each of a new object.
    #[arg(long, default_value_t = 3)]
    trials: usize,
    /// Where to join.
    #[command(flatten)]
    join: prism_benches::Join,
}

/// Reads the object's last byte through the node's mapping (it arrives whole before the task
/// runs) and says where it ran.
#[remote(num_cpus = 0)]
fn read(data: &Archived<Vec<u8>>) -> (u64, String) {
    let last = data.last().copied().unwrap_or(0);
    (
        data.len() as u64 + u64::from(last),
        prism::node_name().unwrap_or_default(),
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.join.init()?;
    let len = args.mib << 20;
    for trial in 0..args.trials {
        let mut data = vec![0u8; len];
        data[len - 1] = trial as u8;
        let object = prism::put(data)?;
        let start = Instant::now();
        let readers: Vec<_> = (1..=args.nodes)
            .map(|i| {
                read::options()
                    .resources(&format!("r{i}"), 1.0)
                    .remote(object.clone())
            })
            .collect();
        let mut nodes = Vec::new();
        for reader in readers {
            let (n, node) = reader.get_blocking()?;
            anyhow::ensure!(n == len as u64 + trial as u64, "{node} read {n} bytes");
            nodes.push(node);
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "broadcast of {} MiB to {} nodes {nodes:?}: {secs:.2} s ({:.2} GB/s in all)",
            args.mib,
            args.nodes,
            len as f64 * f64::from(args.nodes) / secs / 1e9,
        );
    }
    prism::shutdown();
    Ok(())
}
