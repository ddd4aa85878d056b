pub struct Plain {
    pub value: u64,
}

#[prism::remote]
fn make() -> Plain {
    Plain { value: 1 }
}

fn main() {}
