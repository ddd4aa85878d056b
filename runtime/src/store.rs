//! The node's shared-memory object store: an object at or above the inline threshold lives in
//! a segment of its own, a file in the session's directory under `/dev/shm`, written once by
//! the process that made the value and mapped read-only by every reader on the node, so a
//! reader on the same node copies nothing. The owner unlinks a segment when the object is
//! freed; readers that still map it keep their view until they drop it. The session directory
//! is 0700 and every segment 0600: objects are readable by this user alone.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prism_graph::ObjectId;
use rkyv::util::AlignedVec;

/// Where sessions keep their segments: shared memory when the host has it.
fn base_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Removes the directories in `dir` named `prism-PID-..` (ending in `suffix`) that belong to
/// this user and whose process `PID` is gone: the leftovers of sessions that crashed.
fn sweep_dead_sessions(dir: &Path, suffix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix("prism-"))
            .filter(|n| n.ends_with(suffix))
        else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        // Only our own sessions' leftovers (another user's are not ours to judge).
        let ours = std::fs::symlink_metadata(entry.path())
            .is_ok_and(|m| m.is_dir() && m.uid() == crate::files::euid());
        if let Some(pid) = pid
            && ours
            && crate::files::process_gone(pid)
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Makes a fresh session directory, first removing those of sessions whose process is gone
/// (their shared-memory directories and their spill directories).
pub(crate) fn create_session_dir() -> std::io::Result<PathBuf> {
    let base = base_dir();
    sweep_dead_sessions(&base, "");
    sweep_dead_sessions(&std::env::temp_dir(), SPILL_SUFFIX);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = base.join(format!("prism-{}-{nanos:x}", std::process::id()));
    // Created here and now (not found): a directory someone prepared under this name is refused.
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// The ending of spill directories' names.
const SPILL_SUFFIX: &str = ".spill";

/// Where a session spills objects: on disk (the temporary directory), named after the session
/// (`prism-PID-NANOS.spill`).
pub(crate) fn spill_dir_for(store_dir: &Path) -> PathBuf {
    let mut name = store_dir
        .file_name()
        .map_or_else(|| "prism".into(), |n| n.to_os_string());
    name.push(SPILL_SUFFIX);
    std::env::temp_dir().join(name)
}

/// The files behind one session's objects: its shared-memory segments, the pool of freed
/// ones, and the spill directory. The owner decides what to spill, restore and free; this
/// does it.
#[derive(Debug)]
pub(crate) struct ObjectFiles {
    /// The session's directory of segments.
    pub(crate) store_dir: PathBuf,
    /// Where objects are spilled (created on the first spill).
    pub(crate) spill_dir: PathBuf,
    /// Segments of freed objects, for the next large puts.
    pub(crate) pool: SegmentPool,
}

impl ObjectFiles {
    /// The files of the session at `store_dir`, pooling up to `pool_limit` bytes.
    pub(crate) fn new(store_dir: PathBuf, pool_limit: u64) -> Self {
        ObjectFiles {
            spill_dir: spill_dir_for(&store_dir),
            store_dir,
            pool: SegmentPool::new(pool_limit),
        }
    }

    /// Writes the object's bytes to the spill directory, then unlinks its segment (readers
    /// that map it keep their view).
    pub(crate) fn spill(&self, id: ObjectId, segment: &Segment) -> std::io::Result<()> {
        use std::io::Write;
        crate::files::private_dir(&self.spill_dir)?;
        crate::files::private_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(segment_path(&self.spill_dir, id))?
            .write_all(segment.bytes())?;
        unlink(&self.store_dir, id);
        tracing::debug!(object = %id, bytes = segment.bytes().len(), "spilled to disk");
        Ok(())
    }

    /// Reads a spilled object of `len` bytes back into a segment of its own, removing the
    /// spill file; the error says why it could not.
    pub(crate) fn restore(&self, id: ObjectId, len: u64) -> Result<ObjectBytes, String> {
        use std::io::Read;
        let path = segment_path(&self.spill_dir, id);
        let restored = File::open(&path).and_then(|mut file| {
            Segment::create_with(&self.store_dir, id, len as usize, |buf| {
                file.read_exact(buf).map(|()| buf.len())
            })
        });
        let _ = std::fs::remove_file(&path);
        restored
            .map(|segment| ObjectBytes::Shared(Arc::new(segment)))
            .map_err(|e| format!("cannot restore it from {}: {e}", path.display()))
    }

    /// A freed object's segment of `len` bytes goes to the pool when nobody maps it
    /// (`unused`), else it is unlinked.
    pub(crate) fn free_shared(&mut self, id: ObjectId, len: u64, unused: Option<Segment>) {
        match unused {
            Some(segment) => self.pool.recycle(&self.store_dir, id, len, Some(segment)),
            None => unlink(&self.store_dir, id),
        }
    }

    /// A freed object's spill file goes.
    pub(crate) fn free_spilled(&self, id: ObjectId) {
        let _ = std::fs::remove_file(segment_path(&self.spill_dir, id));
    }
}

/// The path of an object's segment.
pub(crate) fn segment_path(dir: &Path, id: ObjectId) -> PathBuf {
    dir.join(format!("{:x}.{}.{}", id.task.owner, id.task.seq, id.index))
}

/// Where this process fills `id`'s segment before publishing it under its name
/// ([`segment_path`]), so that a reader opening the name finds every byte in place: a rebuilt
/// object is written on a node whose workers may be about to open it, and a zero-filled or
/// half-written archive can read as a valid, wrong value (a vector of zeros, or an empty one).
/// The name is this process's own, so that two writers of one object never share a file.
pub(crate) fn filling_path(dir: &Path, id: ObjectId) -> PathBuf {
    let mut name = segment_path(dir, id).into_os_string();
    name.push(format!(".w{}", std::process::id()));
    PathBuf::from(name)
}

/// Gives a segment this process filled at [`filling_path`] its name; readers that mapped an
/// earlier copy keep it.
pub(crate) fn publish(dir: &Path, id: ObjectId) -> std::io::Result<()> {
    std::fs::rename(filling_path(dir, id), segment_path(dir, id))
}

/// Removes a segment this process was filling (the fill failed or its object is not wanted).
pub(crate) fn discard_filling(dir: &Path, id: ObjectId) {
    let _ = std::fs::remove_file(filling_path(dir, id));
}

/// Removes the segments process `pid` was filling in `dir` when it ended (a worker killed
/// mid-put): nothing else would, since no object names them.
pub(crate) fn discard_fillings_of(dir: &Path, pid: u32) {
    let ending = format!(".w{pid}");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(&ending))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Removes from `dir` the segments of the objects whose ids name `owner` (a worker that
/// died), but for those in `keep` (sorted): what it owned goes with it, and nothing else
/// would remove those files before the job ends. A reader that mapped one keeps its pages.
/// The segments removed.
pub(crate) fn unlink_owned_by(dir: &Path, owner: u64, keep: &[ObjectId]) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let named = |name: &str| {
        let mut parts = name.split('.');
        let (task_owner, seq, index) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || u64::from_str_radix(task_owner, 16).ok()? != owner {
            return None;
        }
        let task = prism_graph::TaskId::new(owner, seq.parse().ok()?);
        Some(ObjectId::new(task, index.parse().ok()?))
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let Some(id) = entry.file_name().to_str().and_then(named) else {
            continue;
        };
        if keep.binary_search(&id).is_err() && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(owner, removed, "removed the segments a dead worker owned");
    }
    removed
}

/// Removes an object's segment.
pub(crate) fn unlink(dir: &Path, id: ObjectId) {
    if let Err(e) = std::fs::remove_file(segment_path(dir, id))
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(object = %id, "cannot remove a shared-memory segment: {e}");
    }
}

/// Freed segments smaller than this are removed, not pooled.
const MIN_POOLED: u64 = 1 << 20;

/// The most files the pool keeps (so that looking through it stays cheap).
const MAX_POOLED_FILES: usize = 64;

/// Where a store keeps pooled segments.
fn pool_dir(dir: &Path) -> PathBuf {
    dir.join("pool")
}

/// The pooled files of the store at `dir`: (path, length, sequence), oldest first. A file's
/// name is `LEN.SEQ`.
fn pooled(dir: &Path) -> Vec<(PathBuf, u64, u64)> {
    let Ok(entries) = std::fs::read_dir(pool_dir(dir)) else {
        return Vec::new();
    };
    let mut files: Vec<(PathBuf, u64, u64)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let (len, seq) = name.to_str()?.split_once('.')?;
            Some((e.path(), len.parse().ok()?, seq.parse().ok()?))
        })
        .collect();
    files.sort_by_key(|f| f.2);
    files
}

/// Renames a pooled segment of at least `len` bytes (the smallest such) to this process's
/// [`filling_path`] of `id`, for [`Segment::create_with`] to fill; false when none fits. Any process of the node may take
/// one: a file another took first is skipped.
pub(crate) fn take_pooled(dir: &Path, id: ObjectId, len: u64) -> bool {
    if len < MIN_POOLED {
        return false;
    }
    let mut fits: Vec<(PathBuf, u64, u64)> =
        pooled(dir).into_iter().filter(|f| f.1 >= len).collect();
    fits.sort_by_key(|f| f.1);
    fits.into_iter()
        .any(|(path, _, _)| std::fs::rename(path, filling_path(dir, id)).is_ok())
}

/// Segments of freed objects kept for the next large puts of any process of the node (see
/// [`take_pooled`]): their pages are allocated already, and the kernel zeroing fresh pages
/// costs more than the copy into them (a put into a fresh segment ran at a tenth of `memcpy`).
/// The owner that frees objects adds to it; the pool holds at most `limit` bytes and
/// [`MAX_POOLED_FILES`] files, the oldest going first.
///
/// The pool's owner also keeps its own writable mappings of the segments it wrote itself
/// ([`SegmentPool::take_mapped`]): a put of the same size refills one in place, without mapping
/// and populating its pages again (a third of a large put's time) or unmapping them later.
#[derive(Debug, Default)]
pub(crate) struct SegmentPool {
    limit: u64,
    next: u64,
    /// At least the bytes pooled now (other processes only take files away): while it is
    /// within a bound, the directory need not be looked at.
    at_most: u64,
    /// Pooled files this process still maps writable, by pooled path.
    mapped: Vec<(PathBuf, memmap2::MmapMut)>,
    /// When this process last pooled or took a segment (see [`SegmentPool::expire`]).
    last_use: Option<std::time::Instant>,
}

impl SegmentPool {
    /// A pool of at most `limit` bytes.
    pub(crate) fn new(limit: u64) -> Self {
        SegmentPool {
            limit,
            ..SegmentPool::default()
        }
    }

    /// Keeps the segment of freed object `id` (`len` bytes) for reuse, or removes it. The
    /// mapping `segment`, when this process wrote it and nobody else here maps it, is kept too.
    pub(crate) fn recycle(&mut self, dir: &Path, id: ObjectId, len: u64, segment: Option<Segment>) {
        if len < MIN_POOLED || len > self.limit {
            return unlink(dir, id);
        }
        self.evict(dir, self.limit - len, MAX_POOLED_FILES - 1);
        self.next += 1;
        let pooled = pool_dir(dir).join(format!("{len}.{}", self.next));
        let moved = std::fs::rename(segment_path(dir, id), &pooled).or_else(|_| {
            crate::files::private_dir(&pool_dir(dir))?;
            std::fs::rename(segment_path(dir, id), &pooled)
        });
        match moved {
            Ok(()) => {
                self.at_most += len;
                self.last_use = Some(std::time::Instant::now());
                if let Some(Segment {
                    map: Mapping::Written(map),
                }) = segment
                {
                    self.mapped.push((pooled, map));
                }
            }
            Err(e) => {
                tracing::debug!(object = %id, "cannot pool a freed segment: {e}");
                unlink(dir, id);
            }
        }
    }

    /// Takes a pooled segment of exactly `len` bytes that this process still maps, renamed to
    /// its [`filling_path`] of `id`, for [`Segment::refill`]; none when no such file is left
    /// (another process may have taken it).
    pub(crate) fn take_mapped(
        &mut self,
        dir: &Path,
        id: ObjectId,
        len: usize,
    ) -> Option<memmap2::MmapMut> {
        while let Some(at) = self.mapped.iter().rposition(|(_, map)| map.len() == len) {
            let (path, map) = self.mapped.swap_remove(at);
            if std::fs::rename(&path, filling_path(dir, id)).is_ok() {
                self.at_most = self.at_most.saturating_sub(len as u64);
                self.last_use = Some(std::time::Instant::now());
                return Some(map);
            }
        }
        None
    }

    /// Frees pooled files until at most `keep` bytes are pooled.
    pub(crate) fn shrink_to(&mut self, dir: &Path, keep: u64) {
        if self.at_most > keep {
            self.evict(dir, keep, MAX_POOLED_FILES);
        }
    }

    /// Frees the whole pool once this process has neither pooled nor taken a segment for
    /// `idle`: memory kept for puts that stopped coming goes back to the machine.
    pub(crate) fn expire(&mut self, dir: &Path, idle: std::time::Duration) {
        if self.at_most > 0 && self.last_use.is_none_or(|t| t.elapsed() >= idle) {
            self.evict(dir, 0, 0);
        }
    }

    /// Removes the oldest pooled files until at most `bytes` and `files` remain.
    fn evict(&mut self, dir: &Path, bytes: u64, files: usize) {
        let all = pooled(dir);
        let mut total: u64 = all.iter().map(|f| f.1).sum();
        let mut count = all.len();
        for (path, len, _) in all {
            if total <= bytes && count <= files {
                break;
            }
            if std::fs::remove_file(path).is_ok() {
                total -= len;
                count -= 1;
            }
        }
        self.at_most = total;
        // Mappings of files removed here or taken by other processes go.
        self.mapped.retain(|(path, _)| path.exists());
    }
}

/// A mapping of one object's segment, only ever read through this type. A segment this
/// process wrote keeps the writable mapping it was filled through (see [`SegmentPool`]).
#[derive(Debug)]
pub(crate) struct Segment {
    map: Mapping,
}

#[derive(Debug)]
enum Mapping {
    Read(memmap2::Mmap),
    Written(memmap2::MmapMut),
}

impl Segment {
    /// Makes the object's segment of exactly `len` bytes and lets `fill` write it in place
    /// (pages are populated in one go, not faulted one by one) at this process's
    /// [`filling_path`] (where [`take_pooled`] may have put a pooled file), then publishes it.
    pub(crate) fn create_with<E: std::fmt::Display>(
        dir: &Path,
        id: ObjectId,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> std::io::Result<Segment> {
        let made = (|| {
            // Not truncated: a pooled segment renamed to this name keeps its pages up to
            // `len` (fill writes every byte).
            let file = crate::files::private_options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(filling_path(dir, id))?;
            file.set_len(len as u64)?;
            // SAFETY: the file is at this process's filling path, a name no reader opens.
            unsafe {
                memmap2::MmapOptions::new()
                    .len(len)
                    .populate()
                    .map_mut(&file)
            }
        })();
        match made {
            Ok(map) => Self::refill(dir, id, map, fill),
            Err(e) => {
                discard_filling(dir, id);
                Err(e)
            }
        }
    }

    /// Fills a writable mapping of the segment at this process's [`filling_path`] of `id`
    /// (just created, or taken from the pool) and publishes it under its name; `fill` must
    /// write every byte. On failure the file is removed.
    pub(crate) fn refill<E: std::fmt::Display>(
        dir: &Path,
        id: ObjectId,
        mut map: memmap2::MmapMut,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> std::io::Result<Segment> {
        let len = map.len();
        let filled = match fill(&mut map) {
            Ok(written) if written == len => publish(dir, id),
            Ok(written) => Err(std::io::Error::other(format!(
                "the archive took {written} bytes, {len} were measured"
            ))),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        if let Err(e) = filled {
            discard_filling(dir, id);
            return Err(e);
        }
        Ok(Segment {
            map: Mapping::Written(map),
        })
    }

    /// Maps an existing segment, checking its length.
    pub(crate) fn open(dir: &Path, id: ObjectId, len: u64) -> std::io::Result<Segment> {
        let file = File::open(segment_path(dir, id))?;
        Self::map(&file, len as usize)
    }

    fn map(file: &File, len: usize) -> std::io::Result<Segment> {
        let actual = file.metadata()?.len() as usize;
        if actual != len {
            return Err(std::io::Error::other(format!(
                "segment holds {actual} bytes, {len} expected"
            )));
        }
        // SAFETY: the mapping's bytes do not change while a reader uses them. A segment is
        // written only at its writer's own filling path, a name no reader opens (made fresh, or
        // renamed out of the pool: a rename hands it to one process), and gets its name once
        // filled; a later copy of the same object replaces the name, not the mapped file.
        // It is pooled, and so may be refilled, only after its owner freed the object: no
        // `ObjectRef`, `ArchivedRef`, task argument or worker hold of it is left, and a worker's
        // cached mapping is dropped once its file moved (`SegmentCache::forget_freed`). The
        // file is 0600 in a 0700 directory: only processes of this user can write it, and
        // those are inside the trust boundary (SECURITY.md); they could as well ptrace us.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(file)? };
        Ok(Segment {
            map: Mapping::Read(map),
        })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.map {
            Mapping::Read(map) => map,
            Mapping::Written(map) => map,
        }
    }
}

/// An object's archived bytes, wherever they live: inline (small, in the owner's memory) or in a
/// shared-memory segment. Both are aligned for rkyv.
#[derive(Debug, Clone)]
pub(crate) enum ObjectBytes {
    Inline(Arc<AlignedVec>),
    Shared(Arc<Segment>),
}

impl ObjectBytes {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            ObjectBytes::Inline(v) => v,
            ObjectBytes::Shared(s) => s.bytes(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// How the object travels to a worker on this node.
    pub(crate) fn to_wire(&self, id: ObjectId) -> prism_transport::Value {
        match self {
            ObjectBytes::Inline(v) => prism_transport::Value::Inline(v.to_vec()),
            ObjectBytes::Shared(s) => prism_transport::Value::Shared {
                id,
                len: s.bytes().len() as u64,
            },
        }
    }

    /// A copy of `bytes`, aligned as rkyv needs.
    pub(crate) fn inline(bytes: &[u8]) -> ObjectBytes {
        let mut aligned = AlignedVec::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        ObjectBytes::Inline(Arc::new(aligned))
    }

    /// The bytes a peer on this node sent: copied when inline, mapped when shared.
    pub(crate) fn from_wire(
        dir: &Path,
        value: &prism_transport::ArchivedValue,
    ) -> std::io::Result<ObjectBytes> {
        match value {
            prism_transport::ArchivedValue::Inline(bytes) => Ok(ObjectBytes::inline(bytes)),
            prism_transport::ArchivedValue::Shared { id, len } => Ok(ObjectBytes::Shared(
                Arc::new(Segment::open(dir, id.to_native(), len.to_native())?),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_graph::TaskId;

    fn sevens(buf: &mut [u8]) -> Result<usize, std::convert::Infallible> {
        buf.fill(7);
        Ok(buf.len())
    }

    #[test]
    fn freed_segments_are_reused_by_size_within_the_pool_limit() {
        let dir = create_session_dir().unwrap();
        let mb = MIN_POOLED as usize;
        let id = |seq| ObjectId::new(TaskId::new(4, seq), 0);
        let bytes = |dir: &Path| pooled(dir).iter().map(|f| f.1).sum::<u64>();
        let mut pool = SegmentPool::new(5 * MIN_POOLED);
        for (seq, len) in [(1, 2 * mb), (2, 3 * mb), (3, 16)] {
            drop(Segment::create_with(&dir, id(seq), len, sevens).unwrap());
            pool.recycle(&dir, id(seq), len as u64, None);
        }
        assert_eq!(bytes(&dir), 5 * MIN_POOLED, "the tiny one was removed");
        assert!(Segment::open(&dir, id(3), 16).is_err());
        // The smallest file that fits: the 2 MiB one, shrunk, refilled in full.
        assert!(take_pooled(&dir, id(4), MIN_POOLED + 1));
        let ones = |buf: &mut [u8]| {
            buf.fill(1);
            Ok::<_, std::convert::Infallible>(buf.len())
        };
        let reused = Segment::create_with(&dir, id(4), mb + 1, ones).unwrap();
        assert!(reused.bytes().iter().all(|&b| b == 1));
        assert_eq!(bytes(&dir), 3 * MIN_POOLED);
        assert!(
            !take_pooled(&dir, id(5), 4 * MIN_POOLED),
            "nothing that large"
        );
        // Over the limit, the oldest pooled file goes.
        pool.recycle(&dir, id(4), MIN_POOLED + 1, Some(reused));
        drop(Segment::create_with(&dir, id(6), 2 * mb, sevens).unwrap());
        pool.recycle(&dir, id(6), 2 * MIN_POOLED, None);
        assert_eq!(
            bytes(&dir),
            3 * MIN_POOLED + 1,
            "the 3 MiB file was evicted"
        );
        // The mapping kept with id 4's file is refilled in place for a put of its size only.
        assert!(pool.take_mapped(&dir, id(7), mb).is_none());
        let map = pool
            .take_mapped(&dir, id(7), mb + 1)
            .expect("a mapped segment");
        let twos = |buf: &mut [u8]| {
            buf.fill(2);
            Ok::<_, std::convert::Infallible>(buf.len())
        };
        let refilled = Segment::refill(&dir, id(7), map, twos).unwrap();
        let read = Segment::open(&dir, id(7), MIN_POOLED + 1).unwrap();
        assert!(
            read.bytes().iter().all(|&b| b == 2),
            "readers see the refill"
        );
        assert_eq!(bytes(&dir), 2 * MIN_POOLED);
        // A mapped file another process took from the pool is not handed out.
        drop(read);
        pool.recycle(&dir, id(7), MIN_POOLED + 1, Some(refilled));
        assert!(take_pooled(&dir, id(8), MIN_POOLED + 1));
        assert!(take_pooled(&dir, id(9), MIN_POOLED + 1));
        assert!(pool.take_mapped(&dir, id(10), mb + 1).is_none());
        pool.shrink_to(&dir, 0);
        assert!(pooled(&dir).is_empty());
        // A pool nobody used for a while is emptied.
        drop(Segment::create_with(&dir, id(11), mb, sevens).unwrap());
        pool.recycle(&dir, id(11), MIN_POOLED, None);
        pool.expire(&dir, std::time::Duration::from_secs(60));
        assert_eq!(bytes(&dir), MIN_POOLED, "just used");
        pool.expire(&dir, std::time::Duration::ZERO);
        assert!(pooled(&dir).is_empty(), "idle");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_segment_is_seen_under_its_name_only_once_filled() {
        let dir = create_session_dir().unwrap();
        let id = ObjectId::new(TaskId::new(5, 2), 1);
        let len = 2 * MIN_POOLED as usize;
        // A copy readers on the node map already (a rebuild writes the object again).
        let earlier = Segment::create_with(&dir, id, len, sevens).unwrap();
        let threes = |buf: &mut [u8]| {
            buf.fill(3);
            Ok::<_, std::convert::Infallible>(buf.len())
        };
        drop(Segment::create_with(
            &dir,
            ObjectId::new(TaskId::new(5, 3), 0),
            len,
            threes,
        ));
        let mut pool = SegmentPool::new(4 * MIN_POOLED);
        pool.recycle(&dir, ObjectId::new(TaskId::new(5, 3), 0), len as u64, None);
        assert!(take_pooled(&dir, id, len as u64), "a pooled file to refill");
        let again = Segment::create_with(&dir, id, len, |buf: &mut [u8]| {
            // Mid-fill, the name still opens the earlier, whole copy.
            let seen = Segment::open(&dir, id, len as u64).unwrap();
            assert!(seen.bytes().iter().all(|&b| b == 7));
            buf.fill(9);
            Ok::<_, std::convert::Infallible>(buf.len())
        })
        .unwrap();
        assert!(again.bytes().iter().all(|&b| b == 9));
        let seen = Segment::open(&dir, id, len as u64).unwrap();
        assert!(
            seen.bytes().iter().all(|&b| b == 9),
            "published once filled"
        );
        assert!(
            earlier.bytes().iter().all(|&b| b == 7),
            "an old mapping stays"
        );
        // A fill that fails leaves neither a name nor a file behind.
        let other = ObjectId::new(TaskId::new(5, 4), 0);
        assert!(Segment::create_with(&dir, other, 64, |_| Err("no")).is_err());
        assert!(Segment::open(&dir, other, 64).is_err());
        assert!(!filling_path(&dir, other).exists());
        // What a process that ended left half-filled goes; another's stays.
        let mine = filling_path(&dir, other);
        let name = |pid: u32| {
            let mut name = segment_path(&dir, other).into_os_string();
            name.push(format!(".w{pid}"));
            PathBuf::from(name)
        };
        let gone = std::process::id().wrapping_add(1);
        let gone_too = std::process::id().wrapping_add(11);
        for path in [mine.clone(), name(gone), name(gone_too)] {
            std::fs::write(path, b"half").unwrap();
        }
        discard_fillings_of(&dir, gone);
        assert!(!name(gone).exists());
        assert!(
            name(gone_too).exists() && mine.exists(),
            "only that process's"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn segments_round_trip_and_outlive_their_unlink() {
        let dir = create_session_dir().unwrap();
        let id = ObjectId::new(TaskId::new(3, 9), 1);
        let short = Segment::create_with(&dir, id, 10, |_| Ok::<_, std::convert::Infallible>(3));
        assert!(short.is_err(), "a write shorter than measured is an error");
        let stored = ObjectBytes::Shared(Arc::new(
            Segment::create_with(&dir, id, 4096, sevens).unwrap(),
        ));
        assert_eq!(stored.as_slice(), &[7u8; 4096][..]);
        let reader = Segment::open(&dir, id, 4096).unwrap();
        assert!(
            Segment::open(&dir, id, 4095).is_err(),
            "a wrong length is refused"
        );
        unlink(&dir, id);
        assert!(Segment::open(&dir, id, 4096).is_err());
        assert_eq!(
            reader.bytes(),
            stored.as_slice(),
            "mappings stay valid after unlink"
        );
        assert_eq!(reader.bytes().as_ptr() as usize % 4096, 0, "page-aligned");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_dead_owner_s_segments_go_but_for_those_kept_and_others() {
        let dir = create_session_dir().unwrap();
        let (dead, other) = (0x1_0000_0002, 0x1_0000_0020);
        let id = |owner, seq, index| ObjectId::new(TaskId::new(owner, seq), index);
        let (mine, kept, theirs) = (id(dead, 1, 0), id(dead, 2, 1), id(other, 1, 0));
        for one in [mine, kept, theirs, id(dead, 3, 0)] {
            drop(Segment::create_with(&dir, one, 64, sevens).unwrap());
        }
        // A segment another process is filling, the pool, and a stranger's file stay.
        let filling = filling_path(&dir, id(dead, 4, 0));
        std::fs::write(&filling, b"x").unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        let mut keep = vec![kept];
        keep.sort_unstable();
        assert_eq!(unlink_owned_by(&dir, dead, &keep), 2);
        let here = |one| segment_path(&dir, one).exists();
        assert!(!here(mine) && !here(id(dead, 3, 0)));
        assert!(here(kept) && here(theirs));
        assert!(filling.exists() && dir.join("notes.txt").exists());
        assert_eq!(
            unlink_owned_by(&dir, dead, &keep),
            0,
            "nothing left to remove"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
