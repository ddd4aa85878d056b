#[prism::remote(num_cpus = "two", num_gpus = -1, max_retries = 1.5, retry_exceptions = 1, num_returns = 0)]
fn f() -> u64 {
    1
}

#[prism::remote(resources(CPU = 1))]
fn g() -> u64 {
    1
}

fn main() {}
