//! A node's lease on a job it hosts, so that a node cut off from the job's driver stops the
//! job's processes before the driver starts them again elsewhere (no actor ever runs two
//! incarnations at once, even across a partition).
//!
//! The node asks the driver to renew the lease every [`RENEW_EVERY`]; when the driver's answer
//! to a renewal asked at time `t` (the node's clock) arrives, the lease runs until
//! `t + length`. Measuring from the ask, not from the answer, makes the node's end of the
//! lease no later than the driver's: the driver received that ask after `t`, so it counts the
//! lease as running until at least `t + length` ([`driver_end`] of the last ask it received).
//! A node whose lease ran out stops the job's workers and closes the job's connection; the
//! driver, losing a node, starts no actor of it again before [`driver_end`]. Only the rates of
//! the two clocks matter, never their offsets.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How often a node asks for a renewal.
pub(crate) const RENEW_EVERY: Duration = Duration::from_secs(1);

/// How long a lease runs after the ask the driver answered last.
pub(crate) const LENGTH: Duration = Duration::from_secs(5);

/// A node's lease on one job.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    length: Duration,
    every: Duration,
    /// The lease runs out then unless renewed.
    until: Instant,
    /// Renewals asked and not answered: their numbers and when they were asked.
    asked: VecDeque<(u64, Instant)>,
    next_seq: u64,
    next_ask: Instant,
}

impl Lease {
    /// A lease granted at `now` (the job's connection was made), running `length` and renewed
    /// every `every`.
    pub(crate) fn new(now: Instant, length: Duration, every: Duration) -> Self {
        Lease {
            length,
            every,
            until: now + length,
            asked: VecDeque::new(),
            next_seq: 0,
            next_ask: now,
        }
    }

    /// The renewal to ask for at `now`, if one is due (its number).
    pub(crate) fn due(&mut self, now: Instant) -> Option<u64> {
        if now < self.next_ask {
            return None;
        }
        // Asks older than a lease can no longer extend it.
        while self
            .asked
            .front()
            .is_some_and(|&(_, at)| at + self.length <= now)
        {
            self.asked.pop_front();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.asked.push_back((seq, now));
        self.next_ask = now + self.every;
        Some(seq)
    }

    /// The driver answered renewal `seq`.
    pub(crate) fn granted(&mut self, seq: u64) {
        while let Some(&(asked, at)) = self.asked.front() {
            if asked > seq {
                break;
            }
            self.asked.pop_front();
            if asked == seq {
                self.until = self.until.max(at + self.length);
            }
        }
    }

    /// Whether the lease ran out at `now`.
    pub(crate) fn expired(&self, now: Instant) -> bool {
        now >= self.until
    }

    /// When the lease runs out unless renewed.
    #[cfg(test)]
    pub(crate) fn until(&self) -> Instant {
        self.until
    }

    /// When something is next to do: a renewal to ask, or the end of the lease.
    pub(crate) fn next_wake(&self) -> Instant {
        self.next_ask.min(self.until)
    }

    /// How long the lease runs.
    pub(crate) fn length(&self) -> Duration {
        self.length
    }
}

/// The shortest lease that renewals can keep: two renewal periods.
pub(crate) const SHORTEST: Duration = Duration::from_secs(2);

/// `length`, or [`SHORTEST`] if it is shorter (a lease shorter than the renewal period would
/// run out between renewals).
pub(crate) fn at_least_shortest(length: Duration) -> Duration {
    length.max(SHORTEST)
}

/// Until when a driver must count a node's processes as possibly running, given when it last
/// received one of the node's renewal asks (or made the node's connection) and the lease's
/// length.
pub(crate) fn driver_end(last_ask_received: Instant, length: Duration) -> Instant {
    last_ask_received + length
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_from_the_answered_ask_and_runs_out_without_answers() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut lease = Lease::new(t0, 5 * s, s);
        assert_eq!(lease.due(t0), Some(0));
        assert_eq!(lease.due(t0 + s / 2), None, "not yet due");
        assert_eq!(lease.due(t0 + s), Some(1));
        // The answer to the second ask arrives late: the lease runs from the ask.
        lease.granted(1);
        assert_eq!(lease.until(), t0 + 6 * s);
        // A late answer to an earlier ask changes nothing.
        lease.granted(0);
        assert_eq!(lease.until(), t0 + 6 * s);
        for k in 2..6 {
            assert!(lease.due(t0 + k * s).is_some());
        }
        assert!(!lease.expired(t0 + 6 * s - Duration::from_millis(1)));
        assert!(lease.expired(t0 + 6 * s), "no answer since: it ran out");
        // A late answer to a later ask extends it from that ask.
        lease.granted(2);
        assert_eq!(lease.until(), t0 + 7 * s);
    }

    #[test]
    fn the_driver_never_counts_a_lease_as_over_before_the_node_does() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut lease = Lease::new(t0, 5 * s, s);
        let seq = lease.due(t0 + s).unwrap();
        // The ask takes 300 ms to reach the driver, the answer 2 s to come back.
        let received = t0 + s + Duration::from_millis(300);
        lease.granted(seq);
        assert!(driver_end(received, lease.length()) >= lease.until());
    }
}
