//! Frame readers over blocking (`std::io::Read`) and async (`tokio::io::AsyncRead`) streams.
//! Writing needs no helper: encode frames into a buffer with [`encode_frame`](crate::encode_frame)
//! and write it whole, so many frames share one system call.

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{Frame, FrameDecoder, FrameError};

/// Reads frames from a blocking stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    decoder: FrameDecoder,
}

impl<R: std::io::Read> FrameReader<R> {
    /// Wraps `inner`, refusing frames longer than `max_frame`.
    pub fn new(inner: R, max_frame: usize) -> Self {
        FrameReader {
            inner,
            decoder: FrameDecoder::new(max_frame),
        }
    }

    /// The next frame; `Ok(None)` at a clean end of stream.
    pub fn read_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(frame));
            }
            let inner = &mut self.inner;
            if self.decoder.fill_with(|buf| inner.read(buf))? == 0 {
                self.decoder.finish()?;
                return Ok(None);
            }
        }
    }

    /// Reads what is available with `read` (for non-blocking reads) and returns a frame if one
    /// is whole. `read` returning zero bytes is the end of the stream.
    pub fn poll_with(
        &mut self,
        read: impl FnOnce(&mut R, &mut [u8]) -> std::io::Result<usize>,
    ) -> Result<Option<Frame>, FrameError> {
        if let Some(frame) = self.decoder.next_frame()? {
            return Ok(Some(frame));
        }
        let inner = &mut self.inner;
        match self.decoder.fill_with(|buf| read(inner, buf)) {
            Ok(0) => {
                self.decoder.finish()?;
                Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()))
            }
            Ok(_) => self.decoder.next_frame(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

/// Reads frames from an async stream.
#[derive(Debug)]
pub struct AsyncFrameReader<R> {
    inner: R,
    decoder: FrameDecoder,
}

impl<R: AsyncRead + Unpin> AsyncFrameReader<R> {
    /// Wraps `inner`, refusing frames longer than `max_frame`.
    pub fn new(inner: R, max_frame: usize) -> Self {
        AsyncFrameReader {
            inner,
            decoder: FrameDecoder::new(max_frame),
        }
    }

    /// The next frame; `Ok(None)` at a clean end of stream.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(frame));
            }
            let buf = self.decoder.spare(64 << 10);
            let n = self.inner.read(buf).await?;
            if n == 0 {
                self.decoder.finish()?;
                return Ok(None);
            }
            self.decoder.advance(n);
        }
    }

    /// The reader and the decoder, holding what was received after the last frame returned.
    pub fn into_parts(self) -> (R, FrameDecoder) {
        (self.inner, self.decoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ArchivedToWorker, ToWorker, encode_frame};
    use tokio::io::AsyncWriteExt;

    #[test]
    fn blocking_reader_reads_frames_then_clean_eof() {
        let mut wire = Vec::new();
        encode_frame(&ToWorker::Welcome, &mut wire).unwrap();
        encode_frame(&ToWorker::Shutdown, &mut wire).unwrap();
        let mut reader = FrameReader::new(&wire[..], 1024);
        let mut kinds = Vec::new();
        while let Some(frame) = reader.read_frame().unwrap() {
            kinds.push(match frame.access::<ToWorker>().unwrap() {
                ArchivedToWorker::Welcome => "welcome",
                ArchivedToWorker::Shutdown => "shutdown",
                _ => "other",
            });
        }
        assert_eq!(kinds, ["welcome", "shutdown"]);
        assert!(reader.read_frame().unwrap().is_none());
    }

    #[tokio::test]
    async fn async_reader_over_a_unix_socket_survives_a_bad_peer_with_an_error() {
        let (mut a, b) = tokio::net::UnixStream::pair().unwrap();
        let mut reader = AsyncFrameReader::new(b, 1 << 20);
        let mut wire = Vec::new();
        encode_frame(&ToWorker::Welcome, &mut wire).unwrap();
        wire.extend_from_slice(b"garbage!");
        a.write_all(&wire).await.unwrap();
        assert!(reader.read_frame().await.unwrap().is_some());
        assert!(matches!(
            reader.read_frame().await,
            Err(FrameError::BadMagic { .. })
        ));
    }
}
