//! Frames: `[len: u32 LE][magic: b"PRSM"][payload: len bytes of rkyv]`. The decoder is sans-IO:
//! bytes go in, whole validated frames come out.

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

/// Bytes before every payload: length and magic.
pub const HEADER_LEN: usize = 8;
const MAGIC: [u8; 4] = *b"PRSM";
/// The default size limit of one frame's payload (512 MiB).
pub const DEFAULT_MAX_FRAME: usize = 512 << 20;

/// What can be wrong with bytes received from a peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The header announces more bytes than the limit allows.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Announced payload length.
        len: usize,
        /// The receiver's limit.
        limit: usize,
    },
    /// The header does not carry Prism's magic: the peer does not speak this protocol.
    #[error(
        "frame header has magic {found:02x?}, expected \"PRSM\": the peer does not speak Prism's protocol"
    )]
    BadMagic {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// A header announcing an empty payload.
    #[error("empty frame")]
    Empty,
    /// The payload is not a valid archive of the expected message.
    #[error("malformed {message} frame of {len} bytes: {reason}")]
    Malformed {
        /// Which message type was expected.
        message: &'static str,
        /// Payload length.
        len: usize,
        /// What validation found.
        reason: String,
    },
    /// The connection ended in the middle of a frame.
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes of the unfinished frame.
        buffered: usize,
    },
    /// A message could not be archived.
    #[error("cannot encode {message}: {reason}")]
    Encode {
        /// Which message type.
        message: &'static str,
        /// rkyv's error.
        reason: String,
    },
    /// The underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// A protocol message type that can travel in a frame.
pub trait Message:
    rkyv::Archive + for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
where
    Self::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    /// The message's name in errors.
    const NAME: &'static str;
}

/// Appends one frame carrying `msg` to `out`.
pub fn encode_frame<M>(msg: &M, out: &mut Vec<u8>) -> Result<(), FrameError>
where
    M: Message,
    M::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    let bytes = rkyv::to_bytes::<rancor::Error>(msg).map_err(|e| FrameError::Encode {
        message: M::NAME,
        reason: e.to_string(),
    })?;
    encode_payload(&bytes, out)
}

/// Appends one frame carrying `payload` (the archived bytes of a message, as
/// [`Frame::as_bytes`] gives them) to `out`: a received frame passed on as it came.
pub fn encode_payload(payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge {
        len: payload.len(),
        limit: u32::MAX as usize,
    })?;
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(payload);
    Ok(())
}

/// One received payload, aligned for rkyv; validate and read it with [`Frame::access`].
#[derive(Debug)]
pub struct Frame {
    bytes: AlignedVec,
}

impl Frame {
    /// The payload length.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the payload is empty (never true for a decoded frame).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Validates the payload as an archived `M` and returns a view of it.
    pub fn access<M>(&self) -> Result<&M::Archived, FrameError>
    where
        M: Message,
        M::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
    {
        rkyv::access::<M::Archived, rancor::Error>(&self.bytes).map_err(|e| FrameError::Malformed {
            message: M::NAME,
            len: self.bytes.len(),
            reason: e.to_string(),
        })
    }

    /// The raw payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The one whole frame `bytes` holds (its header and payload, nothing before or after),
    /// its payload at most `max_frame` bytes: for a frame carried inside another message,
    /// read without a stream's buffer. `None` when `bytes` is not exactly one frame.
    pub fn whole(bytes: &[u8], max_frame: usize) -> Result<Option<Frame>, FrameError> {
        match payload_len(bytes, max_frame)? {
            Some(len) if bytes.len() == HEADER_LEN + len => {
                let mut payload = AlignedVec::with_capacity(len);
                payload.extend_from_slice(&bytes[HEADER_LEN..]);
                Ok(Some(Frame { bytes: payload }))
            }
            _ => Ok(None),
        }
    }
}

/// The payload length the header at the start of `avail` announces (checked against
/// `max_frame`), or `None` while the header is incomplete.
fn payload_len(avail: &[u8], max_frame: usize) -> Result<Option<usize>, FrameError> {
    if avail.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
    let magic = [avail[4], avail[5], avail[6], avail[7]];
    if magic != MAGIC {
        return Err(FrameError::BadMagic { found: magic });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max_frame {
        return Err(FrameError::TooLarge {
            len,
            limit: max_frame,
        });
    }
    Ok(Some(len))
}

/// Turns a byte stream into frames, enforcing the size limit before buffering a payload.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_frame: usize,
}

const READ_CHUNK: usize = 64 << 10;

impl FrameDecoder {
    /// A decoder that refuses payloads longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder {
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            max_frame,
        }
    }

    /// From now on, refuses payloads longer than `max_frame` bytes (a connection that allowed
    /// only a small handshake frame opens up once the peer is known).
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Takes the bytes received after the last whole frame (for a stream that switches from
    /// frames to raw bytes).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.buf[self.start..self.end].to_vec();
        self.start = 0;
        self.end = 0;
        rest
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.spare(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Fills the buffer by calling `read` on free space (at least 64 KiB); returns what `read`
    /// returned. Zero means end of stream.
    pub fn fill_with(
        &mut self,
        read: impl FnOnce(&mut [u8]) -> std::io::Result<usize>,
    ) -> std::io::Result<usize> {
        let n = read(self.spare(READ_CHUNK))?;
        self.end += n;
        Ok(n)
    }

    /// Free space of at least `min` bytes after the buffered data (compacting or growing).
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end < min {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < min {
                self.buf.resize(self.end + min.max(READ_CHUNK), 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of [`spare`](Self::spare) as filled.
    pub fn advance(&mut self, n: usize) {
        assert!(self.end + n <= self.buf.len(), "advance past the buffer");
        self.end += n;
    }

    /// The next whole frame, `None` if more bytes are needed, or an error for a bad header.
    /// After an error the stream is out of sync and the connection must be closed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let avail = &self.buf[self.start..self.end];
        let Some(len) = payload_len(avail, self.max_frame)? else {
            return Ok(None);
        };
        if avail.len() < HEADER_LEN + len {
            // Make room for the rest of this frame in one go.
            let missing = HEADER_LEN + len - avail.len();
            self.spare(missing);
            return Ok(None);
        }
        let mut bytes = AlignedVec::with_capacity(len);
        bytes.extend_from_slice(&avail[HEADER_LEN..HEADER_LEN + len]);
        self.start += HEADER_LEN + len;
        Ok(Some(Frame { bytes }))
    }

    /// Checks that the stream ended on a frame boundary.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(FrameError::Truncated { buffered }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ArchivedToWorker, ToWorker};

    #[test]
    fn a_whole_frame_is_read_in_place_and_anything_else_is_not() {
        let mut bytes = Vec::new();
        encode_frame(&ToWorker::Shutdown, &mut bytes).unwrap();
        let frame = Frame::whole(&bytes, 1 << 20)
            .unwrap()
            .expect("one whole frame");
        assert!(matches!(
            frame.access::<ToWorker>().unwrap(),
            ArchivedToWorker::Shutdown
        ));
        assert!(
            Frame::whole(&bytes[..bytes.len() - 1], 1 << 20)
                .unwrap()
                .is_none()
        );
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Frame::whole(&trailing, 1 << 20).unwrap().is_none());
        assert!(matches!(
            Frame::whole(&bytes, 1),
            Err(FrameError::TooLarge { limit: 1, .. })
        ));
        let mut foreign = bytes.clone();
        foreign[4] = b'X';
        assert!(matches!(
            Frame::whole(&foreign, 1 << 20),
            Err(FrameError::BadMagic { .. })
        ));
    }

    #[test]
    fn frames_split_at_any_byte_come_out_whole() {
        let mut wire = Vec::new();
        for i in 0..5u64 {
            encode_frame(
                &ToWorker::Cancel {
                    task: prism_graph::TaskId::new(i, 7),
                },
                &mut wire,
            )
            .unwrap();
        }
        let mut decoder = FrameDecoder::new(1024);
        let mut seen = 0;
        for byte in &wire {
            decoder.extend(std::slice::from_ref(byte));
            while let Some(frame) = decoder.next_frame().unwrap() {
                match frame.access::<ToWorker>().unwrap() {
                    ArchivedToWorker::Cancel { task } => assert_eq!(task.owner, seen),
                    _ => panic!("wrong message"),
                }
                seen += 1;
            }
        }
        assert_eq!(seen, 5);
        decoder.finish().unwrap();
    }

    #[test]
    fn oversized_frames_are_refused_before_buffering() {
        let mut decoder = FrameDecoder::new(100);
        let mut header = (1u32 << 30).to_le_bytes().to_vec();
        header.extend_from_slice(b"PRSM");
        decoder.extend(&header);
        let err = decoder.next_frame().unwrap_err();
        assert_eq!(
            err.to_string(),
            "frame of 1073741824 bytes exceeds the limit of 100 bytes"
        );
    }

    #[test]
    fn garbage_and_corrupt_payloads_are_clear_errors() {
        let mut decoder = FrameDecoder::new(100);
        decoder.extend(b"GET / HTTP/1.1\r\n");
        assert!(matches!(
            decoder.next_frame(),
            Err(FrameError::BadMagic { .. })
        ));

        let mut decoder = FrameDecoder::new(100);
        let mut wire = 16u32.to_le_bytes().to_vec();
        wire.extend_from_slice(b"PRSM");
        wire.extend_from_slice(&[0xff; 16]);
        decoder.extend(&wire);
        let frame = decoder.next_frame().unwrap().unwrap();
        let Err(err) = frame.access::<ToWorker>() else {
            panic!("garbage validated as a message");
        };
        assert!(
            err.to_string()
                .starts_with("malformed ToWorker frame of 16 bytes"),
            "{err}"
        );
    }

    #[test]
    fn a_stream_cut_mid_frame_is_truncated() {
        let mut wire = Vec::new();
        encode_frame(&ToWorker::Shutdown, &mut wire).unwrap();
        let mut decoder = FrameDecoder::new(1 << 10);
        decoder.extend(&wire[..wire.len() - 1]);
        assert!(decoder.next_frame().unwrap().is_none());
        assert!(matches!(
            decoder.finish(),
            Err(FrameError::Truncated { .. })
        ));
    }
}
