//! Direct links between two processes of a cluster (an owner and the worker it leased, a driver
//! and a worker on another host): QUIC connections driven by the threads that use them rather
//! than by a runtime's.
//!
//! A message through tokio-driven QUIC crosses threads at both ends: the sender hands it to a
//! runtime thread, and the receiver's runtime thread wakes the thread that waits for it. On
//! these virtual machines each wake costs 10-30 us; session 25 measured a 64-byte round trip at
//! 92.7 us that way and at 22.8 us with both ends on one thread (issue 20 asks for 50 us). Here
//! an endpoint's state sits behind a lock that any thread may take: the thread that sends
//! encrypts and writes its packets itself ([`Endpoint::send`]), and a thread that waits for an
//! answer reads the socket itself ([`Endpoint::try_drive`], while it spins), so a round trip
//! crosses no other thread on either side. A thread that keeps the links going while nobody
//! waits (acknowledgements, timers, frames that arrive unasked) sleeps on the socket with
//! [`Endpoint::wait`] and then drives.
//!
//! A link is one bidirectional stream of length-prefixed frames (as on the Unix links), opened
//! by the side that connects. Both sides present certificates from the cluster's CA: the
//! accepting side requires one in the TLS handshake ([`Identity::mutual_server_config`]), so a
//! stranger's connection fails before any frame is read. Frames are checked against the
//! endpoint's size limit as they arrive; a malformed or oversized one closes its link, naming
//! why, and a peer that opens more streams than the one has them stopped.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{
    ClientConfig, ConnectionHandle, DatagramEvent, Dir, EcnCodepoint, EndpointConfig, ReadError,
    ServerConfig, StreamEvent, StreamId, Transmit, VarInt, WriteError,
};
use quinn_udp::{BATCH_SIZE, RecvMeta, UdpSockRef, UdpSocketState};

use crate::frame::{Frame, FrameDecoder};
use crate::path::MAX_UDP_PAYLOAD;
use crate::quic::{self, HOST_LIVENESS, codes};
use crate::tls::{CLUSTER_SERVER_NAME, Identity};

/// The ALPN of direct links.
pub const DIRECT_ALPN: &[u8] = b"prism-direct/1";

/// A link of an endpoint, as its events and calls name it.
pub type LinkId = usize;

/// What went wrong on a direct endpoint or link.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    /// Certificates or keys.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The endpoint could not be set up.
    #[error("cannot open a direct endpoint at {addr}: {reason}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A connection could not be started.
    #[error("cannot connect a direct link to {peer}: {reason}")]
    Connect {
        /// Whom to.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The link is not (or no longer) one of the endpoint's.
    #[error("no direct link {0} here (it ended and was dropped)")]
    NoLink(LinkId),
    /// The link ended.
    #[error("the direct link to {peer} ended: {reason}")]
    Ended {
        /// The peer.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// What happened on an endpoint's links, in order.
#[derive(Debug)]
pub enum Event {
    /// A peer connected to this endpoint and opened its stream: its frames follow.
    Accepted {
        /// The new link.
        link: LinkId,
        /// Its address.
        peer: SocketAddr,
    },
    /// A link this endpoint connected finished its handshake (frames sent before went out).
    Connected(LinkId),
    /// A whole frame arrived.
    Frame(LinkId, Frame),
    /// A link ended: closed by either side, timed out, or refused a malformed frame. Sends to
    /// it fail from now on; its id is dropped once its connection drains.
    Closed {
        /// The link.
        link: LinkId,
        /// Its peer.
        peer: SocketAddr,
        /// Why it ended.
        reason: String,
    },
}

/// A QUIC endpoint whose links any thread may drive.
#[derive(Debug)]
pub struct Endpoint {
    io: Io,
    local: SocketAddr,
    inner: Mutex<Inner>,
}

/// The socket and what the kernel lets it do (segmentation offload, ECN).
#[derive(Debug)]
struct Io {
    socket: std::net::UdpSocket,
    udp: UdpSocketState,
}

struct Inner {
    endpoint: quinn_proto::Endpoint,
    server: ServerConfig,
    client: Arc<QuicClientConfig>,
    links: HashMap<ConnectionHandle, Link>,
    max_frame: usize,
    /// A datagram being built.
    buf: Vec<u8>,
    /// Where datagrams are received, [`BATCH_SIZE`] at a time.
    recv: Box<[u8]>,
    /// A datagram the socket had no room for: it goes first, before any other is built.
    blocked: Option<(Transmit, Vec<u8>)>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("links", &self.links.len())
            .field("max_frame", &self.max_frame)
            .finish_non_exhaustive()
    }
}

/// One connection and its stream.
struct Link {
    conn: quinn_proto::Connection,
    peer: SocketAddr,
    /// The side that connected opens the stream once the handshake is done.
    client: bool,
    stream: Option<StreamId>,
    decoder: FrameDecoder,
    /// Bytes sent that the stream has not taken yet (flow control), from `taken` on.
    out: Vec<u8>,
    taken: usize,
    /// Why the link ended, once it did (its `Closed` event was given).
    ended: Option<String>,
}

/// Datagram batches read per drive at most, so that a flood cannot hold a driver forever.
const MAX_BATCHES: usize = 32;

impl Endpoint {
    /// An endpoint on `addr` (port 0 for any) presenting `identity`, taking frames of up to
    /// `max_frame` bytes.
    pub fn bind(
        addr: SocketAddr,
        identity: &Identity,
        max_frame: usize,
    ) -> Result<Endpoint, DirectError> {
        let bind_error = |reason: String| DirectError::Bind { addr, reason };
        let socket = quic::udp_socket(addr, false).map_err(|e| bind_error(e.to_string()))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| bind_error(e.to_string()))?;
        let local = socket.local_addr().map_err(|e| bind_error(e.to_string()))?;
        let udp = UdpSocketState::new(UdpSockRef::from(&socket))
            .map_err(|e| bind_error(e.to_string()))?;
        let server_tls = identity.mutual_server_config(&[DIRECT_ALPN])?;
        let server_crypto =
            QuicServerConfig::try_from(server_tls).map_err(|e| bind_error(e.to_string()))?;
        let server = ServerConfig::with_crypto(Arc::new(server_crypto));
        let client_tls = identity.client_config(DIRECT_ALPN)?;
        let client =
            QuicClientConfig::try_from(client_tls).map_err(|e| bind_error(e.to_string()))?;
        let mut config = EndpointConfig::default();
        config
            .max_udp_payload_size(MAX_UDP_PAYLOAD)
            .map_err(|e| bind_error(e.to_string()))?;
        let endpoint = quinn_proto::Endpoint::new(
            Arc::new(config),
            Some(Arc::new(server.clone())),
            true,
            None,
        );
        let slot = usize::from(MAX_UDP_PAYLOAD).max(udp.gro_segments() * 1500);
        Ok(Endpoint {
            io: Io { socket, udp },
            local,
            inner: Mutex::new(Inner {
                endpoint,
                server,
                client: Arc::new(client),
                links: HashMap::new(),
                max_frame,
                buf: Vec::new(),
                recv: vec![0u8; slot * BATCH_SIZE].into_boxed_slice(),
                blocked: None,
            }),
        })
    }

    /// The address peers connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Starts a link to the endpoint at `peer`. Frames sent to it before its handshake is done
    /// wait and go out in order; [`Event::Connected`] says when it is.
    pub fn connect(&self, peer: SocketAddr) -> Result<LinkId, DirectError> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let mut config = ClientConfig::new(inner.client.clone());
        config.transport_config(quic::transport_config(HOST_LIVENESS, peer));
        let (handle, conn) = inner
            .endpoint
            .connect(now, config, peer, CLUSTER_SERVER_NAME)
            .map_err(|e| DirectError::Connect {
                peer,
                reason: e.to_string(),
            })?;
        let link = Link::new(conn, peer, true, inner.max_frame);
        inner.links.insert(handle, link);
        inner.transmit(&self.io, now);
        Ok(handle.0)
    }

    /// Starts a link to the endpoint at `peer` whose first frame is `hello` (see
    /// [`Endpoint::connect`]).
    pub fn connect_with(
        &self,
        peer: SocketAddr,
        hello: &crate::DirectHello,
    ) -> Result<LinkId, DirectError> {
        let mut frame = Vec::new();
        crate::encode_frame(hello, &mut frame).map_err(|e| DirectError::Connect {
            peer,
            reason: format!("cannot encode the hello: {e}"),
        })?;
        let link = self.connect(peer)?;
        self.send(link, &frame)?;
        Ok(link)
    }

    /// Sends `bytes` (whole frames, as [`crate::encode_frame`] makes them) on `link`, in order
    /// after what was sent before; the packets leave from this thread. Bytes the peer's flow
    /// control cannot take yet wait in the link and leave as it opens.
    pub fn send(&self, link: LinkId, bytes: &[u8]) -> Result<(), DirectError> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let entry = inner
            .links
            .get_mut(&ConnectionHandle(link))
            .ok_or(DirectError::NoLink(link))?;
        if let Some(reason) = &entry.ended {
            return Err(DirectError::Ended {
                peer: entry.peer,
                reason: reason.clone(),
            });
        }
        entry.out.extend_from_slice(bytes);
        entry.flush();
        inner.transmit(&self.io, now);
        Ok(())
    }

    /// Closes `link`, telling the peer `reason`; unknown links are ignored.
    pub fn close(&self, link: LinkId, reason: &str) {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        if let Some(entry) = inner.links.get_mut(&ConnectionHandle(link)) {
            entry
                .conn
                .close(now, codes::DONE, Bytes::copy_from_slice(reason.as_bytes()));
            entry.ended.get_or_insert_with(|| reason.to_string());
        }
        inner.transmit(&self.io, now);
    }

    /// The peer of `link`, while the endpoint knows it.
    pub fn peer(&self, link: LinkId) -> Option<SocketAddr> {
        let inner = self.inner.lock();
        inner.links.get(&ConnectionHandle(link)).map(|l| l.peer)
    }

    /// Reads what arrived, runs the links' timers and sends what they have to send, without
    /// blocking (waiting only for another thread that drives); what happened goes to `events`.
    pub fn drive(&self, events: &mut Vec<Event>) {
        self.inner.lock().drive(&self.io, Instant::now(), events);
    }

    /// As [`Endpoint::drive`], unless another thread is driving (then nothing, and false): for
    /// a thread that spins while it waits.
    pub fn try_drive(&self, events: &mut Vec<Event>) -> bool {
        let Some(mut inner) = self.inner.try_lock() else {
            return false;
        };
        inner.drive(&self.io, Instant::now(), events);
        true
    }

    /// Sleeps until the socket has something to read (or room again, when a datagram waits
    /// for it), a link's timer is due, or `limit` passes; then call [`Endpoint::drive`].
    pub fn wait(&self, limit: Duration) -> std::io::Result<()> {
        self.wait_also(None, limit)
    }

    /// As [`Endpoint::wait`], waking also when `also` (another descriptor) is readable.
    pub fn wait_also(&self, also: Option<RawFd>, limit: Duration) -> std::io::Result<()> {
        self.sleep(true, also, limit)
    }

    /// Sleeps until `also` is readable, a link's timer is due, or `limit` passes, but not for
    /// the socket: for a thread that keeps the links' timers while another reads the socket
    /// (one spinning in [`Endpoint::try_drive`]), so that a datagram wakes only that one.
    pub fn wait_timers(&self, also: RawFd, limit: Duration) -> std::io::Result<()> {
        self.sleep(false, Some(also), limit)
    }

    fn sleep(&self, socket: bool, also: Option<RawFd>, limit: Duration) -> std::io::Result<()> {
        let now = Instant::now();
        let (due, blocked) = {
            let mut inner = self.inner.lock();
            (inner.next_timeout(), inner.blocked.is_some())
        };
        let wait = due.map_or(limit, |due| due.saturating_duration_since(now).min(limit));
        let events = if blocked {
            libc::POLLIN | libc::POLLOUT
        } else {
            libc::POLLIN
        };
        let mut fds = [
            libc::pollfd {
                // A negative descriptor is skipped by ppoll.
                fd: if socket {
                    self.io.socket.as_raw_fd()
                } else {
                    -1
                },
                events,
                revents: 0,
            },
            libc::pollfd {
                fd: also.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let timeout = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(wait.subsec_nanos() as i32),
        };
        let count = if also.is_some() { 2 } else { 1 };
        // SAFETY: `fds` holds `count` valid pollfds and `timeout` is a valid timespec, both
        // alive for the call; a null signal mask keeps the thread's own.
        let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), count, &timeout, std::ptr::null()) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }

    /// When a link's timer is due next (acknowledgements, keep-alives, losses): a thread that
    /// waits on the socket among others wakes by then and drives.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.inner.lock().next_timeout()
    }

    /// The socket, for a thread that waits on it among others (readable: drive).
    pub fn as_raw_fd(&self) -> RawFd {
        self.io.socket.as_raw_fd()
    }
}

impl Drop for Endpoint {
    /// Closes every link and sends the closes once, so peers hear of the end at once rather
    /// than when their links time out.
    fn drop(&mut self) {
        let now = Instant::now();
        let inner = self.inner.get_mut();
        for link in inner.links.values_mut() {
            link.conn
                .close(now, codes::DONE, Bytes::from_static(b"endpoint closed"));
        }
        inner.transmit(&self.io, now);
    }
}

impl Inner {
    fn drive(&mut self, io: &Io, now: Instant, events: &mut Vec<Event>) {
        self.receive(io, now);
        for link in self.links.values_mut() {
            if link.conn.poll_timeout().is_some_and(|due| due <= now) {
                link.conn.handle_timeout(now);
            }
        }
        let Inner {
            endpoint, links, ..
        } = self;
        for (&handle, link) in links.iter_mut() {
            link.step(handle, endpoint, now, events);
        }
        self.transmit(io, now);
        self.links.retain(|_, link| !link.conn.is_drained());
    }

    /// Reads the datagrams waiting on the socket and hands them to their connections.
    fn receive(&mut self, io: &Io, now: Instant) {
        let mut metas = [RecvMeta::default(); BATCH_SIZE];
        let slot = self.recv.len() / BATCH_SIZE;
        for _ in 0..MAX_BATCHES {
            let received = {
                let mut slots = self.recv.chunks_mut(slot).map(IoSliceMut::new);
                let mut iovs: [IoSliceMut<'_>; BATCH_SIZE] =
                    std::array::from_fn(|_| slots.next().expect("BATCH_SIZE slots"));
                io.udp
                    .recv(UdpSockRef::from(&io.socket), &mut iovs, &mut metas)
            };
            let n = match received {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!("a direct endpoint's read failed: {e}");
                    return;
                }
            };
            for (i, meta) in metas.iter().take(n).enumerate() {
                let mut data = BytesMut::from(&self.recv[i * slot..i * slot + meta.len]);
                let ecn = meta.ecn.map(proto_ecn);
                while !data.is_empty() {
                    let datagram = data.split_to(meta.stride.min(data.len()));
                    self.datagram(io, now, (meta.addr, meta.dst_ip, ecn), datagram);
                }
            }
        }
    }

    fn datagram(
        &mut self,
        io: &Io,
        now: Instant,
        (remote, local_ip, ecn): (SocketAddr, Option<IpAddr>, Option<EcnCodepoint>),
        data: BytesMut,
    ) {
        let mut response = Vec::new();
        match self
            .endpoint
            .handle(now, remote, local_ip, ecn, data, &mut response)
        {
            Some(DatagramEvent::NewConnection(incoming)) => {
                let mut config = self.server.clone();
                config.transport_config(quic::transport_config(HOST_LIVENESS, remote));
                match self
                    .endpoint
                    .accept(incoming, now, &mut response, Some(Arc::new(config)))
                {
                    Ok((handle, conn)) => {
                        let link = Link::new(conn, remote, false, self.max_frame);
                        self.links.insert(handle, link);
                    }
                    Err(refused) => {
                        tracing::info!(peer = %remote, "refused a direct link: {}", refused.cause);
                        if let Some(transmit) = refused.response {
                            let _ = io.send(&transmit, &response[..transmit.size]);
                        }
                    }
                }
            }
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                if let Some(link) = self.links.get_mut(&handle) {
                    link.conn.handle_event(event);
                }
            }
            Some(DatagramEvent::Response(transmit)) => {
                let _ = io.send(&transmit, &response[..transmit.size]);
            }
            None => {}
        }
    }

    /// Sends what the connections have to send, until they have nothing or the socket is full.
    fn transmit(&mut self, io: &Io, now: Instant) {
        if let Some((transmit, bytes)) = self.blocked.take()
            && io.send(&transmit, &bytes).is_err()
        {
            self.blocked = Some((transmit, bytes));
            return;
        }
        let max = io.udp.max_gso_segments();
        let Inner {
            links,
            buf,
            blocked,
            ..
        } = self;
        for link in links.values_mut() {
            loop {
                buf.clear();
                let Some(transmit) = link.conn.poll_transmit(now, max, buf) else {
                    break;
                };
                if io.send(&transmit, &buf[..transmit.size]).is_err() {
                    let bytes = buf[..transmit.size].to_vec();
                    *blocked = Some((transmit, bytes));
                    return;
                }
            }
        }
    }

    /// The earliest timer of any link.
    fn next_timeout(&mut self) -> Option<Instant> {
        self.links
            .values_mut()
            .filter_map(|link| link.conn.poll_timeout())
            .min()
    }
}

impl Io {
    /// Sends one transmit; `Err` only when the socket has no room (other failures are logged
    /// by quinn-udp and the datagram counts as lost, for QUIC to send again).
    fn send(&self, transmit: &Transmit, contents: &[u8]) -> Result<(), ()> {
        let udp_transmit = quinn_udp::Transmit {
            destination: transmit.destination,
            ecn: transmit.ecn.map(udp_ecn),
            contents,
            segment_size: transmit.segment_size,
            src_ip: transmit.src_ip,
        };
        match self.udp.send(UdpSockRef::from(&self.socket), &udp_transmit) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(()),
            Err(e) => {
                tracing::debug!(to = %transmit.destination, "a direct datagram was not sent: {e}");
                Ok(())
            }
        }
    }
}

impl Link {
    fn new(conn: quinn_proto::Connection, peer: SocketAddr, client: bool, max: usize) -> Self {
        Link {
            conn,
            peer,
            client,
            stream: None,
            decoder: FrameDecoder::new(max),
            out: Vec::new(),
            taken: 0,
            ended: None,
        }
    }

    /// Takes the connection's events: the endpoint's part of them, the handshake's end, the
    /// stream's bytes (whole frames become events), the connection's loss; then writes what
    /// waits to the stream.
    fn step(
        &mut self,
        handle: ConnectionHandle,
        endpoint: &mut quinn_proto::Endpoint,
        now: Instant,
        events: &mut Vec<Event>,
    ) {
        let link = handle.0;
        loop {
            while let Some(event) = self.conn.poll_endpoint_events() {
                if let Some(back) = endpoint.handle_event(handle, event) {
                    self.conn.handle_event(back);
                }
            }
            let Some(event) = self.conn.poll() else {
                break;
            };
            match event {
                quinn_proto::Event::Connected if self.client => {
                    self.stream = self.conn.streams().open(Dir::Bi);
                    if self.stream.is_none() {
                        self.end(now, "the peer allows no stream".to_string(), link, events);
                    } else {
                        events.push(Event::Connected(link));
                    }
                }
                quinn_proto::Event::ConnectionLost { reason } => {
                    self.end(now, reason.to_string(), link, events);
                }
                quinn_proto::Event::Stream(StreamEvent::Opened { dir }) => {
                    while let Some(id) = self.conn.streams().accept(dir) {
                        if dir == Dir::Bi && self.stream.is_none() && !self.client {
                            self.stream = Some(id);
                            events.push(Event::Accepted {
                                link,
                                peer: self.peer,
                            });
                        } else {
                            // A link is one stream: others are stopped unread.
                            let _ = self.conn.recv_stream(id).stop(codes::REFUSED);
                        }
                    }
                    self.read(now, link, events);
                }
                quinn_proto::Event::Stream(StreamEvent::Readable { id })
                    if Some(id) == self.stream =>
                {
                    self.read(now, link, events);
                }
                quinn_proto::Event::Stream(StreamEvent::Stopped { id, error_code })
                    if Some(id) == self.stream =>
                {
                    let reason = format!("the peer stopped reading (code {error_code})");
                    self.end(now, reason, link, events);
                }
                _ => {}
            }
        }
        self.flush();
    }

    /// Reads what the stream has and hands on the whole frames; a malformed frame or the
    /// stream's end closes the link.
    fn read(&mut self, now: Instant, link: LinkId, events: &mut Vec<Event>) {
        let Some(id) = self.stream else {
            return;
        };
        let mut ended = None;
        {
            let Link { conn, decoder, .. } = self;
            let mut recv = conn.recv_stream(id);
            let Ok(mut chunks) = recv.read(true) else {
                return;
            };
            loop {
                match chunks.next(usize::MAX) {
                    Ok(Some(chunk)) => decoder.extend(&chunk.bytes),
                    Ok(None) => {
                        ended = Some("the peer finished its stream".to_string());
                        break;
                    }
                    Err(ReadError::Blocked) => break,
                    Err(ReadError::Reset(code)) => {
                        ended = Some(format!("the peer reset its stream (code {code})"));
                        break;
                    }
                }
            }
            let _ = chunks.finalize();
        }
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => events.push(Event::Frame(link, frame)),
                Ok(None) => break,
                Err(e) => {
                    let reason = format!("bad frame: {e}");
                    tracing::warn!(peer = %self.peer, "closing a direct link: {reason}");
                    self.close_with(now, codes::BAD_FRAME, &reason);
                    self.end(now, reason, link, events);
                    return;
                }
            }
        }
        if let Some(reason) = ended {
            self.close_with(now, codes::DONE, &reason);
            self.end(now, reason, link, events);
        }
    }

    /// Writes what waits to the stream, as far as flow control lets it.
    fn flush(&mut self) {
        let Some(id) = self.stream else {
            return;
        };
        while self.taken < self.out.len() {
            match self.conn.send_stream(id).write(&self.out[self.taken..]) {
                Ok(n) => self.taken += n,
                Err(WriteError::Blocked) => break,
                Err(_) => {
                    // Stopped or closed: the link's end is reported by its events.
                    self.taken = self.out.len();
                }
            }
        }
        if self.taken == self.out.len() {
            self.out.clear();
            self.taken = 0;
        }
    }

    fn close_with(&mut self, now: Instant, code: VarInt, reason: &str) {
        let reason = Bytes::copy_from_slice(reason.as_bytes());
        self.conn.close(now, code, reason);
    }

    /// Notes the link's end once, and reports it (an accepting side's link only once its peer
    /// opened the stream: before, it was never one).
    fn end(&mut self, now: Instant, reason: String, link: LinkId, events: &mut Vec<Event>) {
        if self.ended.is_some() {
            return;
        }
        if !self.conn.is_closed() {
            self.close_with(now, codes::DONE, &reason);
        }
        self.ended = Some(reason.clone());
        self.out.clear();
        self.taken = 0;
        if !self.client && self.stream.is_none() {
            // Never accepted (a failed handshake, a stranger): there is no link to report.
            tracing::info!(peer = %self.peer, "refused a direct link: {reason}");
            return;
        }
        events.push(Event::Closed {
            link,
            peer: self.peer,
            reason,
        });
    }
}

fn proto_ecn(ecn: quinn_udp::EcnCodepoint) -> EcnCodepoint {
    match ecn {
        quinn_udp::EcnCodepoint::Ect0 => EcnCodepoint::Ect0,
        quinn_udp::EcnCodepoint::Ect1 => EcnCodepoint::Ect1,
        quinn_udp::EcnCodepoint::Ce => EcnCodepoint::Ce,
    }
}

fn udp_ecn(ecn: EcnCodepoint) -> quinn_udp::EcnCodepoint {
    match ecn {
        EcnCodepoint::Ect0 => quinn_udp::EcnCodepoint::Ect0,
        EcnCodepoint::Ect1 => quinn_udp::EcnCodepoint::Ect1,
        EcnCodepoint::Ce => quinn_udp::EcnCodepoint::Ce,
    }
}
