//! Feeds arbitrary bytes, split at arbitrary points, to the frame decoder and validates every
//! frame it yields as each protocol message. Nothing may panic, hang or read out of bounds; a
//! decoder that reported an error must keep reporting errors instead of resynchronising on
//! garbage.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prism_transport::{
    FrameDecoder, HostHello, HostReply, JoinReply, JoinRequest, ToNode, ToWorker,
};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunking, the second the size limit.
    let (split, limit, bytes) = match data {
        [a, b, rest @ ..] => (usize::from(*a).max(1), 1usize << (b % 24), rest),
        _ => return,
    };
    let mut decoder = FrameDecoder::new(limit);
    for chunk in bytes.chunks(split) {
        decoder.extend(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= limit, "a frame beyond the limit came out");
                    let _ = frame.access::<ToNode>();
                    let _ = frame.access::<ToWorker>();
                    let _ = frame.access::<HostHello>();
                    let _ = frame.access::<HostReply>();
                    let _ = frame.access::<JoinRequest>();
                    let _ = frame.access::<JoinReply>();
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
