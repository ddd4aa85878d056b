#[prism::actor]
struct NoConstructor {
    n: u64,
}

#[prism::actor]
impl NoConstructor {
    fn get(&self) -> u64 {
        self.n
    }
}

#[prism::actor]
struct WrongConstructor {
    n: u64,
}

#[prism::actor]
impl WrongConstructor {
    fn new() -> u64 {
        1
    }
}

fn main() {}
