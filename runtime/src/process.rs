//! Starting the node's own children and signalling them: a worker gets its link to the node as
//! a socket it inherits (one end of a socket pair made for it alone, so there is no name anyone
//! else could connect to), and every signal goes through a pidfd, so a pid the kernel has
//! handed to another process since the child was reaped is never signalled.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// The environment variable that tells a worker which inherited descriptor is its link.
pub(crate) const ENV_LINK_FD: &str = "PRISM_LINK_FD";

/// A process of ours (a child, or a daemon we recorded), signalled through a pidfd: once
/// opened it names that process alone, whatever later holds its pid.
#[derive(Debug)]
pub(crate) struct ProcessHandle {
    pid: u32,
    fd: OwnedFd,
}

/// When process `pid` started, in clock ticks since boot (field 22 of `/proc/PID/stat`): with
/// the pid, it names one process for the life of the machine.
pub(crate) fn start_time(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name (which may hold spaces or parentheses).
    let rest = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    rest.split_whitespace()
        .nth(19)
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| io::Error::other(format!("/proc/{pid}/stat has no start time")))
}

impl ProcessHandle {
    fn open(pid: u32) -> io::Result<ProcessHandle> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; it
        // touches no memory of ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just returned to us and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        Ok(ProcessHandle { pid, fd })
    }

    /// A handle on `child`. Call it before anything waits for the child (until then the pid
    /// cannot name another process).
    pub(crate) fn of(child: &Child) -> io::Result<ProcessHandle> {
        Self::open(child.id())
    }

    /// A handle on the process that runs as `pid` if it is the one that started at `started`
    /// (see [`start_time`]) and belongs to this user; none if no process has that pid now, an
    /// error naming why if another one does.
    pub(crate) fn verified(pid: u32, started: u64) -> io::Result<Option<ProcessHandle>> {
        let handle = match Self::open(pid) {
            Ok(handle) => handle,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
            Err(e) => return Err(e),
        };
        // Checked after the pidfd is open: if the process there now started at `started`, it
        // held the pid all along, so the pidfd names it too.
        let now = match start_time(pid) {
            Ok(now) => now,
            Err(_) => return Ok(None),
        };
        if now != started {
            return Err(io::Error::other(format!(
                "pid {pid} is another process now (started at tick {now}, the record says {started})"
            )));
        }
        let owner =
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(format!("/proc/{pid}"))?);
        if owner != crate::files::euid() {
            return Err(io::Error::other(format!(
                "pid {pid} belongs to uid {owner}, not to this user"
            )));
        }
        Ok(Some(handle))
    }

    /// Whether the process ended within `timeout` (a pidfd turns readable when it does).
    pub(crate) fn wait_exit(&self, timeout: std::time::Duration) -> bool {
        let mut poll = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: poll reads and writes the one pollfd it is given, which lives on this stack.
        let ready = unsafe { libc::poll(&mut poll, 1, ms) };
        ready > 0
    }

    /// Asks the process to stop (SIGTERM) and kills it (SIGKILL) if it has not ended within
    /// `grace`.
    pub(crate) fn stop(&self, grace: std::time::Duration) -> io::Result<()> {
        self.signal(libc::SIGTERM)?;
        if !self.wait_exit(grace) {
            self.signal(libc::SIGKILL)?;
            self.wait_exit(std::time::Duration::from_secs(5));
        }
        Ok(())
    }

    /// The child's process id (for logs and reports).
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` to the child; after it ended this does nothing (ESRCH), whatever process
    /// holds its pid now.
    pub(crate) fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with a null siginfo and no flags reads no memory of ours;
        // the descriptor is open for as long as `self` lives.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }

    /// Kills the child (SIGKILL).
    pub(crate) fn kill(&self) {
        if let Err(e) = self.signal(libc::SIGKILL) {
            tracing::warn!(pid = self.pid, "cannot kill a worker process: {e}");
        }
    }
}

/// A started child with its private link.
#[derive(Debug)]
pub(crate) struct Linked {
    /// The child, for waiting.
    pub(crate) child: Child,
    /// Signals the child.
    pub(crate) handle: ProcessHandle,
    /// The node's end of the child's link.
    pub(crate) link: UnixStream,
}

/// Starts `cmd` with a link to us that only it holds: one end of a fresh socket pair is
/// inherited by the child (named by [`ENV_LINK_FD`]), the other is returned. The child dies
/// with the thread that calls this (PDEATHSIG), and at once if `parent` is given and is no
/// longer its parent when it starts (the parent died while it forked).
pub(crate) fn spawn_linked(cmd: &mut Command, parent: Option<u32>) -> io::Result<Linked> {
    // Both ends are close-on-exec: a child another thread forks meanwhile inherits neither.
    let (ours, theirs) = UnixStream::pair()?;
    let child_fd = theirs.as_raw_fd();
    cmd.env(ENV_LINK_FD, child_fd.to_string());
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe functions (fcntl, prctl, getppid, getpid, kill) on plain integers.
    unsafe {
        cmd.pre_exec(move || {
            // The child's end survives exec; nothing else of the parent's does.
            if libc::fcntl(child_fd, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if let Some(parent) = parent
                && libc::getppid() != parent as libc::pid_t
            {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        });
    }
    let child = spawn_past_busy_text(cmd)?;
    drop(theirs);
    let handle = match ProcessHandle::of(&child) {
        Ok(handle) => handle,
        Err(e) => {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    Ok(Linked {
        child,
        handle,
        link: ours,
    })
}

/// How many times a start that found its program busy is tried again, the wait doubling from
/// 1 ms (127 ms in all).
const BUSY_TEXT_RETRIES: u32 = 7;

/// Starts `cmd`, trying again while its program is busy (`ETXTBSY`): a binary the node just
/// fetched and closed is still open for writing in a child that another thread forked meanwhile
/// and that has not reached its own exec yet (close-on-exec closes it only then), which fails
/// any exec of the binary in that moment. Seen on a node starting the workers of three jobs at
/// once.
fn spawn_past_busy_text(cmd: &mut Command) -> io::Result<std::process::Child> {
    let mut wait = std::time::Duration::from_millis(1);
    for _ in 0..BUSY_TEXT_RETRIES {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                tracing::debug!("the program is busy (being written): starting it again");
                std::thread::sleep(wait);
                wait *= 2;
            }
            started => return started,
        }
    }
    cmd.spawn()
}

/// The link a worker inherited from its node ([`ENV_LINK_FD`]); taken once, and made
/// close-on-exec so that processes the worker starts do not inherit it.
pub(crate) fn inherited_link() -> io::Result<UnixStream> {
    static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let fd: RawFd = std::env::var(ENV_LINK_FD)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|fd| *fd > 2)
        .ok_or_else(|| io::Error::other(format!("{ENV_LINK_FD} names no descriptor")))?;
    if TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Err(io::Error::other("the node's link was taken already"));
    }
    // SAFETY: `libc::stat` is a plain C struct of integers, for which all zeroes is valid.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes only into the `stat` it is given, which lives on this stack.
    if unsafe { libc::fstat(fd, &mut stat) } < 0 {
        return Err(io::Error::other(format!(
            "descriptor {fd} from {ENV_LINK_FD}: {}",
            io::Error::last_os_error()
        )));
    }
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::other(format!(
            "descriptor {fd} from {ENV_LINK_FD} is not a socket"
        )));
    }
    // SAFETY: fcntl on a descriptor that is open (fstat succeeded).
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open, is a socket, was handed to this process by its node for
    // this link alone, and `TAKEN` makes sure only one owner is ever made of it.
    Ok(unsafe { UnixStream::from_raw_fd(fd) })
}

/// Hands memory the allocator holds free back to the operating system (glibc keeps freed
/// memory of the main heap unless asked), after a burst of work is gone.
pub(crate) fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages of the allocator's own heaps; it takes no
    // pointers and is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Makes the allocator hand large freed blocks back to the operating system: blocks of 1 MiB
/// and more are mapped on their own (unmapped when freed), and free memory at the top of a heap
/// beyond 1 MiB is trimmed. glibc's default raises both thresholds as a program frees large
/// blocks, so after a burst of a million tasks the node kept hundreds of MiB it no longer
/// used (measured in BENCHMARKS.md, "1 M tasks"). For the node's process, not workers'.
pub(crate) fn return_large_frees() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; both values are valid sizes.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
    }
}

/// Environment variables that turn a started process into a worker.
pub(crate) const ENV_ROLE: &str = "PRISM_ROLE";
/// [`ENV_ROLE`] of the process the head starts to host a binary's detached actors.
pub(crate) const DETACHED_ROLE: &str = "detached";
pub(crate) const ENV_WORKER: &str = "PRISM_WORKER_ID";
pub(crate) const ENV_STORE_DIR: &str = "PRISM_STORE_DIR";
pub(crate) const ENV_INLINE_THRESHOLD: &str = "PRISM_INLINE_THRESHOLD";
/// The object store's capacity in bytes: a worker refuses a larger value at once.
pub(crate) const ENV_STORE_CAPACITY: &str = "PRISM_STORE_CAPACITY";
/// The name of the node a worker runs on (a cluster's node; unset on the embedded node).
pub(crate) const ENV_NODE_NAME: &str = "PRISM_NODE_NAME";
/// The address a cluster's node listens on (where its workers' own endpoints bind).
pub(crate) const ENV_NODE_HOST: &str = "PRISM_NODE_HOST";
/// Set by a node daemon for the workers it starts: the first frame on the link is their
/// direct endpoint's identity ([`prism_transport::ToWorker::Endpoint`]).
pub(crate) const ENV_DIRECT: &str = "PRISM_DIRECT";
/// The job's content fingerprint, for workers a cluster's node starts (hex).
pub(crate) const ENV_JOB_FINGERPRINT: &str = "PRISM_JOB_FINGERPRINT";

/// What a worker needs to know of its node's object store.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreLimits {
    /// Values at least this large go to shared memory.
    pub(crate) inline_threshold: u64,
    /// The store's capacity: a larger value fails at once.
    pub(crate) capacity: u64,
}

/// The command that starts `exe` as worker `worker` of the store at `session_dir`.
pub(crate) fn worker_command(
    exe: &std::path::Path,
    worker: u64,
    session_dir: &std::path::Path,
    limits: StoreLimits,
) -> Command {
    let mut cmd = Command::new(exe);
    cmd.env(ENV_ROLE, "worker")
        .env(ENV_WORKER, worker.to_string())
        .env(ENV_STORE_DIR, session_dir)
        .env(ENV_INLINE_THRESHOLD, limits.inline_threshold.to_string())
        .env(ENV_STORE_CAPACITY, limits.capacity.to_string())
        .stdin(std::process::Stdio::null());
    cmd
}

/// A job's fingerprint from its binary's content hash: what a driver joined to a cluster and
/// the workers its nodes start from the fetched copy both use.
pub(crate) fn content_fingerprint(hash: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(first)
}

/// Set by a driver that joined a cluster: its job's content fingerprint.
static JOB_FINGERPRINT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// From now on this process's fingerprint is the content fingerprint `fp`.
pub(crate) fn use_content_fingerprint(fp: u64) {
    JOB_FINGERPRINT.store(fp, std::sync::atomic::Ordering::SeqCst);
}

/// The fingerprint of this program's binary. Workers started from a rebuilt binary are
/// refused at the handshake. Locally: the binary's path, size and modification time. In a
/// cluster: its content hash, set by the driver when it joins and given to the workers a node
/// starts from the fetched copy ([`ENV_JOB_FINGERPRINT`]).
pub(crate) fn fingerprint() -> u64 {
    use std::hash::{Hash, Hasher};
    static FINGERPRINT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let joined = JOB_FINGERPRINT.load(std::sync::atomic::Ordering::SeqCst);
    if joined != 0 {
        return joined;
    }
    *FINGERPRINT.get_or_init(|| {
        if let Some(fp) = std::env::var(ENV_JOB_FINGERPRINT)
            .ok()
            .and_then(|v| u64::from_str_radix(&v, 16).ok())
        {
            return fp;
        }
        let mut hasher = std::hash::DefaultHasher::new();
        if let Ok(exe) = std::env::current_exe() {
            exe.hash(&mut hasher);
            if let Ok(meta) = std::fs::metadata(&exe) {
                meta.len().hash(&mut hasher);
                if let Ok(modified) = meta.modified() {
                    modified.hash(&mut hasher);
                }
            }
        }
        hasher.finish()
    })
}

/// A non-blocking receive.
pub(crate) fn recv_now(fd: std::os::fd::RawFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes; `fd` is an open socket owned
    // by the caller for the duration of the call.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_still_open_for_writing_starts_once_the_writer_lets_go() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("prism-busy-text-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("program");
        let mut writer = std::fs::File::create(&path).unwrap();
        writer.write_all(b"#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        // Busy while the writer holds it.
        let busy = Command::new(&path)
            .spawn()
            .map(|mut c| c.wait())
            .unwrap_err();
        assert_eq!(busy.raw_os_error(), Some(libc::ETXTBSY), "{busy}");
        let writing = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(5));
            drop(writer);
        });
        let status = spawn_past_busy_text(&mut Command::new(&path))
            .and_then(|mut child| child.wait())
            .unwrap();
        assert!(status.success());
        writing.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_handle_never_signals_a_process_that_is_not_its_own() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let handle = ProcessHandle::of(&child).unwrap();
        let started = start_time(child.id()).unwrap();
        // The recorded start time must match; a wrong one is refused, naming why.
        let refused = ProcessHandle::verified(child.id(), started + 1).unwrap_err();
        assert!(refused.to_string().contains("another process"), "{refused}");
        assert!(
            ProcessHandle::verified(child.id(), started)
                .unwrap()
                .is_some()
        );
        handle.kill();
        child.wait().unwrap();
        // Reaped: its pid may name anyone now, and the handle signals nobody.
        handle.signal(libc::SIGKILL).unwrap();
        assert!(handle.wait_exit(std::time::Duration::ZERO));
    }
}
