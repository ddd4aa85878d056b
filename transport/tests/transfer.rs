//! Pulling objects between two endpoints on loopback (127.0.0.1 serving, 127.0.0.2 pulling)
//! over mutual-TLS QUIC: multi-chunk objects arrive byte for byte, and a missing object, a
//! length mismatch and a malformed request are clear errors that harm nothing else.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use prism_graph::{ObjectId, TaskId};
use prism_transport::quic;
use prism_transport::tls::ClusterAuthority;
use prism_transport::transfer::{self, ObjectSource};
use prism_transport::{HostHello, PullKey};

struct MapSource(HashMap<PullKey, Bytes>);

impl ObjectSource for MapSource {
    fn bytes(&self, key: &PullKey) -> Option<Bytes> {
        self.0.get(key).cloned()
    }
}

fn id(n: u64) -> PullKey {
    PullKey::Object(ObjectId::new(TaskId::new(7, n), 0))
}

fn pattern(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test]
async fn objects_arrive_whole_and_errors_are_clear() {
    let ca = ClusterAuthority::create("transfer").unwrap();
    let server_id = ca.issue("a").unwrap();
    let client_id = ca.issue("b").unwrap();
    let big = pattern(2 * transfer::CHUNK + 12_345, 1);
    let small = pattern(1_000, 2);
    let source = Arc::new(MapSource(HashMap::from([
        (id(1), big.clone()),
        (id(2), small.clone()),
    ])));

    let server = quic::server_endpoint("127.0.0.1:0".parse().unwrap(), &server_id).unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(transfer::serve_endpoint(server, "a".into(), source));
    let client = quic::client_endpoint("127.0.0.2:0".parse().unwrap()).unwrap();
    let hello = HostHello::new("b", prism_transport::Purpose::Objects("test".into()), None);
    let (connection, _) = quic::connect(&client, addr, &client_id, &hello)
        .await
        .unwrap();

    let mut dest = vec![0u8; big.len()];
    transfer::pull(&connection, &id(1), &mut dest)
        .await
        .unwrap();
    assert!(dest == big, "the multi-chunk object arrives byte for byte");
    // Both ends are on this host: the path is the loopback device, and the transfer went in
    // datagrams far larger than an Ethernet frame (quinn's default stops at 1,452 bytes).
    let mtu = connection.stats().path.current_mtu;
    assert!(
        mtu >= 16_000,
        "a loopback connection sends {mtu}-byte datagrams"
    );
    let mut dest = vec![0u8; small.len()];
    transfer::pull(&connection, &id(2), &mut dest)
        .await
        .unwrap();
    assert!(dest == small);

    let err = transfer::pull(&connection, &id(3), &mut [0u8; 10])
        .await
        .expect_err("missing");
    assert!(err.to_string().contains("is not here"), "{err}");
    let err = transfer::pull(&connection, &id(2), &mut [0u8; 999])
        .await
        .expect_err("wrong length");
    assert!(
        err.to_string()
            .contains("1000 bytes there, 999 were expected"),
        "{err}"
    );

    // A malformed request closes only that connection.
    let (bad, _) = quic::connect(&client, addr, &client_id, &hello)
        .await
        .unwrap();
    let (mut send, _recv) = bad.open_bi().await.unwrap();
    send.write_all(&[0xff; 64]).await.unwrap();
    let reason = bad.closed().await;
    assert!(reason.to_string().contains("magic"), "{reason}");
    let mut dest = vec![0u8; small.len()];
    transfer::pull(&connection, &id(2), &mut dest)
        .await
        .unwrap();
    assert!(dest == small, "the good connection still pulls");
}
