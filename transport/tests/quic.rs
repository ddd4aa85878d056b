//! QUIC with mutual TLS on loopback: joining with the token, the member handshake, and every
//! way in that must be refused (wrong token, another cluster's CA, no certificate, another
//! cluster's certificate, another protocol version or build, garbage datagrams, malformed and
//! oversized frames) while the good connection keeps working.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use prism_transport::quic::{self, Accepted, QuicError, codes};
use prism_transport::tls::{ClusterAuthority, Identity, JoinToken};
use prism_transport::{FrameDecoder, HostHello, PROTOCOL_VERSION, ToWorker};
use quinn::Endpoint;

/// A head on 127.0.0.1: it serves joiners with its token and welcomes members, echoing each
/// frame they send back on the same stream, until a malformed frame closes that connection.
struct Head {
    addr: SocketAddr,
    token: JoinToken,
    ca: Arc<ClusterAuthority>,
    _endpoint: quic::Server,
}

const FINGERPRINT: u64 = 0xfeed;

impl Head {
    fn start() -> Head {
        let ca = Arc::new(ClusterAuthority::create("test-cluster").unwrap());
        let identity = ca.issue("head").unwrap();
        let token = JoinToken::generate(ca.certificate());
        let endpoint = quic::server_endpoint("127.0.0.1:0".parse().unwrap(), &identity).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let (server, serve_ca, serve_token) = (endpoint.clone(), ca.clone(), token.clone());
        tokio::spawn(async move {
            while let Some(accepted) = quic::accept(&server).await {
                let (ca, token) = (serve_ca.clone(), serve_token.clone());
                tokio::spawn(async move {
                    match accepted {
                        Accepted::Joiner(c) => {
                            let _ = quic::serve_join(c, &token, &ca).await;
                        }
                        Accepted::Member(c) => {
                            if quic::welcome(&c, "head", Some(FINGERPRINT)).await.is_ok() {
                                echo(c).await;
                            }
                        }
                    }
                });
            }
        });
        Head {
            addr,
            token,
            ca,
            _endpoint: endpoint,
        }
    }
}

async fn echo(connection: quinn::Connection) {
    let peer = connection.remote_address();
    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
        let mut decoder = FrameDecoder::new(1 << 16);
        loop {
            match quic::recv_frame(&mut recv, &mut decoder, peer).await {
                Ok(Some(frame)) => match frame.access::<ToWorker>() {
                    Ok(_) => {
                        let mut wire = Vec::new();
                        prism_transport::encode_frame(&ToWorker::Shutdown, &mut wire).unwrap();
                        if send.write_all(&wire).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        quic::close_for(&connection, codes::BAD_FRAME, &e.to_string());
                        return;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    quic::close_for(&connection, codes::BAD_FRAME, &e.to_string());
                    return;
                }
            }
        }
    }
}

fn hello(name: &str) -> HostHello {
    HostHello::new(name, prism_transport::Purpose::Control, Some(FINGERPRINT))
}

fn client() -> Endpoint {
    quic::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap()
}

/// Sends one `ToWorker::Shutdown` frame on a new stream and reads the echo.
async fn round_trip(connection: &quinn::Connection) -> Result<(), QuicError> {
    let frame = quic::request_frame(connection, &ToWorker::Shutdown, 1 << 16).await?;
    assert!(frame.access::<ToWorker>().is_ok());
    Ok(())
}

async fn member(head: &Head) -> (Identity, quinn::Connection) {
    let endpoint = client();
    let identity = quic::join(&endpoint, head.addr, &head.token, "node-a")
        .await
        .expect("the right token joins");
    let (connection, name) = quic::connect(&endpoint, head.addr, &identity, &hello("node-a"))
        .await
        .expect("a member connects");
    assert_eq!(name, "head");
    (identity, connection)
}

#[tokio::test]
async fn a_host_joins_with_the_token_and_talks_as_a_member() {
    let head = Head::start();
    let (identity, connection) = member(&head).await;
    assert_eq!(identity.ca(), head.ca.certificate());
    for _ in 0..3 {
        round_trip(&connection).await.unwrap();
    }
}

/// A driver that closes its endpoint and stops its runtime at once still tells its peers it
/// left; they would learn it otherwise only at their idle timeout (30 s).
#[test]
fn peers_hear_a_close_made_right_before_the_runtime_stops() {
    let head_runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = head_runtime.enter();
    let ca = ClusterAuthority::create("test-cluster").unwrap();
    let server =
        quic::server_endpoint("127.0.0.1:0".parse().unwrap(), &ca.issue("head").unwrap()).unwrap();
    let addr = server.local_addr().unwrap();
    let (ended, heard) = std::sync::mpsc::channel();
    head_runtime.spawn(async move {
        while let Some(accepted) = quic::accept(&server).await {
            if let Accepted::Member(connection) = accepted {
                quic::welcome(&connection, "head", Some(FINGERPRINT))
                    .await
                    .unwrap();
                let _ = ended.send(connection.closed().await);
            }
        }
    });
    let identity = ca.issue("driver").unwrap();
    // One thread: once `block_on` returns, nothing runs the endpoint's task again.
    let driver = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    driver.block_on(async {
        let endpoint = client();
        let _connection = quic::connect(&endpoint, addr, &identity, &hello("driver"))
            .await
            .unwrap();
        quic::close_endpoint(&endpoint, codes::DONE, b"the driver left").await;
    });
    drop(driver);
    let closed = heard
        .recv_timeout(Duration::from_secs(10))
        .expect("the head hears the driver leave before its idle timeout");
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(_)),
        "{closed:?}"
    );
}

#[tokio::test]
async fn a_wrong_token_is_refused() {
    let head = Head::start();
    let forged: JoinToken = format!(
        "prism1-{}-{}",
        "00".repeat(32),
        prism_transport::tls::hex(head.token.ca_fingerprint())
    )
    .parse()
    .unwrap();
    let err = quic::join(&client(), head.addr, &forged, "intruder")
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("wrong join token"), "{err}");
}

#[tokio::test]
async fn a_token_for_another_cluster_does_not_trust_this_head() {
    let head = Head::start();
    let other = ClusterAuthority::create("other").unwrap();
    let token = JoinToken::generate(other.certificate());
    let err = quic::join(&client(), head.addr, &token, "lost")
        .await
        .expect_err("the head is not the token's CA");
    assert!(
        err.to_string()
            .contains("did not present the CA named by the join token"),
        "{err}"
    );
}

#[tokio::test]
async fn members_need_a_certificate_from_this_cluster() {
    let head = Head::start();
    let (_, good) = member(&head).await;

    // No certificate at all: a joiner's TLS config on the cluster protocol.
    let tls = head.token.client_config(quic::CLUSTER_ALPN).unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let endpoint = client();
    let connection = endpoint
        .connect_with(
            quinn::ClientConfig::new(Arc::new(crypto)),
            head.addr,
            prism_transport::tls::CLUSTER_SERVER_NAME,
        )
        .unwrap()
        .await
        .expect("TLS itself completes: the server only checks certificates it is offered");
    let reason = connection.closed().await;
    assert!(
        reason
            .to_string()
            .contains("a client certificate from the cluster's CA is required"),
        "{reason}"
    );

    // A certificate from another cluster's CA fails the TLS handshake.
    let stranger = ClusterAuthority::create("other")
        .unwrap()
        .issue("x")
        .unwrap();
    let err = quic::connect(&client(), head.addr, &stranger, &hello("x"))
        .await
        .expect_err("another CA");
    assert!(matches!(err, QuicError::Connect { .. }), "{err}");

    round_trip(&good).await.expect("the member is unaffected");
}

#[tokio::test]
async fn other_versions_builds_and_platforms_are_refused_with_the_reason() {
    let head = Head::start();
    let (identity, good) = member(&head).await;
    let mut old = hello("old");
    old.protocol = PROTOCOL_VERSION + 1;
    let err = quic::connect(&client(), head.addr, &identity, &old)
        .await
        .expect_err("another version");
    assert!(
        err.to_string().contains("protocol version mismatch"),
        "{err}"
    );

    let mut other_build = hello("rebuilt");
    other_build.job_fingerprint = Some(1);
    let err = quic::connect(&client(), head.addr, &identity, &other_build)
        .await
        .expect_err("another build");
    assert!(
        err.to_string().contains("binary fingerprint mismatch"),
        "{err}"
    );
    let mut elsewhere = hello("arm-host");
    elsewhere.platform = "riscv64-plan9".into();
    let err = quic::connect(&client(), head.addr, &identity, &elsewhere)
        .await
        .expect_err("another platform");
    assert!(err.to_string().contains("platform mismatch"), "{err}");
    assert!(err.to_string().contains("riscv64-plan9"), "{err}");
    round_trip(&good).await.expect("the member is unaffected");
}

#[tokio::test]
async fn bad_frames_close_only_their_connection_and_garbage_is_ignored() {
    let head = Head::start();
    let (identity, good) = member(&head).await;

    // Garbage datagrams at the port.
    let flood = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..2_000u32 {
        let junk: Vec<u8> = (0..(i % 1200 + 1)).map(|j| (i ^ j) as u8).collect();
        flood.send_to(&junk, head.addr).unwrap();
    }

    // A member sends bytes that are not a frame.
    let endpoint = client();
    let (bad, _) = quic::connect(&endpoint, head.addr, &identity, &hello("bad"))
        .await
        .unwrap();
    let (mut send, _recv) = bad.open_bi().await.unwrap();
    send.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), bad.closed())
        .await
        .expect("closed");
    assert!(reason.to_string().contains("magic"), "{reason}");

    // A member announces a frame beyond the limit.
    let (big, _) = quic::connect(&endpoint, head.addr, &identity, &hello("big"))
        .await
        .unwrap();
    let (mut send, _recv) = big.open_bi().await.unwrap();
    let mut header = Vec::new();
    header.extend_from_slice(&(1u32 << 30).to_le_bytes());
    header.extend_from_slice(b"PRSM");
    send.write_all(&header).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), big.closed())
        .await
        .expect("closed");
    assert!(reason.to_string().contains("exceeds the limit"), "{reason}");

    round_trip(&good).await.expect("the member is unaffected");
}

#[tokio::test]
async fn idle_join_connections_are_closed_at_the_handshake_deadline() {
    let head = Head::start();
    let endpoint = client();
    let tls = head.token.client_config(quic::JOIN_ALPN).unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut idle = Vec::new();
    for _ in 0..50 {
        let connecting = endpoint
            .connect_with(
                config.clone(),
                head.addr,
                prism_transport::tls::CLUSTER_SERVER_NAME,
            )
            .unwrap();
        idle.push(connecting.await.expect("the TLS handshake completes"));
    }
    let started = std::time::Instant::now();
    for connection in &idle {
        // Nothing is sent: the head closes each connection itself, naming why.
        let reason = tokio::time::timeout(
            quic::HANDSHAKE_DEADLINE + Duration::from_secs(5),
            connection.closed(),
        )
        .await
        .expect("the head closed an idle join connection");
        assert!(
            reason.to_string().contains("no request within"),
            "closed for {reason}"
        );
    }
    assert!(started.elapsed() >= quic::HANDSHAKE_DEADLINE - Duration::from_secs(1));
    // The head still serves joiners.
    member(&head).await;
}
