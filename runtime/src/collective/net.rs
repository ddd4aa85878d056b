//! A ring link between members on different nodes: a direct mutual-TLS QUIC connection from
//! each member to its right neighbour (certificates from the group's own CA), one
//! unidirectional stream of length-prefixed chunks. A writer task and a reader task keep a
//! window of chunks in flight each way, so the ring's single thread never waits on the
//! network while it reduces. A member that ends a collective closes its connections with the
//! failed rank as the close code, so the news travels around the ring; a peer that dies goes
//! silent and its link times out after [`quic::GROUP_IDLE`].

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use prism_transport::quic;
use prism_transport::tls::Identity;
use quinn::{Connection, ConnectionError, VarInt};
use tokio::sync::mpsc;

use super::ring::{CHUNK_BYTES, Fault, Link};

/// Chunks in flight each way.
const WINDOW: usize = 16;

/// This member's QUIC side: a small runtime and an endpoint.
pub(crate) struct Net {
    rt: tokio::runtime::Runtime,
    endpoint: quic::Server,
    identity: Identity,
}

impl Net {
    /// An endpoint on `ip` (any port) presenting `identity`.
    pub(crate) fn new(ip: std::net::IpAddr, identity: Identity) -> Result<Net, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("prism-collective")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start its network runtime: {e}"))?;
        let endpoint = {
            let _guard = rt.enter();
            quic::group_endpoint(SocketAddr::new(ip, 0), &identity).map_err(|e| e.to_string())?
        };
        Ok(Net {
            rt,
            endpoint,
            identity,
        })
    }

    /// Where other members reach it.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .expect("a bound endpoint has an address")
    }

    /// Starts waiting for the member of rank `from` of the group tagged `tag` to connect.
    pub(crate) fn expect(
        &self,
        tag: u64,
        from: u32,
    ) -> tokio::task::JoinHandle<Result<NetIn, Fault>> {
        let endpoint = self.endpoint.clone();
        self.rt.spawn(async move {
            let died = |reason: String| Fault::Died { rank: from, reason };
            loop {
                let Some(connection) = quic::accept_group(&endpoint).await else {
                    return Err(died("the endpoint closed".into()));
                };
                let mut stream = match connection.accept_uni().await {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::debug!("a group connection ended before its stream: {e}");
                        continue;
                    }
                };
                let mut hello = [0u8; 12];
                if stream.read_exact(&mut hello).await.is_err() {
                    continue;
                }
                let their_tag = u64::from_le_bytes(hello[..8].try_into().expect("8 bytes"));
                let rank = u32::from_le_bytes(hello[8..].try_into().expect("4 bytes"));
                if their_tag != tag || rank != from {
                    tracing::warn!(
                        rank,
                        "a group connection from another member or group: refused"
                    );
                    connection.close(VarInt::from_u32(0), b"not expected here");
                    continue;
                }
                let (tx, rx) = mpsc::channel(WINDOW);
                tokio::spawn(read_chunks(connection.clone(), stream, from, tx));
                return Ok(NetIn {
                    rx,
                    connection,
                    peer: from,
                    handle: tokio::runtime::Handle::current(),
                    timeout: None,
                });
            }
        })
    }

    /// Connects to the member of rank `to` at `addr` as rank `me` of the group tagged `tag`.
    pub(crate) fn connect(
        &self,
        addr: SocketAddr,
        tag: u64,
        me: u32,
        to: u32,
    ) -> Result<NetOut, Fault> {
        let (endpoint, identity) = (self.endpoint.clone(), self.identity.clone());
        let died = move |reason: String| Fault::Died { rank: to, reason };
        let connected = self.rt.spawn(async move {
            let connection = quic::connect_group(&endpoint, addr, &identity)
                .await
                .map_err(|e| died(e.to_string()))?;
            let mut stream = connection
                .open_uni()
                .await
                .map_err(|e| died(e.to_string()))?;
            let mut hello = tag.to_le_bytes().to_vec();
            hello.extend_from_slice(&me.to_le_bytes());
            stream
                .write_all(&hello)
                .await
                .map_err(|e| died(e.to_string()))?;
            let (tx, rx) = mpsc::channel::<Bytes>(WINDOW);
            let writer = tokio::spawn(write_chunks(connection.clone(), stream, to, rx));
            Ok::<_, Fault>((connection, tx, writer))
        });
        let (connection, tx, writer) = self.join(connected, to)??;
        Ok(NetOut {
            tx: Some(tx),
            writer: Some(writer),
            connection,
            peer: to,
            handle: self.rt.handle().clone(),
        })
    }

    /// The connection [`Net::expect`] waited for, within `timeout`.
    pub(crate) fn accepted(
        &self,
        expected: tokio::task::JoinHandle<Result<NetIn, Fault>>,
        from: u32,
        timeout: Duration,
    ) -> Result<NetIn, Fault> {
        let task = self.rt.spawn(async move {
            match tokio::time::timeout(timeout, expected).await {
                Ok(Ok(accepted)) => accepted,
                Ok(Err(e)) => Err(Fault::Died {
                    rank: from,
                    reason: format!("waiting for its link failed: {e}"),
                }),
                Err(_) => Err(Fault::TimedOut { rank: from }),
            }
        });
        self.join(task, from)?
    }

    /// Waits for a task of this runtime from any thread.
    fn join<T>(&self, task: tokio::task::JoinHandle<T>, rank: u32) -> Result<T, Fault> {
        futures::executor::block_on(task).map_err(|e| Fault::Died {
            rank,
            reason: format!("its link's task failed: {e}"),
        })
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.endpoint.close(VarInt::from_u32(0), b"done");
    }
}

/// What a closed connection says about the peer.
fn fault_of(error: &ConnectionError, rank: u32) -> Fault {
    match error {
        ConnectionError::ApplicationClosed(close) if close.error_code.into_inner() > 0 => {
            Fault::Aborted {
                rank: (close.error_code.into_inner() - 1) as u32,
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            }
        }
        ConnectionError::TimedOut => Fault::Died {
            rank,
            reason: format!("its link was silent for {:?}", quic::GROUP_IDLE),
        },
        other => Fault::Died {
            rank,
            reason: format!("its link ended: {other}"),
        },
    }
}

/// Writes the chunks queued on `rx`; when the queue closes (the link is dropped), finishes
/// the stream and waits (a little) for the peer to have read it all.
async fn write_chunks(
    connection: Connection,
    mut stream: quinn::SendStream,
    peer: u32,
    mut rx: mpsc::Receiver<Bytes>,
) -> Result<(), Fault> {
    while let Some(chunk) = rx.recv().await {
        let len = (chunk.len() as u32).to_le_bytes();
        let sent = match stream.write_all(&len).await {
            Ok(()) => stream.write_all(&chunk).await,
            Err(e) => Err(e),
        };
        if sent.is_err() {
            return Err(fault_of(&connection.closed().await, peer));
        }
    }
    let _ = stream.finish();
    let _ = tokio::time::timeout(quic::GROUP_IDLE, stream.stopped()).await;
    Ok(())
}

async fn read_chunks(
    connection: Connection,
    mut stream: quinn::RecvStream,
    peer: u32,
    tx: mpsc::Sender<Result<Bytes, Fault>>,
) {
    loop {
        let mut len = [0u8; 4];
        let read = match stream.read_exact(&mut len).await {
            Ok(()) => {
                let len = u32::from_le_bytes(len) as usize;
                if len > CHUNK_BYTES {
                    let reason = format!("sent a chunk of {len} bytes (at most {CHUNK_BYTES})");
                    Err(Fault::Protocol { rank: peer, reason })
                } else {
                    let mut chunk = vec![0u8; len];
                    match stream.read_exact(&mut chunk).await {
                        Ok(()) => Ok(Bytes::from(chunk)),
                        Err(_) => Err(fault_of(&connection.closed().await, peer)),
                    }
                }
            }
            Err(_) => Err(fault_of(&connection.closed().await, peer)),
        };
        let failed = read.is_err();
        if tx.send(read).await.is_err() || failed {
            return;
        }
    }
}

/// The sending end of a QUIC link.
pub(crate) struct NetOut {
    tx: Option<mpsc::Sender<Bytes>>,
    writer: Option<tokio::task::JoinHandle<Result<(), Fault>>>,
    connection: Connection,
    peer: u32,
    handle: tokio::runtime::Handle,
}

impl NetOut {
    fn failed(&mut self) -> Fault {
        self.tx = None;
        let ended = || {
            let reason = self.connection.close_reason();
            fault_of(&reason.unwrap_or(ConnectionError::LocallyClosed), self.peer)
        };
        match self.writer.take().map(futures::executor::block_on) {
            Some(Ok(Err(fault))) => fault,
            _ => ended(),
        }
    }
}

impl Link for NetOut {
    fn send(&mut self, bytes: &[u8]) -> Result<(), Fault> {
        let Some(tx) = self.tx.clone() else {
            return Err(self.failed());
        };
        let chunk = Bytes::copy_from_slice(bytes);
        match futures::executor::block_on(tx.send(chunk)) {
            Ok(()) => Ok(()),
            Err(_) => Err(self.failed()),
        }
    }

    fn recv(&mut self, _len: usize, _f: &mut dyn FnMut(&[u8])) -> Result<(), Fault> {
        unreachable!("an outgoing link only sends")
    }

    fn abort(&mut self, rank: u32, reason: &str) {
        let _guard = self.handle.enter();
        self.connection
            .close(VarInt::from_u32(rank + 1), reason.as_bytes());
    }
}

impl Drop for NetOut {
    fn drop(&mut self) {
        // Let the writer finish what is queued: the peer reads it before the close.
        self.tx = None;
        if let Some(writer) = self.writer.take() {
            let _ = futures::executor::block_on(writer);
        }
    }
}

/// The receiving end of a QUIC link.
pub(crate) struct NetIn {
    rx: mpsc::Receiver<Result<Bytes, Fault>>,
    connection: Connection,
    peer: u32,
    handle: tokio::runtime::Handle,
    timeout: Option<Duration>,
}

impl Link for NetIn {
    fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    fn send(&mut self, _bytes: &[u8]) -> Result<(), Fault> {
        unreachable!("an incoming link only receives")
    }

    fn recv(&mut self, len: usize, f: &mut dyn FnMut(&[u8])) -> Result<(), Fault> {
        let rank = self.peer;
        let next = match self.timeout {
            None => futures::executor::block_on(self.rx.recv()),
            Some(timeout) => {
                let (fire, fired) = futures::channel::oneshot::channel::<()>();
                self.handle.spawn(async move {
                    tokio::time::sleep(timeout).await;
                    let _ = fire.send(());
                });
                let recv = std::pin::pin!(self.rx.recv());
                match futures::executor::block_on(futures::future::select(recv, fired)) {
                    futures::future::Either::Left((next, _)) => next,
                    futures::future::Either::Right(_) => return Err(Fault::TimedOut { rank }),
                }
            }
        };
        let chunk = match next {
            Some(chunk) => chunk?,
            None => {
                return Err(Fault::Died {
                    rank,
                    reason: "its link's reader stopped".into(),
                });
            }
        };
        if chunk.len() != len {
            return Err(Fault::Protocol {
                rank,
                reason: format!("sent a chunk of {} bytes where {len} were due", chunk.len()),
            });
        }
        f(&chunk);
        Ok(())
    }

    fn abort(&mut self, rank: u32, reason: &str) {
        let _guard = self.handle.enter();
        self.connection
            .close(VarInt::from_u32(rank + 1), reason.as_bytes());
    }
}
