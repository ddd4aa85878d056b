#[prism::remote(num_cpus = 1, num_cpus = 2)]
fn f() -> u64 {
    1
}

fn main() {}
