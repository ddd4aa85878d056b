//! The object manager: moves a job's objects between hosts. It keeps one connection per
//! (peer, job) for pulls, pulls an object into a store as a segment under a temporary name
//! (renamed once every byte is in, so readers never see a partial object), and serves a
//! store's segments, and the job's binary where it has it, to other hosts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prism_graph::ObjectId;
use prism_transport::quic::{self, QuicError};
use prism_transport::tls::Identity;
use prism_transport::transfer::{self, ObjectSource};
use prism_transport::{HostHello, PullKey, Purpose};

use crate::store;

/// How long connecting to a peer for pulls may take (`PRISM_CONNECT_TIMEOUT_MS`, default 2 s).
fn connect_timeout() -> std::time::Duration {
    let ms = std::env::var("PRISM_CONNECT_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(2_000);
    std::time::Duration::from_millis(ms)
}

/// Connections to other hosts (for pulls, and between two nodes' workers of a job), reused.
#[derive(Debug)]
pub(crate) struct Peers {
    name: String,
    endpoint: quinn::Endpoint,
    identity: Identity,
    open: tokio::sync::Mutex<HashMap<(SocketAddr, Purpose), quinn::Connection>>,
}

impl Peers {
    /// Pull connections made from `endpoint` as `name` with `identity`.
    pub(crate) fn new(name: String, endpoint: quinn::Endpoint, identity: Identity) -> Self {
        Peers {
            name,
            endpoint,
            identity,
            open: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The endpoint the connections are made from.
    pub(crate) fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// The identity the connections are made with.
    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    /// A connection to `addr` for pulls of `job`: the open one, or a new one. Connecting holds
    /// no lock (pulls from other peers go on meanwhile) and gives up after
    /// [`connect_timeout`], so that a dead peer costs its pulls seconds, not QUIC's idle
    /// timeout each, one after another.
    pub(crate) async fn get(
        &self,
        addr: SocketAddr,
        job: &str,
    ) -> Result<quinn::Connection, QuicError> {
        self.get_for(addr, Purpose::Objects(job.to_string())).await
    }

    /// A connection to `addr` for `purpose`: the open one, or a new one (as [`Peers::get`]).
    pub(crate) async fn get_for(
        &self,
        addr: SocketAddr,
        purpose: Purpose,
    ) -> Result<quinn::Connection, QuicError> {
        let key = (addr, purpose);
        if let Some(connection) = self.open.lock().await.get(&key)
            && connection.close_reason().is_none()
        {
            return Ok(connection.clone());
        }
        let hello = HostHello::new(self.name.clone(), key.1.clone(), None);
        let connect = quic::connect(&self.endpoint, addr, &self.identity, &hello);
        let limit = connect_timeout();
        let (connection, _) =
            tokio::time::timeout(limit, connect)
                .await
                .map_err(|_| QuicError::Connect {
                    addr,
                    reason: format!("no answer within {} ms", limit.as_millis()),
                })??;
        let mut open = self.open.lock().await;
        match open.get(&key) {
            // Another pull connected meanwhile: share its connection.
            Some(other) if other.close_reason().is_none() => {
                connection.close(quic::codes::DONE, b"connected twice");
                Ok(other.clone())
            }
            _ => {
                open.insert(key, connection.clone());
                Ok(connection)
            }
        }
    }

    /// Closes the connections to `addr` (a host that is gone): pulls in flight fail now
    /// instead of after the idle timeout.
    pub(crate) async fn forget(&self, addr: SocketAddr) {
        self.open.lock().await.retain(|(at, _), connection| {
            if *at == addr {
                connection.close(quic::codes::DONE, b"the host is gone");
            }
            *at != addr
        });
    }

    /// Pulls `id` (`len` bytes) of `job` from the host at `from` into the store at `store`.
    pub(crate) async fn pull_to_store(
        &self,
        job: &str,
        from: SocketAddr,
        store: &Path,
        id: ObjectId,
        len: u64,
    ) -> Result<(), String> {
        let started = std::time::Instant::now();
        let connection = self
            .get(from, job)
            .await
            .map_err(|e| format!("cannot reach {from} for {id}: {e}"))?;
        // A freed segment's pages, when one is pooled, instead of the kernel's fresh ones.
        let pooled = store::take_pooled(store, id, len);
        let part = store::filling_path(store, id);
        let file = crate::files::private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(!pooled)
            .open(&part)
            .and_then(|f| f.set_len(len).map(|()| f))
            .map_err(|e| format!("cannot make room for {id} in the store: {e}"))?;
        if len > 0 {
            // Mapped whole at once rather than a fault per page as the bytes land.
            // SAFETY: the file is at this process's filling path (made now, or a freed object's
            // pooled segment renamed there, which hands it to this process alone; see
            // `store::Segment::map`), a name no reader opens; readers open the final name, given
            // below once every byte is in place.
            let mut map = unsafe { memmap2::MmapOptions::new().populate().map_mut(&file) }
                .map_err(|e| format!("cannot map {id}'s segment: {e}"))?;
            if let Err(e) = transfer::pull(&connection, &PullKey::Object(id), &mut map).await {
                store::discard_filling(store, id);
                return Err(format!("cannot pull {id} from {from}: {e}"));
            }
        }
        store::publish(store, id).map_err(|e| {
            store::discard_filling(store, id);
            format!("cannot store {id}: {e}")
        })?;
        let secs = started.elapsed().as_secs_f64();
        tracing::debug!(object = %id, len, %from, secs, pooled, "pulled an object");
        Ok(())
    }
}

/// Serves a store's segments and, on the driver's host, the job's binary.
#[derive(Debug)]
pub(crate) struct StoreSource {
    /// The job's store (none: the job is unknown here, nothing is served).
    pub(crate) store: Option<PathBuf>,
    /// The job's binary and its content hash.
    pub(crate) binary: Option<([u8; 32], Bytes)>,
}

impl ObjectSource for StoreSource {
    fn bytes(&self, key: &PullKey) -> Option<Bytes> {
        match key {
            PullKey::Binary(hash) => self
                .binary
                .as_ref()
                .filter(|(ours, _)| ours == hash)
                .map(|(_, bytes)| bytes.clone()),
            PullKey::Object(id) => {
                // In shared memory, or spilled to the disk.
                let store = self.store.as_ref()?;
                map_file(&store::segment_path(store, *id))
                    .or_else(|_| map_file(&store::segment_path(&store::spill_dir_for(store), *id)))
                    .ok()
            }
        }
    }
}

/// A file's bytes as a read-only mapping.
pub(crate) fn map_file(path: &Path) -> std::io::Result<Bytes> {
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: segments and cached binaries are written once under a temporary name and never
    // modified after they get their final one (see `store::Segment::map`); the one other file
    // mapped, the running executable (`/proc/self/exe`), cannot be written while it runs
    // (the kernel refuses with ETXTBSY).
    let map = unsafe { memmap2::Mmap::map(&file) }?;
    Ok(Bytes::from_owner(map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use prism_graph::TaskId;
    use prism_transport::tls::ClusterAuthority;

    /// Serves one object's bytes.
    struct One(PullKey, Bytes);

    impl ObjectSource for One {
        fn bytes(&self, key: &PullKey) -> Option<Bytes> {
            (*key == self.0).then(|| self.1.clone())
        }
    }

    #[tokio::test]
    async fn a_pull_refills_a_pooled_segment_and_arrives_whole() {
        let ca = ClusterAuthority::create("pool").unwrap();
        let (server_id, client_id) = (ca.issue("a").unwrap(), ca.issue("b").unwrap());
        let id = ObjectId::new(TaskId::new(9, 1), 0);
        let len = 3 * transfer::CHUNK + 5;
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let source = Arc::new(One(PullKey::Object(id), Bytes::from(bytes.clone())));
        let server = quic::server_endpoint("127.0.0.1:0".parse().unwrap(), &server_id).unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(transfer::serve_endpoint(server, "a".into(), source));
        let client = quic::client_endpoint("127.0.0.2:0".parse().unwrap()).unwrap();
        let peers = Peers::new("b".into(), client, client_id);

        let dir = store::create_session_dir().unwrap();
        // A freed object's segment, larger than the one to come, waits in the pool.
        let freed = ObjectId::new(TaskId::new(9, 2), 0);
        let ones = |buf: &mut [u8]| {
            buf.fill(1);
            Ok::<_, std::convert::Infallible>(buf.len())
        };
        drop(store::Segment::create_with(&dir, freed, len + 4096, ones).unwrap());
        store::SegmentPool::new(1 << 30).recycle(&dir, freed, (len + 4096) as u64, None);

        peers
            .pull_to_store("job", addr, &dir, id, len as u64)
            .await
            .unwrap();
        let other = ObjectId::new(TaskId::new(9, 3), 0);
        let reused = !store::take_pooled(&dir, other, 1 << 20);
        let arrived = store::Segment::open(&dir, id, len as u64)
            .map(|segment| segment.bytes() == bytes.as_slice())
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(reused, "the pull took the pooled segment");
        assert!(
            arrived,
            "every byte arrived, none of the freed object's left"
        );
    }
}
