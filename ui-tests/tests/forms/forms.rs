//! Every supported form of `#[remote]`, called from an async `#[prism::main]`.

use prism::{ObjectRef, remote};

#[derive(
    prism::rkyv::Archive, prism::rkyv::Serialize, prism::rkyv::Deserialize, Debug, PartialEq,
)]
#[rkyv(crate = prism::rkyv)]
pub struct Point {
    x: i32,
    y: i32,
}

#[remote]
fn no_args() -> u32 {
    7
}

#[remote]
fn unit_return(_x: u8) {}

#[remote]
pub fn public(p: Point, scale: i32) -> Point {
    Point {
        x: p.x * scale,
        y: p.y * scale,
    }
}

#[remote(num_cpus = 0.5, num_gpus = 0, max_retries = 0, retry_exceptions = true)]
fn with_options(s: String) -> usize {
    s.len()
}

#[remote(num_cpus = 0, resources(accel = 0.25, other = 1))]
fn with_resources() -> bool {
    true
}

#[remote(num_returns = 2)]
fn two(x: u64) -> (u64, String) {
    (x, x.to_string())
}

#[remote(num_returns = 4)]
fn listed(x: u64) -> Vec<u64> {
    vec![x; 4]
}

#[remote]
async fn asynchronous(mut v: Vec<u32>) -> Vec<u32> {
    v.push(1);
    v
}

/// A zero-copy view of the argument.
#[remote]
fn view_sum(values: &prism::Archived<Vec<u32>>) -> u64 {
    values.iter().map(|v| u64::from(v.to_native())).sum()
}

#[prism::main]
async fn main() -> prism::Result<()> {
    assert_eq!(no_args::remote().await?, 7);
    unit_return::remote(1).await?;
    let p: ObjectRef<Point> = public::remote(Point { x: 1, y: 2 }, 3);
    let q = public::remote(&p, 2);
    assert_eq!(q.await?, Point { x: 6, y: 12 });
    assert_eq!(
        with_options::options()
            .num_cpus(0.0)
            .max_retries(2)
            .remote("abc".to_string())
            .await?,
        3
    );
    let _: ObjectRef<bool> = with_resources::options().resources("accel", 0.0).remote();
    let (a, b) = two::remote(5);
    assert_eq!((a.await?, b.await?), (5, "5".to_string()));
    let four: Vec<ObjectRef<u64>> = listed::remote(3);
    assert_eq!(prism::get_all(&four).await?, vec![3; 4]);
    let v = prism::put(vec![0u32])?;
    assert_eq!(asynchronous::remote(v).await?, vec![0, 1]);
    let big = prism::put(vec![2u32; 100_000])?;
    assert_eq!(view_sum::remote(&big).await?, 200_000);
    assert_eq!(view_sum::remote(vec![1u32, 2, 3]).await?, 6);
    assert!(prism::get_archived(&big).await?.is_shared());
    Ok(())
}
