#[prism::main(num_cpus = 2)]
fn main() {}
