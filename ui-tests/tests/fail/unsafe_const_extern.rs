#[prism::remote]
unsafe fn u() -> u64 {
    1
}

#[prism::remote]
const fn c() -> u64 {
    1
}

#[prism::remote]
extern "C" fn e() -> u64 {
    1
}

fn main() {}
