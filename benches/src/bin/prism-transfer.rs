//! Cross-node object transfer over loopback: one endpoint on 127.0.0.1 serves objects, another
//! on 127.0.0.2 pulls them (mutual-TLS QUIC, chunked parallel streams, as the object manager
//! does). Both ends run in this process on the same cores, so this is the transport's own cost
//! on one machine, not a network's. The pulls land in a buffer reused across trials, and once
//! in a new shared-memory file, as a node's store receives an object when no freed segment of
//! the job is pooled there.
//!
//! Also the floor of a message's round trip on one open QUIC stream between two endpoints.
//!
//! `cargo run --release -p prism-benches --bin prism-transfer [-- --trials N]`

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use prism_benches::timeit;
use prism_graph::{ObjectId, TaskId};
use prism_transport::tls::ClusterAuthority;
use prism_transport::transfer::{self, ObjectSource};
use prism_transport::{HostHello, PullKey};
use prism_transport::{direct, quic};

#[derive(Debug, Parser)]
struct Args {
    /// Timed trials per case.
    #[arg(long, default_value_t = 5)]
    trials: usize,
    /// Print the measurements as JSON too.
    #[arg(long)]
    json: bool,
    /// Run as the echoing process of the direct link's round trip (internal: the benchmark
    /// starts itself so, with the identity on standard input).
    #[arg(long, hide = true)]
    echo_direct: bool,
}

struct Objects(HashMap<PullKey, Bytes>);

impl ObjectSource for Objects {
    fn bytes(&self, key: &PullKey) -> Option<Bytes> {
        self.0.get(key).cloned()
    }
}

/// What one core seals per second with the AEADs QUIC may use (TLS 1.3's suites in ring, which
/// rustls uses here; AES-128-GCM is the one negotiated): in QUIC-sized packets (1,200 bytes,
/// 64 per call) and in 64 KiB buffers, as (measurement, bytes per call).
fn aead_limits(trials: usize) -> Vec<(prism_benches::Measurement, u64)> {
    use ring::aead::{
        AES_128_GCM, AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey,
    };
    let mut out = Vec::new();
    for (suite, algorithm) in [
        ("AES-128-GCM", &AES_128_GCM),
        ("AES-256-GCM", &AES_256_GCM),
        ("ChaCha20-Poly1305", &CHACHA20_POLY1305),
    ] {
        let key = vec![7u8; algorithm.key_len()];
        let key = LessSafeKey::new(UnboundKey::new(algorithm, &key).expect("a key of its length"));
        for (packets, len) in [(64usize, 1200usize), (1, 64 << 10)] {
            let mut buf = vec![3u8; len];
            let mut counter = 0u64;
            let name = format!("{suite} seal, {len}-byte buffers, one core");
            let m = timeit(&name, 1, trials, Duration::from_secs(1), || {
                for _ in 0..packets {
                    counter += 1;
                    let mut nonce = [0u8; 12];
                    nonce[4..].copy_from_slice(&counter.to_be_bytes());
                    let nonce = Nonce::assume_unique_for_key(nonce);
                    let tag = key
                        .seal_in_place_separate_tag(nonce, Aad::empty(), &mut buf)
                        .expect("seal");
                    let _ = std::hint::black_box(tag);
                }
            });
            out.push((m, (packets * len) as u64));
        }
    }
    out
}

/// The floor of a message's round trip between two hosts over mutual-TLS QUIC: 64 bytes
/// out and back on one stream that stays open (no stream opened per message), an endpoint on
/// 127.0.0.3 echoing what one on 127.0.0.4 sends. What a direct owner-to-worker link across
/// hosts costs at least. On `rt` as `threads` say: with two runtime threads every message
/// wakes a sleeping thread on each side; with one, both ends run on the caller's thread and
/// the figure is QUIC's own cost (TLS, packets, two UDP system calls each way).
fn quic_round_trip(
    rt: &tokio::runtime::Runtime,
    ca: &ClusterAuthority,
    trials: usize,
    threads: &str,
) -> anyhow::Result<prism_benches::Measurement> {
    const LEN: usize = 64;
    let (echo_id, caller_id) = (ca.issue("echo")?, ca.issue("caller")?);
    let (mut send, mut recv) = rt.block_on(async {
        let server = quic::server_endpoint("127.0.0.3:0".parse()?, &echo_id)?;
        let addr = server.local_addr()?;
        tokio::spawn(async move {
            let Some(quic::Accepted::Member(connection)) = quic::accept(&server).await else {
                return;
            };
            if quic::welcome(&connection, "echo", None).await.is_err() {
                return;
            }
            let Ok((mut send, mut recv)) = connection.accept_bi().await else {
                return;
            };
            let mut buf = [0u8; LEN];
            while recv.read_exact(&mut buf).await.is_ok() {
                if send.write_all(&buf).await.is_err() {
                    return;
                }
            }
            drop(server);
        });
        let client = quic::client_endpoint("127.0.0.4:0".parse()?)?;
        let hello = HostHello::new("caller", prism_transport::Purpose::Logs, None);
        let (connection, _) = quic::connect(&client, addr, &caller_id, &hello).await?;
        std::mem::forget(client);
        let (send, recv) = connection.open_bi().await?;
        std::mem::forget(connection);
        anyhow::Ok((send, recv))
    })?;
    let mut buf = [7u8; LEN];
    let name = format!("quic round trip, 64 B on one open stream, {threads}");
    let m = timeit(&name, 1, trials, Duration::from_secs(1), || {
        rt.block_on(async {
            send.write_all(&buf).await.expect("send");
            recv.read_exact(&mut buf).await.expect("echo");
        });
    });
    assert!(buf.iter().all(|b| *b == 7), "the bytes came back");
    Ok(m)
}

/// A child process killed and waited for when dropped.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How long a side of the direct round trip spins on its endpoint after the last frame
/// before it sleeps on the socket (the local links' fast paths spin about as long).
const SPIN: Duration = Duration::from_micros(100);

/// Drives `endpoint` from this thread until `f` takes an event and says so: spinning for
/// [`SPIN`] after each event, then sleeping on the socket. False when a link closed.
fn drive_direct(
    endpoint: &direct::Endpoint,
    events: &mut Vec<direct::Event>,
    mut f: impl FnMut(direct::Event) -> bool,
) -> bool {
    let mut last = std::time::Instant::now();
    loop {
        if endpoint.try_drive(events) {
            for event in events.drain(..) {
                if matches!(event, direct::Event::Closed { .. }) {
                    return false;
                }
                if f(event) {
                    return true;
                }
                last = std::time::Instant::now();
            }
        }
        if last.elapsed() > SPIN {
            let _ = endpoint.wait(Duration::from_millis(50));
            last = std::time::Instant::now();
        } else {
            std::thread::yield_now();
        }
    }
}

/// The echoing process of [`direct_round_trip`]: reads its identity from standard input,
/// prints its endpoint's address, and sends every frame back until its link closes.
fn echo_direct() -> anyhow::Result<()> {
    let mut pem = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut pem)?;
    let identity = prism_transport::tls::Identity::from_pem(&pem)?;
    let endpoint = direct::Endpoint::bind("127.0.0.4:0".parse()?, &identity, 1 << 20)?;
    println!("{}", endpoint.local_addr());
    let mut events = Vec::new();
    let mut out = Vec::new();
    while drive_direct(&endpoint, &mut events, |event| {
        if let direct::Event::Frame(link, frame) = event {
            out.clear();
            prism_transport::encode_payload(frame.as_bytes(), &mut out).expect("a small frame");
            endpoint.send(link, &out).expect("the link is up");
        }
        false
    }) {}
    Ok(())
}

/// A direct link's round trip between two processes (issue 20's remote round trip without
/// the relays): 64 bytes out and back on a [`direct`] link from an endpoint on 127.0.0.3 to
/// this program started again as an echo on 127.0.0.4, each side driving its endpoint from
/// the thread that waits (spinning 100 us, then sleeping on the socket). The mean as a rate,
/// and the 50th and 99th percentiles of 20,000 round trips after it.
fn direct_round_trip(
    ca: &ClusterAuthority,
    trials: usize,
) -> anyhow::Result<(prism_benches::Measurement, Duration, Duration)> {
    const LEN: usize = 64;
    let child = std::process::Command::new(std::env::current_exe()?)
        .arg("--echo-direct")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut echo = Reaped(child);
    let echo = &mut echo.0;
    let mut stdin = echo.stdin.take().expect("piped");
    std::io::Write::write_all(&mut stdin, ca.issue("echo")?.to_pem().as_bytes())?;
    drop(stdin);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(echo.stdout.take().expect("piped")),
        &mut line,
    )?;
    let addr: std::net::SocketAddr = line.trim().parse()?;
    let endpoint = direct::Endpoint::bind("127.0.0.3:0".parse()?, &ca.issue("caller")?, 1 << 20)?;
    let link = endpoint.connect(addr)?;
    let mut wire = Vec::new();
    prism_transport::encode_payload(&[7u8; LEN], &mut wire)?;
    let mut events = Vec::new();
    let mut round_trip = || {
        endpoint.send(link, &wire).expect("send");
        let echoed = drive_direct(&endpoint, &mut events, |event| match event {
            direct::Event::Frame(_, frame) => {
                assert_eq!(frame.as_bytes(), &[7u8; LEN], "the bytes came back");
                true
            }
            _ => false,
        });
        assert!(echoed, "the echo's link closed");
    };
    let name = "direct link round trip, 64 B, two processes";
    let m = timeit(name, 1, trials, Duration::from_secs(1), &mut round_trip);
    let mut each: Vec<Duration> = (0..20_000)
        .map(|_| {
            let start = std::time::Instant::now();
            round_trip();
            start.elapsed()
        })
        .collect();
    each.sort();
    let (p50, p99) = (each[each.len() / 2], each[each.len() * 99 / 100]);
    endpoint.close(link, "done");
    Ok((m, p50, p99))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.echo_direct {
        return echo_direct();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ca = ClusterAuthority::create("bench")?;
    let (server_id, client_id) = (ca.issue("a")?, ca.issue("b")?);
    let sizes = [(1u64, 1usize << 10), (2, 1 << 20), (3, 1 << 30)];
    let key = |n: u64| PullKey::Object(ObjectId::new(TaskId::new(1, n), 0));
    let objects: HashMap<PullKey, Bytes> = sizes
        .iter()
        .map(|&(n, len)| (key(n), Bytes::from(vec![7u8; len])))
        .collect();
    let source = Arc::new(Objects(objects));
    let connection = rt.block_on(async {
        let server = quic::server_endpoint("127.0.0.1:0".parse()?, &server_id)?;
        let addr = server.local_addr()?;
        tokio::spawn(transfer::serve_endpoint(server, "a".into(), source));
        let client = quic::client_endpoint("127.0.0.2:0".parse()?)?;
        let hello = HostHello::new("b", prism_transport::Purpose::Objects("bench".into()), None);
        let (connection, _) = quic::connect(&client, addr, &client_id, &hello).await?;
        // Keep the client endpoint alive with the connection.
        std::mem::forget(client);
        anyhow::Ok(connection)
    })?;

    let round_trip = quic_round_trip(&rt, &ca, args.trials, "two threads")?;
    let one_thread = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let round_trip_one = quic_round_trip(&one_thread, &ca, args.trials, "one thread")?;
    let (direct_trip, p50, p99) = direct_round_trip(&ca, args.trials)?;

    let mut results = Vec::new();
    let mut memcpy_dest = vec![0u8; 1 << 30];
    let memcpy_src = vec![1u8; 1 << 30];
    let memcpy = timeit(
        "memcpy of 1 GiB (baseline)",
        1,
        args.trials,
        Duration::from_secs(1),
        || {
            memcpy_dest.copy_from_slice(&memcpy_src);
            std::hint::black_box(&memcpy_dest);
        },
    );
    drop((memcpy_dest, memcpy_src));
    results.push((memcpy, 1u64 << 30));
    results.extend(aead_limits(args.trials));
    for (n, len) in sizes {
        let id = key(n);
        let mut dest = vec![0u8; len];
        let name = match len {
            l if l >= 1 << 30 => "cross node pull 1 GiB".to_string(),
            l if l >= 1 << 20 => "cross node pull 1 MiB".to_string(),
            _ => "cross node pull 1 KiB (round trip)".to_string(),
        };
        let m = timeit(&name, 1, args.trials, Duration::from_secs(1), || {
            rt.block_on(transfer::pull(&connection, &id, &mut dest))
                .expect("pull");
        });
        assert!(dest.iter().all(|b| *b == 7), "the bytes arrived");
        results.push((m, len as u64));
    }
    // What a node's pull into its store pays when no freed segment is pooled: the kernel
    // allocates and zeroes every page of a new shared-memory file (and frees it after).
    let (id, len) = (key(3), 1usize << 30);
    let m = timeit(
        "cross node pull 1 GiB into new shared memory",
        1,
        args.trials,
        Duration::from_secs(1),
        || {
            let path = std::path::Path::new("/dev/shm")
                .join(format!("prism-transfer-{}", std::process::id()));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|f| f.set_len(len as u64).map(|()| f))
                .expect("a file in /dev/shm");
            let _ = std::fs::remove_file(&path);
            // SAFETY: the file was created by this process just now and is unlinked: no one
            // else maps or writes it.
            let mut map = unsafe { memmap2::MmapOptions::new().populate().map_mut(&file) }
                .expect("a shared mapping");
            rt.block_on(transfer::pull(&connection, &id, &mut map))
                .expect("pull");
        },
    );
    results.push((m, len as u64));
    results.push((round_trip, 0));
    results.push((round_trip_one, 0));
    results.push((direct_trip, 0));
    for (m, len) in &results {
        let gbs = m.mean * *len as f64 / 1e9;
        let extra = if *len == 0 {
            format!("{:.1} us per round trip", 1e6 / m.mean)
        } else if *len <= 1 << 10 {
            format!("{:.1} us per pull", 1e6 / m.mean)
        } else {
            format!("{gbs:.2} GB/s")
        };
        println!("{}  ({extra})", m.ray_line());
    }
    println!(
        "direct link round trip, 64 B, two processes: p50 {:.1} us, p99 {:.1} us",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    if args.json {
        let all: Vec<_> = results.iter().map(|(m, _)| m).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    Ok(())
}
