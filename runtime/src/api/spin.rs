//! The executor behind the blocking API (`get_blocking` and friends): it polls the future, and
//! while the future is pending it first spins for a few microseconds, re-polling as soon as it
//! is woken, before it parks the thread.
//!
//! A task's answer often arrives within microseconds; parking costs a futex wake and a context
//! switch on each side, which on a virtual machine is most of a short round trip. The spin is
//! bounded ([`SPIN`]), so a long wait costs at most that much extra CPU. In the driver the spin
//! also reads the workers' connections, so the answer needs no other thread to wake.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long a blocked call spins before it parks.
const SPIN: Duration = Duration::from_micros(50);

/// How long a joined driver's blocked call spins: a round trip to a worker on another host
/// takes 40-60 us on its direct link, and parking just before the answer comes costs two
/// thread wakes.
const SPIN_JOINED: Duration = Duration::from_micros(150);

struct Signal {
    woken: AtomicBool,
    parked: AtomicBool,
    thread: Thread,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        // Only a parked thread needs the (costly) unpark.
        if self.parked.load(Ordering::SeqCst) {
            self.thread.unpark();
        }
    }
}

/// Runs `future` to completion on this thread.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let signal = Arc::new(Signal {
        woken: AtomicBool::new(false),
        parked: AtomicBool::new(false),
        thread: std::thread::current(),
    });
    let waker = Waker::from(signal.clone());
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    // In the driver, the spin reads the workers' connections itself: the answer is handled
    // on this thread instead of waking the node's sleeping reader thread first.
    let node = match crate::context::try_current() {
        Some(crate::context::Context::Driver(core)) => Some(core),
        _ => None,
    };
    if node.is_some() {
        crate::node::link::caller_waits();
    }
    let joined = node.as_ref().is_some_and(|node| node.is_joined());
    let spin = if joined { SPIN_JOINED } else { SPIN };
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        let start = Instant::now();
        let mut spinning = node.as_ref().and_then(|node| node.spinning());
        while !signal.woken.swap(false, Ordering::SeqCst) {
            if start.elapsed() < spin {
                if let Some(node) = &node {
                    node.poll_links();
                }
                if joined {
                    // A worker on this host may share the CPU (the scheduler often puts a
                    // driver and a worker that answer each other on one of two CPUs, and
                    // keeps them there while both spin): let it run. (Parking as soon as a
                    // yield ran another thread, so that the wake-up could find an idle CPU,
                    // measured worse: 64-95 us round trips against 40-75.)
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            if let Some(spinning) = spinning.take() {
                spinning.park();
            }
            signal.parked.store(true, Ordering::SeqCst);
            // A wake between the check above and here sets `woken` before reading `parked`,
            // or sees `parked` and unparks: either way the loop does not sleep through it.
            if !signal.woken.load(Ordering::SeqCst) {
                std::thread::park();
            }
            signal.parked.store(false, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ready after `n` polls, waking itself from another thread after `delay` each time.
    struct Later {
        left: u32,
        delay: Duration,
    }

    impl Future for Later {
        type Output = u32;
        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            if self.left == 0 {
                return Poll::Ready(7);
            }
            self.left -= 1;
            let (waker, delay) = (cx.waker().clone(), self.delay);
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                waker.wake();
            });
            Poll::Pending
        }
    }

    #[test]
    fn wakes_while_spinning_and_while_parked() {
        let quick = Later {
            left: 100,
            delay: Duration::ZERO,
        };
        assert_eq!(block_on(quick), 7);
        let start = Instant::now();
        let slow = Later {
            left: 3,
            delay: Duration::from_millis(20),
        };
        assert_eq!(block_on(slow), 7, "parked waits are woken");
        assert!(start.elapsed() >= Duration::from_millis(60));
    }
}
