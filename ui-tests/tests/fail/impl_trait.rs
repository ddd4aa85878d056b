#[prism::remote]
fn takes(x: impl Into<u64>) -> u64 {
    x.into()
}

#[prism::remote]
fn gives() -> impl std::future::Future<Output = u64> {
    async { 1 }
}

fn main() {}
