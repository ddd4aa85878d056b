#[prism::remote(num_cpu = 1, timeout = 5)]
fn f() -> u64 {
    1
}

fn main() {}
