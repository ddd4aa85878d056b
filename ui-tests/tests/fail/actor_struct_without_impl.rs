#[prism::actor]
struct Lonely {
    n: u64,
}

fn main() {}
