//! A node's resources shared out among the drivers of the jobs it hosts, without IO: a driver
//! asks for a shape of resources before it starts a lease of that shape on the node's workers,
//! holds what it was granted while it uses it, and gives it back when it no longer does (or
//! when the node asks, because another driver waits). Asks are granted in order as resources
//! come free; an ask that waits makes the node ask every other holder for what it does not
//! use (at most once a [`RECLAIM_EVERY`]). So two drivers never count the same CPU: the node,
//! not each driver, decides who runs on it (bottom-up scheduling's leases, as in the Ray
//! papers, with the driver still choosing among its job's workers on the node).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use prism_graph::{Amount, Resources};

use crate::proto::host::{ConnId, ReqId};

/// How often a node asks a holder for unused grants while asks wait (at most).
pub(crate) const RECLAIM_EVERY: Duration = Duration::from_millis(200);

/// How many asks of one connection may wait at once (a driver asks for at most what the
/// node's resources fit; more is refused, so that no connection grows the node's books
/// without bound).
const MAX_WAITING: usize = 1024;

/// What an ask gets at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Granted now.
    Granted,
    /// Waits until the resources come free (answered by a later [`Grants::take_granted`]).
    Waiting,
    /// The node could never grant it, and why.
    Never(String),
}

/// The smaller of `a` and `b`, resource by resource (what `a` names only).
pub(crate) fn least(a: &Resources, b: &Resources) -> Resources {
    let mut over = a.clone();
    over.subtract(b);
    let mut least = a.clone();
    least.subtract(&over);
    least
}

/// One ask that waits.
#[derive(Debug)]
struct Ask {
    conn: ConnId,
    req: ReqId,
    shape: Resources,
}

/// The node's grants (see the module's docs).
#[derive(Debug)]
pub(crate) struct Grants {
    total: Resources,
    free: Resources,
    held: HashMap<ConnId, Resources>,
    waiting: VecDeque<Ask>,
    /// Asks granted since the shell last took them: (connection, request).
    granted: Vec<(ConnId, ReqId)>,
    /// When each holder was last asked to give back what it does not use.
    reclaimed: HashMap<ConnId, Instant>,
    /// What is granted beyond the node's resources (a blocked task that resumed while its
    /// CPU was lent out, see [`Grants::take_back`]): repaid first from what comes free.
    over: Resources,
}

impl Grants {
    /// A node of `total` resources that granted nothing yet.
    pub(crate) fn new(total: Resources) -> Self {
        Grants {
            free: total.clone(),
            total,
            held: HashMap::new(),
            waiting: VecDeque::new(),
            granted: Vec::new(),
            reclaimed: HashMap::new(),
            over: Resources::default(),
        }
    }

    /// The node's resources.
    pub(crate) fn total(&self) -> &Resources {
        &self.total
    }

    /// What is granted to no one.
    #[cfg(test)]
    pub(crate) fn free(&self) -> &Resources {
        &self.free
    }

    /// What an ask could be granted now: what is free, or nothing while asks wait.
    pub(crate) fn room(&self) -> Resources {
        match self.waiting.is_empty() {
            true => self.free.clone(),
            false => Resources::default(),
        }
    }

    /// What connection `conn` holds.
    #[cfg(test)]
    pub(crate) fn held_by(&self, conn: ConnId) -> Resources {
        self.held.get(&conn).cloned().unwrap_or_default()
    }

    /// Connection `conn` asks for `shape` (request `req`). Asks are granted in order: one
    /// that comes while others wait waits behind them.
    pub(crate) fn ask(&mut self, conn: ConnId, req: ReqId, shape: Resources) -> Answer {
        if !shape.fits_in(&self.total) {
            return Answer::Never(format!(
                "it asks for {shape}, more than the node's {}",
                self.total
            ));
        }
        if self.try_grant(conn, &shape) {
            return Answer::Granted;
        }
        let waiting = self.waiting.iter().filter(|a| a.conn == conn).count();
        if waiting >= MAX_WAITING {
            return Answer::Never(format!("{waiting} of its asks wait already"));
        }
        self.waiting.push_back(Ask { conn, req, shape });
        Answer::Waiting
    }

    /// Grants `shape` to `conn` if it is free now and no ask waits (one that waits keeps
    /// its place); false, and nothing changes, otherwise.
    pub(crate) fn try_grant(&mut self, conn: ConnId, shape: &Resources) -> bool {
        let now = self.waiting.is_empty() && shape.fits_in(&self.free);
        if now {
            self.grant(conn, shape);
        }
        now
    }

    /// Connection `conn` gives back `resources` (at most what it holds); waiting asks that
    /// fit now are granted.
    pub(crate) fn give_back(&mut self, conn: ConnId, resources: &Resources) {
        let Some(held) = self.held.get_mut(&conn) else {
            return;
        };
        let back = least(resources, held);
        held.subtract(&back);
        if held.iter().next().is_none() {
            self.held.remove(&conn);
        }
        self.come_free(back);
        self.grant_waiting();
    }

    /// Connection `conn` takes `shape` again (a task it gave the CPU of while blocked
    /// resumes): now, ahead of the asks that wait, and beyond the node's resources if they
    /// are in use (Ray's raylet does the same); what is granted beyond them is repaid from
    /// the next resources that come free.
    pub(crate) fn take_back(&mut self, conn: ConnId, shape: &Resources) {
        let now = least(shape, &self.free);
        self.free.subtract(&now);
        let mut beyond = shape.clone();
        beyond.subtract(&now);
        self.over.add(&beyond);
        self.held.entry(conn).or_default().add(shape);
    }

    /// `back` is no longer held: it repays what was granted beyond the node first.
    fn come_free(&mut self, mut back: Resources) {
        let repay = least(&self.over, &back);
        self.over.subtract(&repay);
        back.subtract(&repay);
        self.free.add(&back);
    }

    /// Connection `conn` is gone (its job ended here): what it held is free, its asks go.
    pub(crate) fn forget(&mut self, conn: ConnId) {
        if let Some(held) = self.held.remove(&conn) {
            self.come_free(held);
        }
        self.waiting.retain(|a| a.conn != conn);
        self.reclaimed.remove(&conn);
        self.grant_waiting();
    }

    /// The asks granted since the last call, as (connection, request), in order.
    pub(crate) fn take_granted(&mut self) -> Vec<(ConnId, ReqId)> {
        std::mem::take(&mut self.granted)
    }

    /// The holders to ask now for what they do not use: while asks wait, every connection
    /// that holds grants and was not asked within [`RECLAIM_EVERY`] (a waiting connection
    /// too: it may hold grants it no longer uses). Each is told its fair share (see
    /// [`Grants::fair_share`]): what it holds beyond that goes back as its tasks end.
    pub(crate) fn reclaim(&mut self, now: Instant) -> (Vec<ConnId>, Resources) {
        if self.waiting.is_empty() {
            return (Vec::new(), Resources::default());
        }
        // A job's pool holds only what its leases use (see `proto::pool`).
        let mut due: Vec<ConnId> = (self.held.keys())
            .filter(|c| !crate::proto::pool::is_pool_client(**c))
            .filter(|c| {
                self.reclaimed
                    .get(c)
                    .is_none_or(|at| now.saturating_duration_since(*at) >= RECLAIM_EVERY)
            })
            .copied()
            .collect();
        due.sort_unstable();
        for &conn in &due {
            self.reclaimed.insert(conn, now);
        }
        (due, self.fair_share())
    }

    /// The node's resources split evenly among the jobs that hold or wait for them (a job's
    /// pool is the job's, see `proto::pool`).
    pub(crate) fn fair_share(&self) -> Resources {
        let mut sharing: Vec<ConnId> = self.held.keys().copied().collect();
        sharing.extend(self.waiting.iter().map(|a| a.conn));
        for conn in &mut sharing {
            *conn = crate::proto::pool::job_conn(*conn);
        }
        sharing.sort_unstable();
        sharing.dedup();
        let n = sharing.len().max(1) as u64;
        Resources {
            cpu: Amount(self.total.cpu.0 / n),
            gpu: Amount(self.total.gpu.0 / n),
            custom: (self.total.custom.iter())
                .map(|(name, a)| (name.clone(), Amount(a.0 / n)))
                .filter(|(_, a)| a.0 > 0)
                .collect(),
        }
    }

    /// When [`Grants::reclaim`] could next name a holder it asked before, while asks wait
    /// (a holder never asked is asked at the next ask that waits, or the next timeout).
    pub(crate) fn next_reclaim(&self) -> Option<Instant> {
        if self.waiting.is_empty() {
            return None;
        }
        (self.held.keys())
            .filter_map(|c| self.reclaimed.get(c).map(|at| *at + RECLAIM_EVERY))
            .min()
    }

    fn grant(&mut self, conn: ConnId, shape: &Resources) {
        self.free.subtract(shape);
        self.held.entry(conn).or_default().add(shape);
    }

    fn grant_waiting(&mut self) {
        while let Some(ask) = self.waiting.front() {
            if !ask.shape.fits_in(&self.free) {
                break;
            }
            let ask = self.waiting.pop_front().expect("looked at");
            self.grant(ask.conn, &ask.shape);
            self.granted.push((ask.conn, ask.req));
        }
        if self.waiting.is_empty() {
            self.reclaimed.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(n: f64) -> Resources {
        Resources::cpus(n).unwrap()
    }

    #[test]
    fn two_drivers_never_hold_the_same_cpu() {
        let mut node = Grants::new(cpus(2.0));
        assert_eq!(node.ask(1, 10, cpus(1.0)), Answer::Granted);
        assert_eq!(node.ask(1, 11, cpus(1.0)), Answer::Granted);
        // The second driver waits for a CPU, and the node asks the first for what it does not use.
        assert_eq!(node.ask(2, 20, cpus(1.0)), Answer::Waiting);
        let t0 = Instant::now();
        assert_eq!(node.reclaim(t0), (vec![1], cpus(1.0)), "each keeps half");
        assert_eq!(node.reclaim(t0 + RECLAIM_EVERY / 2).0, Vec::<ConnId>::new());
        assert_eq!(node.next_reclaim(), Some(t0 + RECLAIM_EVERY));
        assert_eq!(node.reclaim(t0 + RECLAIM_EVERY).0, vec![1]);
        // Giving back more than it holds frees only what it held.
        node.give_back(1, &cpus(1.0));
        assert_eq!(node.take_granted(), vec![(2, 20)]);
        assert_eq!(node.held_by(2), cpus(1.0));
        assert_eq!(node.free(), &Resources::default());
        node.give_back(2, &cpus(5.0));
        assert_eq!(node.held_by(2), Resources::default());
        assert_eq!(node.free(), &cpus(1.0));
        assert_eq!(node.reclaim(t0 + RECLAIM_EVERY * 2).0, Vec::<ConnId>::new());
    }

    #[test]
    fn a_holder_never_asked_does_not_hide_when_the_others_are_due() {
        let mut node = Grants::new(cpus(3.0));
        assert_eq!(node.ask(1, 1, cpus(2.0)), Answer::Granted);
        assert_eq!(node.ask(2, 2, cpus(2.0)), Answer::Waiting);
        let t0 = Instant::now();
        assert_eq!(node.reclaim(t0).0, vec![1]);
        // The second driver gets its CPUs while a third waits: a holder not asked yet.
        assert_eq!(node.ask(3, 3, cpus(1.0)), Answer::Waiting);
        node.give_back(1, &cpus(1.0));
        assert_eq!(node.take_granted(), vec![(2, 2)]);
        assert_eq!(node.next_reclaim(), Some(t0 + RECLAIM_EVERY));
        assert_eq!(node.reclaim(t0 + RECLAIM_EVERY).0, vec![1, 2]);
    }

    #[test]
    fn a_cpu_taken_back_beyond_the_node_is_repaid_by_the_next_that_comes_free() {
        let mut node = Grants::new(cpus(2.0));
        assert_eq!(node.ask(1, 1, cpus(1.0)), Answer::Granted);
        // The driver's task blocks: its CPU goes back, and a job's pool takes both.
        node.give_back(1, &cpus(1.0));
        assert!(node.try_grant(2, &cpus(2.0)));
        // It resumes: it holds its CPU again at once, ahead of an ask that waits, though
        // the node has none free (three CPUs granted of two).
        assert_eq!(node.ask(3, 3, cpus(1.0)), Answer::Waiting);
        node.take_back(1, &cpus(1.0));
        assert_eq!(node.held_by(1), cpus(1.0));
        assert_eq!(node.free(), &Resources::default());
        // The first CPU to come free repays the excess; the waiting ask gets the next.
        node.give_back(2, &cpus(1.0));
        assert_eq!(node.take_granted(), Vec::new());
        assert_eq!(node.free(), &Resources::default());
        node.give_back(2, &cpus(1.0));
        assert_eq!(node.take_granted(), vec![(3, 3)]);
        // A holder that goes repays the excess first too: of its two CPUs one comes free.
        node.take_back(1, &cpus(1.0));
        node.forget(1);
        assert_eq!(node.free(), &cpus(1.0));
        node.forget(3);
        assert_eq!(node.free(), &cpus(2.0));
    }

    #[test]
    fn asks_are_granted_in_order_and_a_gone_driver_frees_its_grants() {
        let mut node = Grants::new(cpus(4.0));
        assert_eq!(node.ask(1, 1, cpus(3.0)), Answer::Granted);
        assert_eq!(node.ask(2, 2, cpus(2.0)), Answer::Waiting);
        // A smaller ask that would fit waits behind the first, so a large one is not starved.
        assert_eq!(node.ask(3, 3, cpus(1.0)), Answer::Waiting);
        assert!(matches!(node.ask(3, 4, cpus(5.0)), Answer::Never(e) if e.contains("more than")));
        node.forget(1);
        assert_eq!(node.take_granted(), vec![(2, 2), (3, 3)]);
        assert_eq!(node.free(), &cpus(1.0));
        // A driver that goes while it waits takes its asks with it.
        assert_eq!(node.ask(2, 5, cpus(2.0)), Answer::Waiting);
        node.forget(2);
        assert_eq!(node.take_granted(), Vec::new());
        assert_eq!(node.free(), &cpus(3.0));
        // No connection fills the node's books with asks.
        for req in 0..MAX_WAITING as u64 {
            assert_eq!(node.ask(4, 100 + req, cpus(4.0)), Answer::Waiting);
        }
        assert!(
            matches!(node.ask(4, 9, cpus(4.0)), Answer::Never(e) if e.contains("wait already"))
        );
    }
}
