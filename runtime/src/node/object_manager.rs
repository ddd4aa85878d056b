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

/// Connections to other hosts for pulls, reused.
#[derive(Debug)]
pub(crate) struct Peers {
    name: String,
    endpoint: quinn::Endpoint,
    identity: Identity,
    open: tokio::sync::Mutex<HashMap<(SocketAddr, String), quinn::Connection>>,
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
        let key = (addr, job.to_string());
        if let Some(connection) = self.open.lock().await.get(&key)
            && connection.close_reason().is_none()
        {
            return Ok(connection.clone());
        }
        let hello = HostHello::new(self.name.clone(), Purpose::Objects(job.to_string()), None);
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
        let connection = self
            .get(from, job)
            .await
            .map_err(|e| format!("cannot reach {from} for {id}: {e}"))?;
        let part = store::filling_path(store, id);
        let file = crate::files::private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&part)
            .and_then(|f| f.set_len(len).map(|()| f))
            .map_err(|e| format!("cannot make room for {id} in the store: {e}"))?;
        if len > 0 {
            // SAFETY: the file was just created at this process's filling path, a name no reader
            // opens; readers open the final name, given below once every byte is in place.
            let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }
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
        tracing::debug!(object = %id, len, %from, "pulled an object");
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
    // modified after they get their final one (see `store::Segment::map`).
    let map = unsafe { memmap2::Mmap::map(&file) }?;
    Ok(Bytes::from_owner(map))
}
