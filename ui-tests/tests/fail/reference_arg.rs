#[prism::remote]
fn borrow(s: &str) -> usize {
    s.len()
}

fn main() {}
