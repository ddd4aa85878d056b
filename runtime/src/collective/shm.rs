//! A ring link between two members on one node: a shared-memory segment in the node's private
//! session directory holding a header and a ring of chunk slots. The writer fills a slot and
//! moves `head`, the reader uses the slot in place (a reduction reads it straight into the
//! member's buffer) and moves `tail`. Both spin briefly, then sleep on a futex with a short
//! timeout, checking on each wake that the other process still lives and that nobody ended the
//! collective.
//!
//! The reader makes the segment (its inbox) and publishes its name; the writer opens it and
//! marks itself attached; the reader then unlinks it, so nothing stays in /dev/shm after a
//! crash past the join (the node removes its session directory at the end in any case).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use memmap2::MmapMut;

use super::ring::{CHUNK_BYTES, Fault, Link};
use crate::process::ProcessHandle;

/// Chunk slots per link: enough to keep both sides busy, small enough to stay in cache.
const SLOTS: usize = 8;
/// The header's room (one page, so slots are page-aligned).
const HEADER: usize = 4096;
/// The longest abort reason kept.
const REASON: usize = 512;
/// Marks an initialized segment.
const MAGIC: u64 = 0x7072_6973_6d5f_636c; // "prism_cl"
/// How long a waiter spins (yielding) before it sleeps.
const SPIN: Duration = Duration::from_micros(100);
/// How long a waiter sleeps before it checks on the other side.
const NAP: Duration = Duration::from_millis(20);

/// The shared header.
#[repr(C)]
struct Header {
    magic: AtomicU64,
    /// Set by the writer once it mapped the segment.
    writer_pid: AtomicU32,
    /// Chunks written (wrapping).
    head: AtomicU32,
    /// Chunks read (wrapping).
    tail: AtomicU32,
    /// Set while the reader sleeps on `head`.
    reader_sleeping: AtomicU32,
    /// Set while the writer sleeps on `tail`.
    writer_sleeping: AtomicU32,
    /// 0, or 1 + the rank whose failure ended the collective (set by the writer).
    abort: AtomicU32,
    abort_len: AtomicU32,
    /// 0, or 1 + the rank whose failure ended the collective (set by the reader, which had to
    /// stop reading).
    back: AtomicU32,
    lens: [AtomicU32; SLOTS],
}

/// Where the abort reason's bytes start (after the header, in its page).
const REASON_AT: usize = std::mem::size_of::<Header>();
const _: () = assert!(REASON_AT + REASON <= HEADER);

/// The segment's size.
const SIZE: usize = HEADER + SLOTS * CHUNK_BYTES;

/// The process at the other end, watched through a pidfd (so a reused pid is never taken for
/// it, and a zombie counts as gone).
#[derive(Debug)]
pub(crate) struct Peer {
    pid: u32,
    /// `None`: no process had that pid and start time when we looked.
    handle: Option<ProcessHandle>,
}

impl Peer {
    /// Process `pid`, which started at `started` (see [`crate::process::start_time`]).
    pub(crate) fn of(pid: u32, started: u64) -> Peer {
        let handle = ProcessHandle::verified(pid, started).ok().flatten();
        Peer { pid, handle }
    }

    /// Whether it still runs.
    fn alive(&self) -> bool {
        self.handle
            .as_ref()
            .is_some_and(|h| !h.wait_exit(Duration::ZERO))
    }
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned 32-bit atomic in a mapping that outlives the call;
    // FUTEX_WAIT only reads it and sleeps; `ts` lives on the stack for the call. A shared
    // (not private) futex, since the word is in memory two processes map.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        );
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned 32-bit atomic in a live mapping; FUTEX_WAKE reads no
    // memory of ours beyond its address.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

/// One end of a shared-memory link.
struct Segment {
    map: MmapMut,
}

impl Segment {
    fn header(&self) -> &Header {
        // SAFETY: the mapping is `SIZE` bytes, page-aligned, and starts with a `Header` (every
        // field an atomic or plain bytes, valid for any bit pattern, zeroed by ftruncate);
        // the reference borrows `self`, which keeps the mapping alive.
        unsafe { &*self.map.as_ptr().cast::<Header>() }
    }

    fn slot(&self, index: u32) -> *mut u8 {
        let offset = HEADER + (index as usize % SLOTS) * CHUNK_BYTES;
        // SAFETY: `offset + CHUNK_BYTES <= SIZE`, inside the mapping.
        unsafe { self.map.as_ptr().cast_mut().add(offset) }
    }

    fn open(path: &Path, create: bool) -> std::io::Result<Segment> {
        let file: File = crate::files::private_options()
            .read(true)
            .write(true)
            .create_new(create)
            .open(path)?;
        if create {
            file.set_len(SIZE as u64)?;
        } else if file.metadata()?.len() != SIZE as u64 {
            return Err(std::io::Error::other("not a collective link"));
        }
        // SAFETY: the file is ours (0600, in the node's private directory), sized to `SIZE`;
        // both ends touch it only through the atomics of the header and the slots the ring's
        // indices hand to one side at a time.
        let map = unsafe { MmapMut::map_mut(&file)? };
        Ok(Segment { map })
    }
}

/// Waits until `ready()`, spinning, then sleeping on `word` (expected to hold `seen` while not
/// ready), with `sleeping` set; checks `peer` and the abort flag between naps.
fn wait_for(
    ended: impl Fn() -> Option<Fault>,
    word: &AtomicU32,
    sleeping: &AtomicU32,
    peer: (&Peer, u32),
    deadline: Option<Instant>,
    ready: impl Fn() -> bool,
) -> Result<(), Fault> {
    let start = Instant::now();
    while start.elapsed() < SPIN {
        if ready() {
            return Ok(());
        }
        std::thread::yield_now();
    }
    let (process, rank) = peer;
    loop {
        let seen = word.load(Ordering::SeqCst);
        sleeping.store(1, Ordering::SeqCst);
        if ready() {
            sleeping.store(0, Ordering::SeqCst);
            return Ok(());
        }
        futex_wait(word, seen, NAP);
        sleeping.store(0, Ordering::SeqCst);
        if ready() {
            return Ok(());
        }
        if let Some(fault) = ended() {
            return Err(fault);
        }
        if !process.alive() {
            return Err(Fault::Died {
                rank,
                reason: format!("its process {} exited", process.pid),
            });
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Fault::TimedOut { rank });
        }
    }
}

/// Whether the writer ended the collective (what the reader checks).
fn aborted(seg: &Segment) -> Option<Fault> {
    let header = seg.header();
    let code = header.abort.load(Ordering::SeqCst);
    (code != 0).then(|| {
        let len = (header.abort_len.load(Ordering::SeqCst) as usize).min(REASON);
        let mut reason = vec![0u8; len];
        // SAFETY: `REASON_AT + len <= HEADER` is inside the mapping and outside every
        // reference into it; the writer wrote these bytes before it set `abort` (SeqCst).
        unsafe {
            std::ptr::copy_nonoverlapping(
                seg.map.as_ptr().add(REASON_AT),
                reason.as_mut_ptr(),
                len,
            );
        }
        Fault::Aborted {
            rank: code - 1,
            reason: String::from_utf8_lossy(&reason).into_owned(),
        }
    })
}

/// The reading end: this member's inbox from its left neighbour.
pub(crate) struct Inbox {
    seg: Segment,
    path: Option<PathBuf>,
    peer_rank: u32,
    peer: Peer,
    timeout: Option<Duration>,
}

impl Inbox {
    /// Makes the inbox at `path` for the member of rank `peer_rank`, process `peer`.
    /// The file is made and sized under a temporary name and renamed into place, so the writer
    /// never finds it half made.
    pub(crate) fn create(path: PathBuf, peer_rank: u32, peer: Peer) -> std::io::Result<Inbox> {
        let mut making = path.clone().into_os_string();
        making.push(".new");
        let making = PathBuf::from(making);
        let seg = Segment::open(&making, true)?;
        seg.header().magic.store(MAGIC, Ordering::SeqCst);
        if let Err(e) = std::fs::rename(&making, &path) {
            let _ = std::fs::remove_file(&making);
            return Err(e);
        }
        Ok(Inbox {
            seg,
            path: Some(path),
            peer_rank,
            peer,
            timeout: None,
        })
    }

    /// Waits (up to `timeout`) for the writer to attach, then unlinks the file.
    pub(crate) fn attached(&mut self, timeout: Duration) -> Result<(), Fault> {
        let header = self.seg.header();
        wait_link(self.peer_rank, &self.peer, timeout, || {
            Ok((header.writer_pid.load(Ordering::SeqCst) != 0).then_some(()))
        })?;
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }
}

/// Polls `ready` every millisecond until it gives a value, for at most `timeout`, failing as
/// soon as the other end, `peer`, is gone (checked every 20 ms).
fn wait_link<T>(
    rank: u32,
    peer: &Peer,
    timeout: Duration,
    mut ready: impl FnMut() -> Result<Option<T>, Fault>,
) -> Result<T, Fault> {
    let deadline = Instant::now() + timeout;
    let mut tries = 0u64;
    loop {
        tries += 1;
        if let Some(value) = ready()? {
            return Ok(value);
        }
        if tries.is_multiple_of(20) && !peer.alive() {
            return Err(Fault::Died {
                rank,
                reason: format!("its process {} exited before its link was made", peer.pid),
            });
        }
        if Instant::now() >= deadline {
            return Err(Fault::TimedOut { rank });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Link for Inbox {
    fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    fn send(&mut self, _bytes: &[u8]) -> Result<(), Fault> {
        unreachable!("an inbox only receives")
    }

    fn recv(&mut self, len: usize, f: &mut dyn FnMut(&[u8])) -> Result<(), Fault> {
        let (rank, peer) = (self.peer_rank, &self.peer);
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let header = self.seg.header();
        let tail = header.tail.load(Ordering::SeqCst);
        let ready = || header.head.load(Ordering::SeqCst) != tail;
        let ended = || aborted(&self.seg);
        wait_for(
            ended,
            &header.head,
            &header.reader_sleeping,
            (peer, rank),
            deadline,
            ready,
        )?;
        let got = header.lens[tail as usize % SLOTS].load(Ordering::SeqCst) as usize;
        if got != len {
            return Err(Fault::Protocol {
                rank,
                reason: format!("sent a chunk of {got} bytes where {len} were due"),
            });
        }
        // SAFETY: the slot is inside the mapping, `len <= CHUNK_BYTES` (the writer checked),
        // and the writer moved `head` past it (SeqCst, after writing): it does not touch this
        // slot again until `tail` moves past it below.
        let bytes = unsafe { std::slice::from_raw_parts(self.seg.slot(tail), len) };
        f(bytes);
        header.tail.store(tail.wrapping_add(1), Ordering::SeqCst);
        if header.writer_sleeping.load(Ordering::SeqCst) != 0 {
            futex_wake(&header.tail);
        }
        Ok(())
    }

    fn abort(&mut self, rank: u32, _reason: &str) {
        let header = self.seg.header();
        header.back.store(rank + 1, Ordering::SeqCst);
        futex_wake(&header.tail);
    }
}

/// The writing end: the right neighbour's inbox.
pub(crate) struct Outbox {
    seg: Segment,
    peer_rank: u32,
    peer: Peer,
    timeout: Option<Duration>,
}

impl Outbox {
    /// Opens the inbox at `path` of the member of rank `peer_rank`, process `peer`, waiting up
    /// to `timeout` for it to appear.
    pub(crate) fn open(
        path: &Path,
        peer_rank: u32,
        peer: Peer,
        timeout: Duration,
    ) -> Result<Outbox, Fault> {
        let seg = wait_link(peer_rank, &peer, timeout, || {
            match Segment::open(path, false) {
                Ok(seg) if seg.header().magic.load(Ordering::SeqCst) == MAGIC => Ok(Some(seg)),
                Ok(_) => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Fault::Protocol {
                    rank: peer_rank,
                    reason: format!("cannot open its link {}: {e}", path.display()),
                }),
            }
        })?;
        seg.header()
            .writer_pid
            .store(std::process::id(), Ordering::SeqCst);
        Ok(Outbox {
            seg,
            peer_rank,
            peer,
            timeout: None,
        })
    }
}

impl Link for Outbox {
    fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Fault> {
        assert!(bytes.len() <= CHUNK_BYTES, "a chunk fits a slot");
        let (rank, peer) = (self.peer_rank, &self.peer);
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let header = self.seg.header();
        let head = header.head.load(Ordering::SeqCst);
        let room = || head.wrapping_sub(header.tail.load(Ordering::SeqCst)) < SLOTS as u32;
        let ended = || {
            let code = header.back.load(Ordering::SeqCst);
            (code != 0).then(|| Fault::Aborted {
                rank: code - 1,
                reason: "the member it sends to stopped reading".to_string(),
            })
        };
        wait_for(
            ended,
            &header.tail,
            &header.writer_sleeping,
            (peer, rank),
            deadline,
            room,
        )?;
        // SAFETY: the slot is inside the mapping and `bytes.len() <= CHUNK_BYTES`; the reader
        // moved `tail` past its last use (checked above), and does not read it before `head`
        // moves past it below. `bytes` is our memory, not the mapping.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.seg.slot(head), bytes.len()) };
        header.lens[head as usize % SLOTS].store(bytes.len() as u32, Ordering::SeqCst);
        header.head.store(head.wrapping_add(1), Ordering::SeqCst);
        if header.reader_sleeping.load(Ordering::SeqCst) != 0 {
            futex_wake(&header.head);
        }
        Ok(())
    }

    fn recv(&mut self, _len: usize, _f: &mut dyn FnMut(&[u8])) -> Result<(), Fault> {
        unreachable!("an outbox only sends")
    }

    fn abort(&mut self, rank: u32, reason: &str) {
        let reason = &reason.as_bytes()[..reason.len().min(REASON)];
        // SAFETY: `REASON_AT + len <= HEADER` is inside the mapping and outside every
        // reference into it; the reader reads these bytes only after it sees `abort` set
        // (SeqCst, after this write), and only this side writes them.
        unsafe {
            let at = self.seg.map.as_mut_ptr().add(REASON_AT);
            std::ptr::copy_nonoverlapping(reason.as_ptr(), at, reason.len());
        }
        let header = self.seg.header();
        header
            .abort_len
            .store(reason.len() as u32, Ordering::SeqCst);
        header.abort.store(rank + 1, Ordering::SeqCst);
        futex_wake(&header.head);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collective::Op;
    use crate::collective::ring::Ring;
    use crate::process::start_time;

    #[test]
    fn two_members_allreduce_through_shared_memory() {
        let dir = std::env::temp_dir().join(format!("prism-shm-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let len = CHUNK_BYTES / 4 * 5 + 3;
        let threads: Vec<_> = (0..2u32)
            .map(|rank| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    let peer = 1 - rank;
                    let me =
                        || Peer::of(std::process::id(), start_time(std::process::id()).unwrap());
                    let mut inbox =
                        Inbox::create(dir.join(format!("in{rank}")), peer, me()).unwrap();
                    let timeout = Duration::from_secs(10);
                    let path = dir.join(format!("in{peer}"));
                    let mut outbox = Outbox::open(&path, peer, me(), timeout).unwrap();
                    inbox.attached(timeout).unwrap();
                    let mut buf = vec![rank as f32 + 1.0; len];
                    let rank_at = [0, 1];
                    let mut ring = Ring {
                        pos: rank as usize,
                        rank_at: &rank_at,
                        out: &mut outbox,
                        inc: &mut inbox,
                    };
                    for _ in 0..3 {
                        ring.allreduce(&mut buf, Op::Sum).unwrap();
                    }
                    buf
                })
            })
            .collect();
        for t in threads {
            let buf = t.join().unwrap();
            // 1 + 2 = 3, then 6, then 12.
            assert!(buf.iter().all(|&v| v == 12.0));
        }
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "links unlinked"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_peer_that_died_before_its_link_fails_the_wait_at_once() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let (pid, started) = (child.id(), start_time(child.id()).unwrap());
        child.wait().unwrap();
        let dir = std::env::temp_dir().join(format!("prism-shm-dead-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let start = Instant::now();
        let long = Duration::from_secs(30);
        let opened = Outbox::open(&dir.join("never"), 3, Peer::of(pid, started), long);
        assert!(
            matches!(opened, Err(Fault::Died { rank: 3, .. })),
            "{:?}",
            opened.err()
        );
        let mut inbox = Inbox::create(dir.join("in"), 4, Peer::of(pid, started)).unwrap();
        let attached = inbox.attached(long);
        assert!(
            matches!(attached, Err(Fault::Died { rank: 4, .. })),
            "{attached:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        drop(inbox);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "the inbox is unlinked"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
