#[prism::remote]
struct NotAFunction;

fn main() {}
