use prism::Stream;

#[prism::remote(num_returns = 2)]
fn two_streams() -> Stream<u64> {
    Stream::new(0..2)
}

#[prism::remote(backpressure = 4)]
fn not_a_stream() -> u64 {
    1
}

fn main() {}
