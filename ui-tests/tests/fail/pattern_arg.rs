#[prism::remote]
fn pair((a, b): (u64, u64)) -> u64 {
    a + b
}

fn main() {}
