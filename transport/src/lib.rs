//! Prism's transport room: it moves bytes and nothing else. A frame is an 8-byte header (length
//! and magic) followed by the rkyv archive of one protocol message; every frame is checked
//! against a size limit before anything is allocated and validated (bytecheck) before it is
//! read, so a corrupt or hostile peer gets a clear [`FrameError`], never undefined behaviour.
//!
//! The same frames and messages serve the Unix sockets between a node and its workers and, later,
//! QUIC streams between hosts.
//!
//! # Examples
//!
//! ```
//! use prism_transport::{FrameDecoder, ToWorker, encode_frame};
//!
//! let mut wire = Vec::new();
//! encode_frame(&ToWorker::Shutdown, &mut wire).unwrap();
//! let mut decoder = FrameDecoder::new(1 << 20);
//! decoder.extend(&wire);
//! let frame = decoder.next_frame().unwrap().expect("one whole frame");
//! assert!(matches!(frame.access::<ToWorker>().unwrap(), prism_transport::ArchivedToWorker::Shutdown));
//! ```

#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

mod frame;
mod io;
mod message;

pub use frame::{
    DEFAULT_MAX_FRAME, Frame, FrameDecoder, FrameError, HEADER_LEN, Message, encode_frame,
};
pub use io::{AsyncFrameReader, FrameReader};
pub use message::{
    ArchivedExecute, ArchivedHello, ArchivedObjectValue, ArchivedOutcome, ArchivedToNode,
    ArchivedToWorker, ArchivedValue, Execute, HandshakeError, Hello, ObjectValue, Outcome,
    PROTOCOL_VERSION, ToNode, ToWorker, Value,
};
