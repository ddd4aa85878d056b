struct Plain {
    n: u64,
}

#[prism::actor]
impl Plain {
    fn new() -> Self {
        Plain { n: 0 }
    }

    fn get(&self) -> u64 {
        self.n
    }
}

fn main() {}
