#[prism::remote(num_returns = 2)]
fn f() -> u64 {
    1
}

#[prism::remote(num_returns = 3)]
fn g() -> (u64, u64) {
    (1, 2)
}

fn main() {}
