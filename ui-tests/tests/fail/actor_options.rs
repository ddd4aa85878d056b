#[prism::actor(max_restarts = 3)]
struct Configured {
    n: u64,
}

#[prism::actor]
trait NotAStructOrImpl {}

fn main() {}
