//! Bulk object transfer between hosts: a node pulls an object's bytes from the node that holds
//! them, in chunks on parallel QUIC streams, straight into the destination buffer (its own
//! shared-memory segment). Each chunk is one stream: a [`PullRequest`] frame, a [`PullReply`]
//! frame, then exactly the requested bytes, unframed.
//!
//! The serving side hands out [`Bytes`] views of what it stores (a segment can be wrapped with
//! [`Bytes::from_owner`]), so it copies nothing before QUIC encrypts.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use quinn::Connection;

use crate::frame::FrameDecoder;
use crate::message::{ArchivedPullReply, PullKey, PullReply, PullRequest};
use crate::quic::{self, QuicError};

/// Bytes per chunk (one stream each).
pub const CHUNK: usize = 8 << 20;
/// Chunks in flight at once per pull.
pub const PARALLEL: usize = 4;

/// Where a serving node finds what it is asked for: objects, and the job binaries it has.
pub trait ObjectSource: Send + Sync + 'static {
    /// The bytes under `key`, if this node holds them.
    fn bytes(&self, key: &PullKey) -> Option<Bytes>;
}

/// The SHA-256 of `bytes`: how job binaries are named and checked.
pub fn content_hash(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Accepts members on `endpoint` (welcoming them as `name`) and serves their pulls from
/// `source`, until the endpoint closes. Joiners are refused: this endpoint issues nothing.
pub async fn serve_endpoint(server: quic::Server, name: String, source: Arc<dyn ObjectSource>) {
    while let Some(accepted) = quic::accept(&server).await {
        match accepted {
            quic::Accepted::Member(connection) => {
                let (name, source) = (name.clone(), source.clone());
                tokio::spawn(async move {
                    if quic::welcome(&connection, &name, None).await.is_ok() {
                        serve_pulls(connection, source).await;
                    }
                });
            }
            quic::Accepted::Joiner(connection) => quic::close_for(
                &connection,
                quic::codes::REFUSED,
                "this endpoint serves objects; join at the head",
            ),
        }
    }
}

/// Serves pulls on `connection` from `source` until the connection ends. A malformed request
/// closes the connection (logged); a missing object or a bad range is answered on its stream.
pub async fn serve_pulls(connection: Connection, source: Arc<dyn ObjectSource>) {
    let peer = connection.remote_address();
    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
        let (connection, source) = (connection.clone(), source.clone());
        tokio::spawn(async move {
            let mut decoder = FrameDecoder::new(4 << 10);
            let frame = match quic::recv_frame(&mut recv, &mut decoder, peer).await {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => {
                    quic::close_for(&connection, quic::codes::BAD_FRAME, &e.to_string());
                    return;
                }
            };
            let request = match frame.access::<PullRequest>() {
                Ok(request) => request,
                Err(e) => {
                    quic::close_for(&connection, quic::codes::BAD_FRAME, &e.to_string());
                    return;
                }
            };
            let Ok(key) = rkyv::deserialize::<PullKey, rkyv::rancor::Error>(&request.key) else {
                return;
            };
            let (offset, len) = (request.offset.to_native(), request.len.to_native());
            let (reply, body) = match source.bytes(&key) {
                None => (PullReply::Missing(format!("{key} is not here")), None),
                Some(bytes) => {
                    let total = bytes.len() as u64;
                    match offset.checked_add(len) {
                        Some(end) if end <= total => (
                            PullReply::Sending(total),
                            Some(bytes.slice(offset as usize..end as usize)),
                        ),
                        _ => (
                            PullReply::Missing(format!(
                                "bytes {offset}..+{len} are outside {key} ({total} bytes)"
                            )),
                            None,
                        ),
                    }
                }
            };
            if quic::send_frame(&mut send, &reply).await.is_err() {
                return;
            }
            if let Some(body) = body
                && let Err(e) = send.write_chunk(body).await
            {
                tracing::debug!(%peer, %key, "a pull ended early: {e}");
                return;
            }
            let _ = send.finish();
        });
    }
}

/// Pulls `key`, of `dest.len()` bytes, from the node at the other end of `connection` into
/// `dest`, in [`CHUNK`]-sized ranges, [`PARALLEL`] at a time.
pub async fn pull(
    connection: &Connection,
    key: &PullKey,
    dest: &mut [u8],
) -> Result<(), QuicError> {
    let peer = connection.remote_address();
    let total = dest.len() as u64;
    // A plain loop over a FuturesUnordered (not a stream adapter with a closure), so the
    // future stays Send for any caller, spawned tasks included.
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut offset = 0u64;
    for slice in dest.chunks_mut(CHUNK) {
        if in_flight.len() == PARALLEL
            && let Some(result) = in_flight.next().await
        {
            result?;
        }
        let len = slice.len() as u64;
        in_flight.push(pull_range(connection, peer, key, offset, total, slice));
        offset += len;
    }
    while let Some(result) = in_flight.next().await {
        result?;
    }
    Ok(())
}

async fn pull_range(
    connection: &Connection,
    peer: SocketAddr,
    key: &PullKey,
    offset: u64,
    total: u64,
    dest: &mut [u8],
) -> Result<(), QuicError> {
    let connection_error = |reason: String| QuicError::Connection { peer, reason };
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|e| connection_error(e.to_string()))?;
    let request = PullRequest {
        key: key.clone(),
        offset,
        len: dest.len() as u64,
    };
    quic::send_frame(&mut send, &request).await?;
    let _ = send.finish();
    // The reply header is read frame by frame; the bytes after it are the payload, and the
    // decoder may already hold the first of them.
    let mut decoder = FrameDecoder::new(4 << 10);
    let frame = quic::recv_frame(&mut recv, &mut decoder, peer)
        .await?
        .ok_or_else(|| connection_error(format!("pulling {key}: the stream ended early")))?;
    match frame
        .access::<PullReply>()
        .map_err(|source| QuicError::Frame { peer, source })?
    {
        ArchivedPullReply::Sending(len) if len.to_native() == total => {}
        ArchivedPullReply::Sending(len) => {
            return Err(QuicError::Refused {
                peer,
                reason: format!(
                    "{key} is {} bytes there, {total} were expected",
                    len.to_native()
                ),
            });
        }
        ArchivedPullReply::Missing(reason) => {
            return Err(QuicError::Refused {
                peer,
                reason: reason.to_string(),
            });
        }
    }
    let early = decoder.take_buffered();
    if early.len() > dest.len() {
        return Err(connection_error(format!(
            "pulling {key}: the peer sent more bytes than asked for"
        )));
    }
    dest[..early.len()].copy_from_slice(&early);
    recv.read_exact(&mut dest[early.len()..])
        .await
        .map_err(|e| connection_error(format!("pulling {key}: {e}")))
}
