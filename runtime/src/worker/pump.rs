//! The worker's pump: what a running task submits leaves the process within [`FLUSH_DELAY`],
//! and what its children send back (lease grants, ends) is read, while the task computes
//! without calling into the runtime.
//!
//! The task's thread writes its frames when it waits (`get`, `wait`) or ends; a task that
//! submits children and then works on would hold them back until then (Ray starts them at
//! once). So the first submission after a quiet spell rings a doorbell; the pump thread
//! waits [`FLUSH_DELAY`] (a loop of submissions goes out as one write), then takes the
//! worker's lock, reads what the node sent and writes what the books owe it. While the
//! worker's own tasks are under way (asked leases, pushed or queued tasks), it goes on
//! reading the link as frames arrive. Whenever the task's thread is inside the runtime it
//! holds the lock and does all this itself: the pump then waits for the lock and costs
//! nothing.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use crate::proto::worker::Stop;

use super::WorkerClient;

/// How long a submission may wait for the ones after it before the pump sends them all.
pub(super) const FLUSH_DELAY: Duration = Duration::from_micros(50);

/// Wakes the pump: a socket pair whose reading end turns readable when rung.
#[derive(Debug)]
pub(super) struct Doorbell {
    ring: UnixStream,
    hear: UnixStream,
}

impl Doorbell {
    pub(super) fn new() -> std::io::Result<Self> {
        let (ring, hear) = UnixStream::pair()?;
        ring.set_nonblocking(true)?;
        hear.set_nonblocking(true)?;
        Ok(Doorbell { ring, hear })
    }

    /// Wakes the pump (a byte already waiting wakes it as well: a full buffer is fine).
    pub(super) fn ring(&self) {
        let _ = (&self.ring).write(&[1]);
    }

    /// Takes every ring so far.
    fn clear(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.hear).read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// What woke the pump.
#[derive(Debug, PartialEq, Eq)]
enum Woken {
    /// The doorbell rang.
    Rung,
    /// The link has something to read.
    Readable,
    /// The node closed the link.
    Closed,
}

/// Waits until the doorbell rings or, when `link` is given, the link turns readable or
/// closes; or, with a direct endpoint (`direct`: its socket, and how long its timers let the
/// pump sleep), the endpoint has something or its timers are due.
fn wait_for(
    doorbell: &Doorbell,
    link: Option<RawFd>,
    direct: Option<(RawFd, Option<Duration>)>,
) -> Woken {
    let mut fds = [
        libc::pollfd {
            fd: doorbell.hear.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: link.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: direct.map_or(-1, |(fd, _)| fd),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let timeout = match direct {
        Some((_, Some(sleep))) => {
            i32::try_from(sleep.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
        }
        _ => -1,
    };
    loop {
        // SAFETY: poll reads and writes the three pollfds it is given, which live on this
        // stack; a negative fd is ignored by poll.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if ready < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // Not expected of two valid descriptors: a ring's delay keeps this from spinning.
            return Woken::Rung;
        }
        return if fds[0].revents != 0 {
            Woken::Rung
        } else if fds[1].revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            Woken::Closed
        } else {
            // The link or the endpoint has something, or the endpoint's timers are due.
            Woken::Readable
        };
    }
}

/// Starts the pump of `client`'s worker.
pub(super) fn start(client: Arc<WorkerClient>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("prism-pump".into())
        .spawn(move || run(&client))
        .map(drop)
}

fn run(client: &WorkerClient) {
    // The link, read by the pump only while the worker's own tasks are under way; the direct
    // endpoint, always (pushes and ends come on it while a task runs).
    let mut link = None;
    let mut direct = None;
    loop {
        match wait_for(&client.doorbell, link, direct) {
            Woken::Rung => {
                client.doorbell.clear();
                // The submissions that follow this one within the delay go out with it.
                std::thread::sleep(FLUSH_DELAY);
            }
            Woken::Readable => {}
            Woken::Closed => {
                tracing::debug!("worker exits: the node closed the connection");
                std::process::exit(0);
            }
        }
        let mut inner = client.inner.lock();
        inner.pump_rung = false;
        match inner.drain() {
            Ok(_) => {}
            Err(Stop::Shutdown) => {
                let _ = inner.flush();
                std::process::exit(0);
            }
            Err(Stop::Lost(reason)) => {
                tracing::debug!("worker exits: {reason}");
                std::process::exit(0);
            }
        }
        if let Err(e) = inner.flush() {
            tracing::debug!("worker exits: the link to the node broke: {e}");
            std::process::exit(0);
        }
        link = match &inner.reader {
            Some(reader) if inner.core.under_way() => Some(reader.get_ref().as_raw_fd()),
            _ => None,
        };
        direct = inner.direct_wait();
    }
}
