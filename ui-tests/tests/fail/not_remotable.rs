struct Plain {
    value: u64,
}

#[prism::remote]
fn take(p: Plain) -> u64 {
    p.value
}

fn main() {}
