//! The quickstart of DESIGN.md §1: remote functions, references passed where values are
//! expected, and the results gathered. Run with `cargo run --release --example quickstart`.

use prism::remote;

/// Makes an array of `n` values starting at `start` (stands in for reading a file).
#[remote]
fn read_array(start: f64, n: u64) -> Vec<f64> {
    (0..n).map(|i| start + i as f64).collect()
}

/// Adds two arrays element by element.
#[remote(num_cpus = 1, max_retries = 3)]
fn add(a: Vec<f64>, b: Vec<f64>) -> Vec<f64> {
    a.iter().zip(&b).map(|(x, y)| x + y).collect()
}

/// Splits an array into its sum and its length: two return objects.
#[remote(num_returns = 2)]
fn stats(values: Vec<f64>) -> (f64, u64) {
    (values.iter().sum(), values.len() as u64)
}

#[prism::main]
async fn main() -> prism::Result<()> {
    let a = read_array::remote(1.0, 4);
    let b = read_array::remote(10.0, 4);
    let sum = add::remote(a, b); // refs accepted where values are expected
    let (total, len) = stats::remote(&sum);
    println!("sum = {:?}", sum.await?);
    println!("total = {}, len = {}", total.await?, len.await?);

    // A tree reduction over many tasks, all submitted before any result is read.
    let mut level: Vec<_> = (0..64)
        .map(|i| read_array::remote(i as f64, 1_000))
        .collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| add::options().num_cpus(1.0).remote(&pair[0], &pair[1]))
            .collect();
    }
    let reduced = prism::get(&level[0]).await?;
    println!(
        "tree reduction of 64 arrays: first = {}, last = {}",
        reduced[0], reduced[999]
    );

    // wait: the first results that are done, with a timeout.
    let refs: Vec<_> = (0..8).map(|i| read_array::remote(i as f64, 10)).collect();
    let (done, pending) = prism::wait(&refs, 4, Some(std::time::Duration::from_secs(10))).await?;
    println!("wait: {} done, {} pending", done.len(), pending.len());
    Ok(())
}
