//! QUIC between hosts (quinn), mutual TLS under the cluster's CA, and Prism's frames on QUIC
//! streams.
//!
//! One endpoint per host serves two application protocols:
//! - [`CLUSTER_ALPN`]: members only. The client must present a certificate from the cluster CA;
//!   a connection without one is closed before any stream is read. The first frames are the
//!   [`HostHello`] / [`HostReply`] handshake (protocol version, job binary fingerprint).
//! - [`JOIN_ALPN`]: a host without a certificate sends a [`JoinRequest`] with the token's
//!   secret, having checked the head against the CA fingerprint in the token; the head answers
//!   with a certificate ([`JoinReply`]) or a refusal.
//!
//! A frame that is too large or malformed is an error for that stream's reader; the caller closes
//! that connection with [`close_for`], which logs and sends the reason, and nothing else is
//! touched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};

use crate::frame::{Frame, FrameDecoder, FrameError, Message, encode_frame};
use crate::message::{
    ArchivedHostReply, ArchivedJoinReply, HostHello, HostReply, JoinReply, JoinRequest,
    PROTOCOL_VERSION, platform,
};
use crate::path::{MAX_UDP_PAYLOAD, Path};
use crate::tls::{CLUSTER_SERVER_NAME, ClusterAuthority, Identity, JoinToken, TlsError};

/// The cluster protocol's ALPN (members with certificates).
pub const CLUSTER_ALPN: &[u8] = b"prism/1";
/// The join protocol's ALPN (hosts with a token, not yet a certificate).
pub const JOIN_ALPN: &[u8] = b"prism-join/1";
/// The largest control frame on a host connection (object bytes travel in chunks).
pub const MAX_HOST_FRAME: usize = 64 << 20;

/// Application close codes, so that the other side can tell why a connection ended.
pub mod codes {
    use quinn::VarInt;
    /// Orderly close.
    pub const DONE: VarInt = VarInt::from_u32(0);
    /// The client has no certificate from the cluster CA.
    pub const NO_CERTIFICATE: VarInt = VarInt::from_u32(1);
    /// The handshake failed (version, fingerprint, wrong token).
    pub const REFUSED: VarInt = VarInt::from_u32(2);
    /// The peer sent a frame that is too large or malformed.
    pub const BAD_FRAME: VarInt = VarInt::from_u32(3);
    /// A node stopped a job: its lease ran out (no renewal from the driver).
    pub const LEASE_ENDED: VarInt = VarInt::from_u32(4);
}

/// What went wrong on a host connection.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// Certificates, keys or the token.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The endpoint could not be set up.
    #[error("QUIC endpoint on {addr}: {reason}")]
    Endpoint {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// Connecting failed (unreachable, TLS refused, timed out).
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The peer's address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The connection or stream ended or failed.
    #[error("connection to {peer}: {reason}")]
    Connection {
        /// The peer's address.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A frame from the peer was refused.
    #[error("frame from {peer}: {source}")]
    Frame {
        /// The peer's address.
        peer: SocketAddr,
        /// What was wrong with it.
        source: FrameError,
    },
    /// The peer refused the handshake or the join.
    #[error("{peer} refused: {reason}")]
    Refused {
        /// The peer's address.
        peer: SocketAddr,
        /// The reason it gave.
        reason: String,
    },
}

/// How long a connection lives without hearing from its peer, and how often it says it is alive.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Liveness {
    idle: Duration,
    keep_alive: Duration,
}

/// A host link's liveness.
pub(crate) const HOST_LIVENESS: Liveness = Liveness {
    idle: Duration::from_secs(30),
    keep_alive: Duration::from_secs(5),
};

/// The transport settings of a connection with `peer`: `liveness`, and datagrams as large as
/// the path to it carries ([`Path`]).
pub(crate) fn transport_config(
    liveness: Liveness,
    peer: SocketAddr,
) -> Arc<quinn::TransportConfig> {
    let mut config = quinn::TransportConfig::default();
    let idle = VarInt::from_u64(liveness.idle.as_millis() as u64).unwrap_or(VarInt::MAX);
    config.max_idle_timeout(Some(idle.into()));
    config.keep_alive_interval(Some(liveness.keep_alive));
    // Windows large enough to keep a bulk transfer's parallel chunks streaming over a fast
    // link (the defaults assume a 100 ms, 100 Mbit/s path).
    config.stream_receive_window(VarInt::from_u32(16 << 20));
    config.receive_window(VarInt::from_u32(64 << 20));
    config.send_window(64 << 20);
    Path::to(peer).configure(&mut config);
    Arc::new(config)
}

/// What a QUIC endpoint's UDP socket asks the kernel to buffer each way (Linux grants up to
/// `net.core.rmem_max` / `wmem_max`, 4 MiB on these VMs). The default (208 KiB) overflows
/// within a bulk transfer on a fast link: a pull over loopback lost 2% of its packets there,
/// which cut the congestion window 455 times and made MTU discovery take the losses for a
/// black hole (back to 1,200-byte packets).
const SOCKET_BUFFER: usize = 16 << 20;

/// A UDP socket bound at `addr`, with large buffers (see [`SOCKET_BUFFER`]); a client's on an
/// IPv6 address also reaches IPv4 peers where the platform allows.
pub(crate) fn udp_socket(addr: SocketAddr, client: bool) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if client && addr.is_ipv6() && socket.set_only_v6(false).is_err() {
        tracing::debug!(%addr, "a QUIC client socket is not dual-stack");
    }
    for (what, set) in [
        (
            "receive",
            Socket::set_recv_buffer_size as fn(&Socket, usize) -> _,
        ),
        ("send", Socket::set_send_buffer_size),
    ] {
        if let Err(e) = set(&socket, SOCKET_BUFFER) {
            tracing::debug!(%addr, "cannot enlarge a QUIC socket's {what} buffer: {e}");
        }
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Binds a UDP socket at `addr` and makes an endpoint on it (a server's when `server`).
fn endpoint(addr: SocketAddr, server: Option<quinn::ServerConfig>) -> Result<Endpoint, QuicError> {
    let endpoint_error = |e: std::io::Error| QuicError::Endpoint {
        addr,
        reason: e.to_string(),
    };
    let socket = udp_socket(addr, server.is_none()).map_err(endpoint_error)?;
    let mut config = quinn::EndpointConfig::default();
    // Take datagrams as large as any path carries: each side sends what its path allows.
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .expect("QUIC's largest payload is within quinn's bounds");
    Endpoint::new(config, server, socket, Arc::new(quinn::TokioRuntime)).map_err(endpoint_error)
}

/// An endpoint that accepts connections (a node, the head, a driver serving its objects, a
/// collective group's member), each with the transport settings of the path to its peer.
#[derive(Clone, Debug)]
pub struct Server {
    endpoint: Endpoint,
    config: quinn::ServerConfig,
    liveness: Liveness,
}

/// The endpoint itself: its address, closing it, connecting out of it.
impl std::ops::Deref for Server {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Server {
    fn new(
        addr: SocketAddr,
        tls: rustls::ServerConfig,
        liveness: Liveness,
    ) -> Result<Server, QuicError> {
        let crypto = QuicServerConfig::try_from(tls).map_err(|e| QuicError::Endpoint {
            addr,
            reason: e.to_string(),
        })?;
        let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let endpoint = endpoint(addr, Some(config.clone()))?;
        Ok(Server {
            endpoint,
            config,
            liveness,
        })
    }

    /// The next incoming connection that completes its handshake, set up for its path; `None`
    /// once the endpoint is closed.
    async fn next(&self, what: &str) -> Option<Connection> {
        loop {
            let incoming = self.endpoint.accept().await?;
            let remote = incoming.remote_address();
            let mut config = self.config.clone();
            config.transport_config(transport_config(self.liveness, remote));
            let connecting = match incoming.accept_with(Arc::new(config)) {
                Ok(connecting) => connecting,
                Err(e) => {
                    tracing::info!(peer = %remote, "refused a {what} connection: {e}");
                    continue;
                }
            };
            match connecting.await {
                Ok(connection) => return Some(connection),
                Err(e) => {
                    tracing::info!(peer = %remote, "refused a {what} connection during its handshake: {e}");
                }
            }
        }
    }
}

/// A server endpoint: a node (or the head) listening for members and joiners.
pub fn server_endpoint(addr: SocketAddr, identity: &Identity) -> Result<Server, QuicError> {
    let tls = identity.server_config(&[CLUSTER_ALPN, JOIN_ALPN])?;
    Server::new(addr, tls, HOST_LIVENESS)
}

/// A client-only endpoint bound to `addr` (port 0 for any).
pub fn client_endpoint(addr: SocketAddr) -> Result<Endpoint, QuicError> {
    endpoint(addr, None)
}

/// A connection accepted by a server endpoint, sorted by protocol.
#[derive(Debug)]
pub enum Accepted {
    /// A member: its certificate chains to the cluster CA.
    Member(Connection),
    /// A host that wants to join (no certificate checked): serve it with [`serve_join`].
    Joiner(Connection),
}

/// Waits for the next connection that completes its handshake. Clients that fail TLS never
/// show up here; a client on the cluster protocol without a certificate is closed with
/// [`codes::NO_CERTIFICATE`] before anything it sent is read. `None` when the endpoint closed.
pub async fn accept(server: &Server) -> Option<Accepted> {
    loop {
        let connection = server.next("host").await?;
        let alpn = connection
            .handshake_data()
            .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|d| d.protocol);
        match alpn.as_deref() {
            Some(JOIN_ALPN) => return Some(Accepted::Joiner(connection)),
            Some(CLUSTER_ALPN) if has_certificate(&connection) => {
                return Some(Accepted::Member(connection));
            }
            Some(CLUSTER_ALPN) => {
                close_for(
                    &connection,
                    codes::NO_CERTIFICATE,
                    "a client certificate from the cluster's CA is required",
                );
            }
            other => close_for(
                &connection,
                codes::REFUSED,
                &format!("unknown application protocol {other:?}"),
            ),
        }
    }
}

fn has_certificate(connection: &Connection) -> bool {
    connection
        .peer_identity()
        .and_then(|id| {
            id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .is_some_and(|chain| !chain.is_empty())
}

/// How long [`close_endpoint`] gives an endpoint to send its connections' closes.
const CLOSES_SENT: Duration = Duration::from_millis(50);

/// Closes every connection of `endpoint` with `code` and `reason`, and gives the endpoint up
/// to 50 ms to send the closes (QUIC's draining after them, 250-320 ms on loopback, is not
/// waited out). A runtime shut down right after `Endpoint::close` drops them unsent, and the
/// peers learn of the end only when the connections time out: a driver's job kept 49 of 81
/// nodes' CPUs until its lease ran out (5 s), and the next driver found no room there.
pub async fn close_endpoint(endpoint: &Endpoint, code: VarInt, reason: &[u8]) {
    endpoint.close(code, reason);
    let _ = tokio::time::timeout(CLOSES_SENT, endpoint.wait_idle()).await;
}

/// Closes `connection` with `code` and `reason`, and logs why.
pub fn close_for(connection: &Connection, code: VarInt, reason: &str) {
    tracing::warn!(peer = %connection.remote_address(), "closing a connection: {reason}");
    connection.close(code, reason.as_bytes());
}

/// Sends one frame on a stream.
pub async fn send_frame<M: Message>(send: &mut SendStream, msg: &M) -> Result<(), QuicError>
where
    M::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>,
{
    let mut wire = Vec::new();
    encode_frame(msg, &mut wire).map_err(|source| QuicError::Frame {
        peer: unspecified(),
        source,
    })?;
    send.write_all(&wire)
        .await
        .map_err(|e| QuicError::Connection {
            peer: unspecified(),
            reason: e.to_string(),
        })
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// Reads the next whole frame from `recv` (buffering in `decoder`); `None` at a clean end of
/// the stream. A too-large announced length is refused before its payload is read.
pub async fn recv_frame(
    recv: &mut RecvStream,
    decoder: &mut FrameDecoder,
    peer: SocketAddr,
) -> Result<Option<Frame>, QuicError> {
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => return Ok(Some(frame)),
            Ok(None) => {}
            Err(source) => return Err(QuicError::Frame { peer, source }),
        }
        match recv.read(&mut chunk).await {
            Ok(Some(n)) => decoder.extend(&chunk[..n]),
            Ok(None) if decoder.buffered() == 0 => return Ok(None),
            Ok(None) => {
                return Err(QuicError::Frame {
                    peer,
                    source: FrameError::Truncated {
                        buffered: decoder.buffered(),
                    },
                });
            }
            Err(e) => return Err(connection_error(peer)(e)),
        }
    }
}

async fn recv_one(recv: &mut RecvStream, peer: SocketAddr, max: usize) -> Result<Frame, QuicError> {
    let mut decoder = FrameDecoder::new(max);
    recv_frame(recv, &mut decoder, peer)
        .await?
        .ok_or_else(|| QuicError::Connection {
            peer,
            reason: "the stream ended before a message".into(),
        })
}

/// Accepts the peer's first stream and reads its one request frame; a bad frame closes the
/// connection.
/// How long a new connection has to send its first request (a join or a member's hello)
/// before it is closed: a peer that connects and says nothing holds nothing for long.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

async fn accept_request(
    connection: &Connection,
    max: usize,
) -> Result<(SendStream, Frame), QuicError> {
    let peer = connection.remote_address();
    let request = async {
        let (send, mut recv) = connection
            .accept_bi()
            .await
            .map_err(connection_error(peer))?;
        match recv_one(&mut recv, peer, max).await {
            Ok(frame) => Ok((send, frame)),
            Err(e) => {
                close_for(connection, codes::BAD_FRAME, &e.to_string());
                Err(e)
            }
        }
    };
    match tokio::time::timeout(HANDSHAKE_DEADLINE, request).await {
        Ok(result) => result,
        Err(_) => {
            let reason = format!("no request within {HANDSHAKE_DEADLINE:?}");
            close_for(connection, codes::REFUSED, &reason);
            Err(QuicError::Connection { peer, reason })
        }
    }
}

/// Validates `frame` as an `M`; a malformed one closes the connection.
fn access_or_close<'f, M: Message>(
    connection: &Connection,
    frame: &'f Frame,
) -> Result<&'f M::Archived, QuicError>
where
    M::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>,
{
    frame.access::<M>().map_err(|source| {
        close_for(connection, codes::BAD_FRAME, &source.to_string());
        QuicError::Frame {
            peer: connection.remote_address(),
            source,
        }
    })
}

fn connection_error<E: std::fmt::Display>(peer: SocketAddr) -> impl Fn(E) -> QuicError {
    move |e| QuicError::Connection {
        peer,
        reason: e.to_string(),
    }
}

fn frame_error(peer: SocketAddr) -> impl Fn(FrameError) -> QuicError {
    move |source| QuicError::Frame { peer, source }
}

/// Joins the cluster at `addr` with `token`: checks the head against the token's CA, sends the
/// secret, and returns the certificate the head issued for `name`.
pub async fn join(
    endpoint: &Endpoint,
    addr: SocketAddr,
    token: &JoinToken,
    name: &str,
) -> Result<Identity, QuicError> {
    let tls = token.client_config(JOIN_ALPN)?;
    let connection = connect_with(endpoint, addr, tls).await?;
    let request = JoinRequest {
        protocol: PROTOCOL_VERSION,
        secret: token.secret().to_vec(),
        name: name.to_string(),
    };
    let frame = request_frame(&connection, &request, 1 << 20).await?;
    let result = match frame.access::<JoinReply>().map_err(frame_error(addr))? {
        ArchivedJoinReply::Granted(pem) => Ok(Identity::from_pem(pem.as_str())?),
        ArchivedJoinReply::Refused(reason) => Err(QuicError::Refused {
            peer: addr,
            reason: reason.to_string(),
        }),
    };
    connection.close(codes::DONE, b"joined");
    result
}

/// Answers one joiner: checks its protocol version and token secret and, if both are right,
/// issues it a certificate. Returns the joiner's name on success.
pub async fn serve_join(
    connection: Connection,
    token: &JoinToken,
    authority: &ClusterAuthority,
) -> Result<String, QuicError> {
    let peer = connection.remote_address();
    let (mut send, frame) = accept_request(&connection, 4 << 10).await?;
    let request = access_or_close::<JoinRequest>(&connection, &frame)?;
    let name = request.name.to_string();
    let verdict = if request.protocol.to_native() != PROTOCOL_VERSION {
        Err(format!(
            "protocol version mismatch: the joiner speaks {}, the head speaks {PROTOCOL_VERSION}",
            request.protocol.to_native()
        ))
    } else if !token.accepts(request.secret.as_slice()) {
        Err("wrong join token".to_string())
    } else {
        authority
            .issue(&name)
            .map(|identity| identity.to_pem())
            .map_err(|e| e.to_string())
    };
    let reply = match &verdict {
        Ok(pem) => JoinReply::Granted(pem.clone()),
        Err(reason) => JoinReply::Refused(reason.clone()),
    };
    send_frame(&mut send, &reply).await?;
    let _ = send.finish();
    match verdict {
        Ok(_) => {
            tracing::info!(peer = %peer, name, "issued a certificate to a joining host");
            // The joiner closes once it has the reply.
            let _ = tokio::time::timeout(Duration::from_secs(5), connection.closed()).await;
            Ok(name)
        }
        Err(reason) => {
            let _ = send.stopped().await;
            close_for(&connection, codes::REFUSED, &reason);
            Err(QuicError::Refused { peer, reason })
        }
    }
}

async fn connect_with(
    endpoint: &Endpoint,
    addr: SocketAddr,
    tls: rustls::ClientConfig,
) -> Result<Connection, QuicError> {
    connect_configured(endpoint, addr, tls, HOST_LIVENESS).await
}

/// Connects to `addr` with `tls`, `liveness` and the settings of the path to `addr`.
async fn connect_configured(
    endpoint: &Endpoint,
    addr: SocketAddr,
    tls: rustls::ClientConfig,
    liveness: Liveness,
) -> Result<Connection, QuicError> {
    let connect_error = |reason: String| QuicError::Connect { addr, reason };
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| connect_error(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport_config(liveness, addr));
    endpoint
        .connect_with(config, addr, CLUSTER_SERVER_NAME)
        .map_err(|e| connect_error(e.to_string()))?
        .await
        .map_err(|e| connect_error(e.to_string()))
}

/// The ALPN of a collective group's links (`prism::collective`): peers with certificates from
/// the group's own CA.
pub const GROUP_ALPN: &[u8] = b"prism-group/1";

/// A group link's idle timeout: a peer silent this long (keep-alives included) is taken for
/// dead, so a collective fails within seconds of a member's death.
pub const GROUP_IDLE: Duration = Duration::from_secs(3);

/// A group link's liveness: keep-alives four times per [`GROUP_IDLE`].
const GROUP_LIVENESS: Liveness = Liveness {
    idle: GROUP_IDLE,
    keep_alive: Duration::from_millis(GROUP_IDLE.as_millis() as u64 / 4),
};

/// An endpoint at `addr` (port 0 for any) for a member of a collective group: it accepts
/// [`GROUP_ALPN`] connections from holders of a certificate from `identity`'s CA and connects
/// to other members with [`connect_group`].
pub fn group_endpoint(addr: SocketAddr, identity: &Identity) -> Result<Server, QuicError> {
    let tls = identity.server_config(&[GROUP_ALPN])?;
    Server::new(addr, tls, GROUP_LIVENESS)
}

/// The next group member that connects to `endpoint` with a certificate from the group's CA
/// (others are closed unread). `None` once the endpoint is closed.
pub async fn accept_group(server: &Server) -> Option<Connection> {
    loop {
        let connection = server.next("group").await?;
        if has_certificate(&connection) {
            return Some(connection);
        }
        close_for(
            &connection,
            codes::NO_CERTIFICATE,
            "a certificate from the group's CA is required",
        );
    }
}

/// Connects to the group member at `addr` as `identity` (both sides checked against the
/// group's CA).
pub async fn connect_group(
    endpoint: &Endpoint,
    addr: SocketAddr,
    identity: &Identity,
) -> Result<Connection, QuicError> {
    let tls = identity.client_config(GROUP_ALPN)?;
    connect_configured(endpoint, addr, tls, GROUP_LIVENESS).await
}

/// Sends `msg` on a new stream and reads the one frame that answers it (at most `max` bytes).
pub async fn request_frame<M: Message>(
    connection: &Connection,
    msg: &M,
    max: usize,
) -> Result<Frame, QuicError>
where
    M::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>,
{
    let mut recv = send_request(connection, msg).await?;
    recv_one(&mut recv, connection.remote_address(), max).await
}

/// Sends `msg` as the one request of a new stream on `connection`: the stream to read its
/// answer from ([`read_answer`]). Requests sent one after another from one task reach the
/// peer's accepting loop in that order.
pub async fn send_request<M: Message>(
    connection: &Connection,
    msg: &M,
) -> Result<RecvStream, QuicError>
where
    M::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>,
{
    let peer = connection.remote_address();
    let (mut send, recv) = connection.open_bi().await.map_err(connection_error(peer))?;
    send_frame(&mut send, msg).await?;
    let _ = send.finish();
    Ok(recv)
}

/// Reads the answer (at most `max` bytes) to a request [`send_request`] sent, from `peer`.
pub async fn read_answer<Resp>(
    mut recv: RecvStream,
    peer: SocketAddr,
    max: usize,
) -> Result<Resp, QuicError>
where
    Resp: Message,
    Resp::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<Resp, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    let frame = recv_one(&mut recv, peer, max).await?;
    decode(&frame, peer)
}

/// Deserializes a validated frame as an `M`.
pub fn decode<M>(frame: &Frame, peer: SocketAddr) -> Result<M, QuicError>
where
    M: Message,
    M::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<M, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    let archived = frame.access::<M>().map_err(frame_error(peer))?;
    rkyv::deserialize::<M, rkyv::rancor::Error>(archived).map_err(|e| QuicError::Frame {
        peer,
        source: FrameError::Malformed {
            message: M::NAME,
            len: frame.len(),
            reason: e.to_string(),
        },
    })
}

/// Sends `request` on a new stream and returns the peer's answer (at most `max` bytes).
pub async fn ask<Req: Message, Resp>(
    connection: &Connection,
    request: &Req,
    max: usize,
) -> Result<Resp, QuicError>
where
    Req::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>,
    Resp: Message,
    Resp::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<Resp, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    let frame = request_frame(connection, request, max).await?;
    decode(&frame, connection.remote_address())
}

/// Reads the one request frame of an accepted stream as an `M` (at most `max` bytes); `None`
/// when the stream ended without one.
pub async fn read_request<M>(
    recv: &mut RecvStream,
    peer: SocketAddr,
    max: usize,
) -> Result<Option<M>, QuicError>
where
    M: Message,
    M::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<M, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    let mut decoder = FrameDecoder::new(max);
    match recv_frame(recv, &mut decoder, peer).await? {
        Some(frame) => decode(&frame, peer).map(Some),
        None => Ok(None),
    }
}

/// Connects to the member at `addr` as `identity`, and makes the handshake: our protocol
/// version, `name` and, for job traffic, the job binary's fingerprint. Returns the connection
/// and the peer's name.
pub async fn connect(
    endpoint: &Endpoint,
    addr: SocketAddr,
    identity: &Identity,
    hello: &HostHello,
) -> Result<(Connection, String), QuicError> {
    let connection = connect_with(endpoint, addr, identity.client_config(CLUSTER_ALPN)?).await?;
    let frame = request_frame(&connection, hello, 1 << 20)
        .await
        .map_err(|e| {
            // A refusal closes the connection; report the peer's reason when there is one.
            match connection.close_reason() {
                Some(quinn::ConnectionError::ApplicationClosed(close)) => QuicError::Refused {
                    peer: addr,
                    reason: String::from_utf8_lossy(&close.reason).into_owned(),
                },
                _ => e,
            }
        })?;
    match frame.access::<HostReply>().map_err(frame_error(addr))? {
        ArchivedHostReply::Welcome(name) => Ok((connection, name.to_string())),
        ArchivedHostReply::Refused(reason) => Err(QuicError::Refused {
            peer: addr,
            reason: reason.to_string(),
        }),
    }
}

/// The server side of the member handshake: reads the peer's [`HostHello`], checks its
/// protocol version and (when `job_fingerprint` is set and the peer names one) the job
/// binary's fingerprint, and welcomes it as `name` or refuses and closes. Returns the peer's
/// hello.
pub async fn welcome(
    connection: &Connection,
    name: &str,
    job_fingerprint: Option<u64>,
) -> Result<HostHello, QuicError> {
    let peer = connection.remote_address();
    let (mut send, frame) = accept_request(connection, 64 << 10).await?;
    let archived = access_or_close::<HostHello>(connection, &frame)?;
    let hello: HostHello =
        rkyv::deserialize::<HostHello, rkyv::rancor::Error>(archived).map_err(|e| {
            QuicError::Frame {
                peer,
                source: FrameError::Malformed {
                    message: "HostHello",
                    len: frame.len(),
                    reason: e.to_string(),
                },
            }
        })?;
    let refusal = if hello.protocol != PROTOCOL_VERSION {
        Some(format!(
            "protocol version mismatch: {} speaks {}, {name} speaks {PROTOCOL_VERSION}",
            hello.name, hello.protocol
        ))
    } else if hello.job_fingerprint.is_some() && hello.platform != platform() {
        Some(format!(
            "platform mismatch: the job of {} is built for {}, {name} runs {}; its binary \
             cannot run here",
            hello.name,
            hello.platform,
            platform()
        ))
    } else {
        match (job_fingerprint, hello.job_fingerprint) {
            (Some(ours), Some(theirs)) if ours != theirs => Some(format!(
                "binary fingerprint mismatch: {} runs a build {theirs:016x}, {name} runs \
                 {ours:016x} (another build of the job)",
                hello.name
            )),
            _ => None,
        }
    };
    match refusal {
        None => {
            send_frame(&mut send, &HostReply::Welcome(name.to_string())).await?;
            let _ = send.finish();
            Ok(hello)
        }
        Some(reason) => {
            let _ = send_frame(&mut send, &HostReply::Refused(reason.clone())).await;
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
            close_for(connection, codes::REFUSED, &reason);
            Err(QuicError::Refused { peer, reason })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_sockets_buffer_what_the_kernel_allows() {
        let socket = udp_socket("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let socket = socket2::SockRef::from(&socket);
        let allowed = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
        };
        for (got, limit) in [
            (socket.recv_buffer_size().unwrap(), allowed("rmem_max")),
            (socket.send_buffer_size().unwrap(), allowed("wmem_max")),
        ] {
            // Linux reports twice what it grants (its bookkeeping beside the bytes).
            let Some(limit) = limit else { continue };
            assert!(
                got >= limit.min(SOCKET_BUFFER),
                "a buffer of {got} bytes where {limit} are allowed"
            );
        }
    }
}
