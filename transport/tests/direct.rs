//! Direct links: frames both ways in order (flow control included), strangers refused at the
//! handshake, malformed frames closing the link with the reason, and a dropped endpoint's
//! peers told at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prism_transport::direct::{Endpoint, Event, LinkId};
use prism_transport::encode_payload;
use prism_transport::tls::{ClusterAuthority, Identity};

const MAX_FRAME: usize = 4 << 20;

fn any(ip: &str) -> SocketAddr {
    format!("{ip}:0").parse().unwrap()
}

/// Drives `endpoint` until `done` takes an event and says so, or `limit` passes (then panics,
/// naming `what`).
fn drive_until(
    endpoint: &Endpoint,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(Event) -> bool,
) {
    let deadline = Instant::now() + limit;
    let mut events = Vec::new();
    loop {
        endpoint.drive(&mut events);
        for event in events.drain(..) {
            if done(event) {
                return;
            }
        }
        let now = Instant::now();
        assert!(now < deadline, "no {what} within {limit:?}");
        endpoint.wait(deadline - now).unwrap();
    }
}

/// A payload of `len` bytes that says which it is.
fn payload(n: u32, len: usize) -> Vec<u8> {
    let mut bytes = vec![(n % 251) as u8; len.max(4)];
    bytes[..4].copy_from_slice(&n.to_le_bytes());
    bytes
}

/// An endpoint on `ip` that echoes every frame back on its link until `stop`.
fn echo(
    ip: &str,
    ca: &ClusterAuthority,
    stop: Arc<AtomicBool>,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let endpoint = Endpoint::bind(any(ip), &ca.issue("echo").unwrap(), MAX_FRAME).unwrap();
    let addr = endpoint.local_addr();
    let thread = std::thread::spawn(move || {
        let mut events = Vec::new();
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            endpoint.drive(&mut events);
            for event in events.drain(..) {
                if let Event::Frame(link, frame) = event {
                    out.clear();
                    encode_payload(frame.as_bytes(), &mut out).unwrap();
                    endpoint.send(link, &out).unwrap();
                }
            }
            endpoint.wait(Duration::from_millis(20)).unwrap();
        }
    });
    (addr, thread)
}

#[test]
fn frames_cross_a_direct_link_both_ways_in_order() {
    let ca = ClusterAuthority::create("direct").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (addr, echoer) = echo("127.0.0.1", &ca, stop.clone());
    let endpoint =
        Endpoint::bind(any("127.0.0.2"), &ca.issue("caller").unwrap(), MAX_FRAME).unwrap();
    let link = endpoint.connect(addr).unwrap();
    // Sent before the handshake is done: they wait and go out in order. Sizes from a few bytes
    // to past the stream's flow-control window (16 MiB) in all.
    let sizes: Vec<usize> = (0..400u32)
        .map(|n| match n % 4 {
            0 => 8,
            1 => 1 << 10,
            2 => 100 << 10,
            _ => 2 << 20,
        })
        .collect();
    let mut wire = Vec::new();
    for (n, &len) in sizes.iter().enumerate() {
        wire.clear();
        encode_payload(&payload(n as u32, len), &mut wire).unwrap();
        endpoint.send(link, &wire).unwrap();
    }
    let mut next = 0usize;
    let mut connected = false;
    drive_until(
        &endpoint,
        Duration::from_secs(60),
        "echo of every frame",
        |event| {
            match event {
                Event::Connected(l) => {
                    assert_eq!(l, link);
                    connected = true;
                }
                Event::Frame(l, frame) => {
                    assert_eq!(l, link);
                    assert_eq!(
                        frame.as_bytes(),
                        payload(next as u32, sizes[next]),
                        "frame {next}"
                    );
                    next += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
            next == sizes.len()
        },
    );
    assert!(
        connected,
        "the link said it was up before its frames came back"
    );
    stop.store(true, Ordering::Relaxed);
    echoer.join().unwrap();
}

#[test]
fn a_stranger_without_the_clusters_certificate_is_refused_at_the_handshake() {
    let ca = ClusterAuthority::create("direct").unwrap();
    let other = ClusterAuthority::create("direct").unwrap();
    let server = Endpoint::bind(any("127.0.0.1"), &ca.issue("server").unwrap(), MAX_FRAME).unwrap();
    // The stranger trusts the cluster's CA (so it would accept the server) but holds a
    // certificate of its own CA's making: the server must refuse it.
    let mut blocks = pem::parse_many(other.issue("x").unwrap().to_pem()).unwrap();
    let ours = pem::parse_many(ca.issue("y").unwrap().to_pem()).unwrap();
    *blocks.last_mut().unwrap() = ours.last().unwrap().clone();
    let identity = Identity::from_pem(&pem::encode_many(&blocks)).unwrap();
    let stranger = Endpoint::bind(any("127.0.0.3"), &identity, MAX_FRAME).unwrap();
    let link = stranger.connect(server.local_addr()).unwrap();
    let mut wire = Vec::new();
    encode_payload(b"let me in", &mut wire).unwrap();
    stranger.send(link, &wire).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut ended, mut events) = (None, Vec::new());
    while ended.is_none() && Instant::now() < deadline {
        server.drive(&mut events);
        if let Some(event) = events.pop() {
            panic!("the server heard {event:?} from a stranger");
        }
        stranger.drive(&mut events);
        for event in events.drain(..) {
            match event {
                Event::Closed {
                    link: l, reason, ..
                } => ended = Some((l, reason)),
                // In TLS 1.3 the client is done before the server has checked its
                // certificate: the refusal follows.
                Event::Connected(_) => {}
                other => panic!("the stranger got {other:?}"),
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (l, reason) = ended.expect("the stranger's link ended");
    assert_eq!(l, link);
    assert!(
        reason.contains("certificate"),
        "the server's refusal names why: {reason}"
    );
    // And a later send names the end.
    let err = stranger.send(link, &wire).unwrap_err().to_string();
    assert!(err.contains(&server.local_addr().to_string()), "{err}");
}

/// Connects `caller` to `server` and drives both until the server accepted: the two link ids.
fn linked(caller: &Endpoint, server: &Endpoint) -> (LinkId, LinkId) {
    let link = caller.connect(server.local_addr()).unwrap();
    let mut wire = Vec::new();
    encode_payload(b"hello", &mut wire).unwrap();
    caller.send(link, &wire).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    let mut accepted = None;
    while accepted.is_none() {
        assert!(Instant::now() < deadline, "no link within 10 s");
        caller.drive(&mut events);
        events.clear();
        server.drive(&mut events);
        for event in events.drain(..) {
            if let Event::Accepted { link, peer } = event {
                assert_eq!(peer, caller.local_addr());
                accepted = Some(link);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    (link, accepted.unwrap())
}

#[test]
fn an_oversized_frame_closes_the_link_and_both_sides_hear_why() {
    let ca = ClusterAuthority::create("direct").unwrap();
    let server = Endpoint::bind(any("127.0.0.1"), &ca.issue("server").unwrap(), 1 << 10).unwrap();
    let caller = Endpoint::bind(any("127.0.0.4"), &ca.issue("caller").unwrap(), MAX_FRAME).unwrap();
    let (link, theirs) = linked(&caller, &server);
    let mut wire = Vec::new();
    encode_payload(&[1u8; 4 << 10], &mut wire).unwrap();
    caller.send(link, &wire).unwrap();
    let (mut server_heard, mut caller_heard) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    while server_heard.is_none() || caller_heard.is_none() {
        assert!(Instant::now() < deadline, "no end within 10 s");
        server.drive(&mut events);
        for event in events.drain(..) {
            match event {
                Event::Frame(_, frame) => assert_eq!(frame.as_bytes(), b"hello"),
                Event::Closed { link, reason, .. } => {
                    assert_eq!(link, theirs);
                    server_heard = Some(reason);
                }
                other => panic!("the server got {other:?}"),
            }
        }
        caller.drive(&mut events);
        for event in events.drain(..) {
            match event {
                Event::Connected(_) => {}
                Event::Closed { reason, .. } => caller_heard = Some(reason),
                other => panic!("the caller got {other:?}"),
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (server_heard, caller_heard) = (server_heard.unwrap(), caller_heard.unwrap());
    assert!(server_heard.contains("bad frame"), "{server_heard}");
    assert!(
        caller_heard.contains("bad frame"),
        "the peer's reason reaches the caller: {caller_heard}"
    );
}

#[test]
fn a_dropped_endpoint_tells_its_peers_at_once() {
    let ca = ClusterAuthority::create("direct").unwrap();
    let server = Endpoint::bind(any("127.0.0.1"), &ca.issue("server").unwrap(), MAX_FRAME).unwrap();
    let caller = Endpoint::bind(any("127.0.0.5"), &ca.issue("caller").unwrap(), MAX_FRAME).unwrap();
    let (link, _) = linked(&caller, &server);
    let started = Instant::now();
    drop(server);
    // Well within the links' idle timeout (30 s).
    drive_until(
        &caller,
        Duration::from_secs(5),
        "word of the peer's end",
        |event| matches!(event, Event::Closed { link: l, .. } if l == link),
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn threads_send_on_one_link_while_another_drives_and_nothing_is_lost() {
    const THREADS: u32 = 4;
    const EACH: u32 = 2_000;
    let ca = ClusterAuthority::create("direct").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (addr, echoer) = echo("127.0.0.1", &ca, stop.clone());
    let endpoint = Arc::new(
        Endpoint::bind(any("127.0.0.6"), &ca.issue("caller").unwrap(), MAX_FRAME).unwrap(),
    );
    let link = endpoint.connect(addr).unwrap();
    let senders: Vec<_> = (0..THREADS)
        .map(|t| {
            let endpoint = endpoint.clone();
            std::thread::spawn(move || {
                let mut wire = Vec::new();
                for n in 0..EACH {
                    wire.clear();
                    encode_payload(
                        &payload(t * EACH + n, 16 + (n as usize % 3) * 700),
                        &mut wire,
                    )
                    .unwrap();
                    endpoint.send(link, &wire).unwrap();
                }
            })
        })
        .collect();
    // Each thread's frames come back in the order it sent them, and every one comes back.
    let mut next = vec![0u32; THREADS as usize];
    let mut left = THREADS * EACH;
    drive_until(
        &endpoint,
        Duration::from_secs(60),
        "every frame back",
        |event| {
            if let Event::Frame(_, frame) = event {
                let n = u32::from_le_bytes(frame.as_bytes()[..4].try_into().unwrap());
                let (t, i) = ((n / EACH) as usize, n % EACH);
                assert_eq!(i, next[t], "thread {t}'s frames in order");
                next[t] += 1;
                left -= 1;
            }
            left == 0
        },
    );
    for sender in senders {
        sender.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    echoer.join().unwrap();
}
