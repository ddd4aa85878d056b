//! A small seeded random source (SplitMix64): the simulator's runs and the tuner's searches are
//! reproducible from their seed.

// Public for `prism::tune`'s re-export; without that feature the simulator and `proto::spill`
// (a node's peers) use it.
#![cfg_attr(not(feature = "tune"), allow(dead_code, unreachable_pub))]

/// SplitMix64: every random choice of a seeded run comes from one of these.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A source seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A number in `0..n` (0, drawing nothing, when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// `N` bytes from the operating system's random source (for secrets and unique names; the
/// seeded [`Rng`] is for reproducible choices).
pub(crate) fn os_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer it is given, which
    // lives for the call.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if got != bytes.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    Ok(bytes)
}
