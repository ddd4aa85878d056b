#[prism::actor]
struct Worker {
    n: u64,
}

#[prism::actor]
impl Worker {
    fn new() -> Self {
        Worker { n: 0 }
    }

    fn consume(self) -> u64 {
        self.n
    }

    fn generic<T>(&self, _t: T) -> u64 {
        self.n
    }

    fn borrowed(&self, s: &str) -> usize {
        s.len()
    }
}

fn main() {}
