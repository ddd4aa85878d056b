//! A synchronous `#[prism::main]` with blocking gets, `wait` and `cancel`.

use std::time::Duration;

#[prism::remote]
fn inc(x: i64) -> i64 {
    x + 1
}

#[prism::main]
fn main() {
    let refs: Vec<_> = (0..10).map(inc::remote).collect();
    let (done, _) = prism::wait_blocking(&refs, 10, Some(Duration::from_secs(60))).unwrap();
    assert_eq!(done.len(), 10);
    assert_eq!(
        prism::get_all_blocking(&refs).unwrap(),
        (1..11).collect::<Vec<_>>()
    );
    let r = inc::remote(&refs[0]);
    assert_eq!(r.get_blocking().unwrap(), 2);
    prism::cancel(&r).unwrap();
}
