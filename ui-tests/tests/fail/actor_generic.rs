#[prism::actor]
struct Boxed<T> {
    value: T,
}

fn main() {}
