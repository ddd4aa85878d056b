struct S;

impl S {
    #[prism::remote]
    fn method(&self) -> u64 {
        1
    }
}

fn main() {}
