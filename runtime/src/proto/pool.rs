//! A node daemon's own workers for the leases a job's worker owners ask of it, without IO
//! (step (b) of `docs/ownership.md`: the node, not the driver, grants a worker a lease).
//!
//! A worker here that owns its tasks asks its node for a worker of a resource shape
//! ([`ToNode::Lease`]). When the driver let the node do so ([`ToHost::Pool`]), the daemon grants
//! the ask itself if the node's resources fit it now ([`Grants::try_grant`], under a grant
//! holder of the job's own, [`pool_client`]) and it has an idle worker of the job or may start
//! one: the owner hears [`ToWorker::Leased`] from the node, pushes its tasks to the worker
//! through the node, and gives the lease back to the node, which keeps the worker for the next
//! ask a while and stops it when it stays idle. What the node cannot grant at once waits here
//! in order, offered meanwhile to the job's other nodes thought to have room and passed to
//! them in turn after a wait ([`crate::proto::spill`]), keeping its place here until one
//! grants it; an ask of the driver's own worker at the process cap goes to the driver, which
//! nests it on the blocked owner.
//!
//! A leased worker blocked in `get` gives its CPU back to the node while it waits, as the
//! driver's scheduler does with its own workers, and takes it again when it resumes (beyond
//! the node's free CPU if need be: a debt repaid when the lease ends). So does a task of the
//! driver's that waits only for tasks its worker owns: the node keeps that block from the
//! driver, which has nothing to run in its place, and tells it only if the worker sends the
//! driver something before it resumes ([`Pool::hold_block`]). A leased worker's death
//! ends its lease (the owner hears [`ToWorker::LeaseEnded`]); an owner's death kills the
//! workers leased to it, which may still run its tasks.
//!
//! [`ToNode::Lease`]: prism_transport::ToNode::Lease
//! [`ToHost::Pool`]: prism_transport::ToHost::Pool
//! [`ToWorker::Leased`]: prism_transport::ToWorker::Leased
//! [`ToWorker::LeaseEnded`]: prism_transport::ToWorker::LeaseEnded

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use prism_graph::{Amount, Resources, TaskId};

use crate::proto::grants::Grants;
use crate::proto::host::ConnId;
use crate::proto::spill::Room;

/// How long a worker of the pool beyond those it keeps ([`Pool::keeping_idle`]) stays idle
/// before it is stopped (Ray's raylet stops idle workers beyond its soft limit, the node's
/// CPUs, after a second too).
pub(crate) const IDLE_FOR: Duration = Duration::from_secs(1);

/// The grant holder a job's pool takes the node's resources as: its driver's connection with
/// the top bit set (the shell numbers connections from 0; see [`is_pool_client`]).
pub(crate) fn pool_client(conn: ConnId) -> ConnId {
    conn | POOL_BIT
}

/// Whether grant holder `conn` is a job's pool (which holds only what its leases use, so it
/// is never asked to give back what it does not use).
pub(crate) fn is_pool_client(conn: ConnId) -> bool {
    conn & POOL_BIT != 0
}

/// The driver's connection a grant holder stands for.
pub(crate) fn job_conn(conn: ConnId) -> ConnId {
    conn & !POOL_BIT
}

const POOL_BIT: ConnId = 1 << 63;

/// How long an ask the node has no room for waits here for room (a worker of the job
/// blocking in `get`, a lease's end) before it is passed on to the job's other nodes in turn
/// (unless one said it has room first, see [`crate::proto::spill`]): an owner asks for its
/// leases as it submits, before it blocks waiting for them (10,000 submissions take tens of
/// milliseconds). The driver moves queued work between nodes at the same period
/// ([`crate::proto::node::REBALANCE_EVERY`]).
pub(crate) const ASK_WAITS: Duration = Duration::from_millis(100);

/// The longest an ask waits here between rounds of passes to other nodes: each round that
/// every node it tried refused doubles its wait from [`ASK_WAITS`] up to this (the nodes
/// that come to have room say so meanwhile, see [`crate::proto::spill`]).
pub(crate) const ASK_WAITS_MOST: Duration = Duration::from_millis(1600);

/// What a worker of the pool does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// Started for lease `key`; its owner hears of the lease once the process runs.
    Starting(TaskId),
    /// Leased under `key`.
    Leased(TaskId),
    /// Idle since then.
    Idle(Instant),
    /// Started for the driver's borrow `ticket`, which hears of it once the process runs.
    Lending(u64),
    /// Lent to the driver, which runs its own tasks on it until it gives it back.
    Driver,
}

/// A borrow of the driver's that waits for a worker (see [`Pool::lend`]).
#[derive(Debug)]
struct Borrow {
    ticket: u64,
    /// When a worker starts for it beyond the cap, if none came free.
    until: Instant,
}

/// What the pool decided for a borrow of the driver's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lend {
    /// This idle worker is the driver's now.
    Idle { worker: u64 },
    /// A worker of this number starts for it ([`Pool::started`] follows).
    Start { worker: u64 },
    /// It waits for a worker to come free (decided later by [`Pool::lend_waiting`] or
    /// [`Pool::due`]).
    Waits,
}

/// Who a worker of the pool started for (see [`Pool::started`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartedFor {
    /// Lease `key` of `owner`; `stands`: it runs (else it ended, its resources back).
    Lease {
        owner: u64,
        key: TaskId,
        stands: bool,
    },
    /// The driver's borrow `ticket`; `stands`: it runs.
    Driver { ticket: u64, stands: bool },
}

/// A lease the pool granted.
#[derive(Debug)]
struct Granted {
    owner: u64,
    worker: u64,
    shape: Resources,
    /// Its worker waits in `get`: the lease's CPU went back to the node.
    blocked: bool,
    /// Its worker resumed when the CPU it gave back was not free: it runs on CPU the node
    /// did not grant, and gives back that much less when the lease ends.
    debt: bool,
}

/// An ask that waits for room (see [`ASK_WAITS`]).
#[derive(Debug)]
struct Waiting {
    owner: u64,
    key: TaskId,
    shape: Resources,
    /// When it is passed on to other nodes (next); never while no other node could run it.
    until: Option<Instant>,
    /// Offered to another node meanwhile, which is thought to have room for it
    /// ([`crate::proto::spill::Spill::offer`]), or passed on after its wait
    /// ([`Pool::due`]): it keeps its place here, but nothing is decided for it here until it
    /// comes back ([`Pool::come_home`]).
    away: bool,
    /// Rounds of passes that every node refused (see [`ASK_WAITS_MOST`]).
    rounds: u32,
}

/// What the pool decided for an ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asked {
    /// Granted on this idle worker: tell the owner.
    Granted { worker: u64 },
    /// Granted on a new worker of this number: start it ([`Pool::started`] follows).
    Start { worker: u64 },
    /// It waits for room here (decided later by [`Pool::retry`] or [`Pool::due`]).
    Waits,
    /// The node cannot grant it: the ask goes on (from [`Pool::ask`] and [`Pool::retry`], to
    /// the driver; from [`Pool::due`], to other nodes, see [`Pool::due`]).
    Forward,
}

/// A decision on an ask that waited: its owner, key and shape, and what was decided.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decided {
    pub(crate) owner: u64,
    pub(crate) key: TaskId,
    pub(crate) shape: Resources,
    pub(crate) asked: Asked,
}

/// Why an ask cannot be granted now.
enum Lack {
    /// No worker for it: none idle and none may start.
    Worker,
    /// The node's resources do not fit it now.
    Room,
}

/// What a worker's exit ends.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Exit {
    /// Leases that ended with the worker: (owner, key) to tell.
    pub(crate) ended: Vec<(u64, TaskId)>,
    /// Workers leased to the dead worker: to kill (their leases end as they exit).
    pub(crate) kill: Vec<u64>,
}

/// What is due at a time: idle workers to stop, and asks that waited long enough to go to
/// the driver.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Due {
    pub(crate) stop: Vec<u64>,
    pub(crate) forward: Vec<Decided>,
    /// Borrows of the driver's that waited long enough: (ticket, decision).
    pub(crate) lend: Vec<(u64, Lend)>,
}

/// A block in `get` of the driver's task on a worker of the pool that the node keeps from the
/// driver ([`Pool::hold_block`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldBlock {
    /// The CPUs the task holds, lent out while it waits.
    pub(crate) cpu: Amount,
    /// The tasks it waits for (the worker's own).
    pub(crate) awaiting: Vec<TaskId>,
}

/// A job's workers of the node's own (see the module's docs).
#[derive(Debug)]
pub(crate) struct Pool {
    next: u64,
    end: u64,
    max_workers: usize,
    workers: BTreeMap<u64, Use>,
    leases: HashMap<TaskId, Granted>,
    /// Asks waiting for room, in the order they came.
    waiting: VecDeque<Waiting>,
    /// The driver's borrows waiting for a worker, in the order they came.
    borrows: VecDeque<Borrow>,
    /// Workers lent to the driver whose task waits in `get`, and the blocks the node holds
    /// back from the driver (see [`Pool::hold_block`]).
    driver_blocked: HashMap<u64, Option<HeldBlock>>,
    /// Idle workers asked to exit ([`Due::stop`]) that have not exited yet: one that still
    /// owes work comes back ([`Pool::stays`]).
    asked_to_exit: HashSet<u64>,
    /// How many idle workers it keeps however long they idle.
    keep_idle: usize,
    /// The most of each resource any other node of the job has.
    elsewhere: Resources,
}

impl Pool {
    /// A pool numbering its workers in `numbers`, keeping at most `max_workers` processes;
    /// `elsewhere`: the most of each resource any other node of the job has.
    pub(crate) fn new(
        numbers: std::ops::Range<u64>,
        max_workers: usize,
        elsewhere: Resources,
    ) -> Self {
        Pool {
            next: numbers.start,
            end: numbers.end,
            max_workers,
            workers: BTreeMap::new(),
            leases: HashMap::new(),
            waiting: VecDeque::new(),
            borrows: VecDeque::new(),
            driver_blocked: HashMap::new(),
            asked_to_exit: HashSet::new(),
            keep_idle: 0,
            elsewhere,
        }
    }

    /// Keeps up to `count` idle workers however long they idle (the node's CPUs, so that
    /// the next tasks do not wait for processes to start); more stop after [`IDLE_FOR`].
    pub(crate) fn keeping_idle(mut self, count: usize) -> Self {
        self.keep_idle = count;
        self
    }

    /// The idle workers that may stop at `now`, longest idle first (see
    /// [`Pool::stop_candidates`] for `elsewhere`).
    fn stoppable(&self, now: Instant, elsewhere: &dyn Fn(u64) -> bool) -> Vec<u64> {
        (self.stop_candidates(elsewhere).into_iter())
            .filter(|(since, _)| now.saturating_duration_since(*since) >= IDLE_FOR)
            .map(|(_, w)| w)
            .collect()
    }

    /// The idle workers beyond those kept, longest idle first, with when they began to idle.
    /// One that owns tasks on leases of the pool (or asks for one), or on leases of other
    /// nodes (`elsewhere`: the node's books of those, [`crate::proto::spill`]) is not among
    /// them: its task ended, but the children it submitted run on, and their ends come to it.
    fn stop_candidates(&self, elsewhere: &dyn Fn(u64) -> bool) -> Vec<(Instant, u64)> {
        let owns_work = |w: u64| {
            self.leases.values().any(|l| l.owner == w)
                || self.waiting.iter().any(|a| a.owner == w)
                || elsewhere(w)
        };
        let mut idle: Vec<(Instant, u64)> = (self.workers.iter())
            .filter_map(|(&w, u)| match u {
                Use::Idle(since) => Some((*since, w)),
                _ => None,
            })
            .collect();
        let beyond = idle.len().saturating_sub(self.keep_idle);
        idle.sort_unstable();
        idle.retain(|&(_, w)| !owns_work(w));
        idle.truncate(beyond);
        idle
    }

    /// Whether the pool numbers its workers within `first..end` (it was made for them).
    pub(crate) fn numbered(&self, first: u64, end: u64) -> bool {
        first <= self.next && self.end == end
    }

    /// The job's other nodes changed at `now`: the most of each resource any of them has is
    /// `elsewhere`. Asks that waited for room here because no other node could run them are
    /// passed on after their wait from now, if one can now.
    pub(crate) fn set_elsewhere(&mut self, elsewhere: Resources, now: Instant) {
        for ask in &mut self.waiting {
            ask.until = match ask.shape.fits_in(&elsewhere) {
                true => ask.until.or(Some(now + ASK_WAITS)),
                false => None,
            };
        }
        self.elsewhere = elsewhere;
    }

    /// Whether tasks owner `owner` pushes may reach worker `worker`: not when the worker is
    /// the pool's and not leased to that owner (idle, starting, or leased to another owner).
    /// A push can come after its lease ended (its frames on their way across a partition
    /// while the owner's node left the job): run then, it would use a CPU the node gave to
    /// another lease. Workers not the pool's (the driver's, an actor's) take what comes.
    pub(crate) fn takes_push(&self, owner: u64, worker: u64) -> bool {
        match self.workers.get(&worker) {
            None | Some(Use::Driver | Use::Lending(_)) => true,
            Some(Use::Leased(key)) => self.leases.get(key).is_some_and(|l| l.owner == owner),
            Some(Use::Starting(_) | Use::Idle(_)) => false,
        }
    }

    /// Whether worker `worker` is one of the pool's.
    #[cfg(test)]
    pub(crate) fn has(&self, worker: u64) -> bool {
        self.workers.contains_key(&worker)
    }

    /// Worker `owner` asks at `now` for a lease of `shape` keyed `key`, with the node's
    /// grants held as `client`; `can_start`: a new process may start (the job's binary is
    /// here). An ask behind others that wait waits too.
    pub(crate) fn ask(
        &mut self,
        (grants, client): (&mut Grants, ConnId),
        (owner, key, shape): (u64, TaskId, &Resources),
        can_start: bool,
        now: Instant,
    ) -> Asked {
        let open = self.leases.contains_key(&key) || self.waiting.iter().any(|w| w.key == key);
        if key.owner != owner || open {
            // The driver refuses it, saying why.
            return Asked::Forward;
        }
        let tried = match self.waiting.is_empty() {
            true => self.try_lease((grants, client), (owner, key, shape), can_start),
            false => Err(Lack::Room),
        };
        match tried {
            Ok(asked) => asked,
            // The driver cannot run tasks on top of the pool's workers: their asks wait here
            // for a worker, or for their owner to block (then it is leased itself).
            Err(Lack::Worker) if !self.owns(owner) => Asked::Forward,
            Err(Lack::Worker | Lack::Room) => {
                let shape = shape.clone();
                let until = shape.fits_in(&self.elsewhere).then_some(now + ASK_WAITS);
                (self.waiting).push_back(Waiting {
                    owner,
                    key,
                    shape,
                    until,
                    away: false,
                    rounds: 0,
                });
                Asked::Waits
            }
        }
    }

    /// Owner `owner` of another node asks for a lease of `shape` keyed `key` (its node's pool
    /// had no room and passed the ask on, see [`crate::proto::spill`]): granted now on an idle
    /// worker or a new one, or refused ([`Asked::Forward`]); it never waits here, nor goes
    /// ahead of the asks of this node's owners that wait.
    pub(crate) fn ask_afar(
        &mut self,
        (grants, client): (&mut Grants, ConnId),
        (owner, key, shape): (u64, TaskId, &Resources),
        can_start: bool,
    ) -> Asked {
        let open = self.leases.contains_key(&key) || self.waiting.iter().any(|w| w.key == key);
        if open || key.owner != owner || !self.waiting.is_empty() {
            return Asked::Forward;
        }
        (self.try_lease((grants, client), (owner, key, shape), can_start)).unwrap_or(Asked::Forward)
    }

    /// The asks waiting here that another node could run and that are not offered to one
    /// already, in order: (owner, key, shape).
    pub(crate) fn to_offer(&self) -> Vec<(u64, TaskId, Resources)> {
        (self.waiting.iter())
            .filter(|w| !w.away && w.until.is_some())
            .map(|w| (w.owner, w.key, w.shape.clone()))
            .collect()
    }

    /// Waiting ask `key` is offered to another node (see [`Waiting::away`]).
    pub(crate) fn send_away(&mut self, key: TaskId) {
        if let Some(ask) = self.waiting.iter_mut().find(|w| w.key == key) {
            ask.away = true;
        }
    }

    /// Waiting ask `key`, offered or passed to other nodes, was refused there at `now`: it
    /// is decided here again, in its place; after a round of passes it waits twice as long
    /// as before until the next (see [`ASK_WAITS_MOST`]).
    pub(crate) fn come_home(&mut self, key: TaskId, now: Instant) {
        let Some(ask) = self.waiting.iter_mut().find(|w| w.key == key) else {
            return;
        };
        ask.away = false;
        if let Some(until) = &mut ask.until
            && *until <= now
        {
            ask.rounds += 1;
            let wait = ASK_WAITS.saturating_mul(1 << ask.rounds.min(8));
            *until = now + wait.min(ASK_WAITS_MOST);
        }
    }

    /// Waiting ask `key` was granted on another node, or goes to the driver: it waits here
    /// no more.
    pub(crate) fn leaves(&mut self, key: TaskId) {
        self.waiting.retain(|w| w.key != key);
    }

    /// What this pool could grant another node's owners now (see [`Pool::ask_afar`]):
    /// nothing while asks of its own wait; else the node's free resources (`free`, as
    /// [`Grants::room`] says) and its idle workers and those it may start (`can_start`).
    pub(crate) fn room(&self, free: Resources, can_start: bool) -> Room {
        if !self.waiting.is_empty() {
            return Room::default();
        }
        let idle = (self.workers.values())
            .filter(|u| matches!(u, Use::Idle(_)))
            .count();
        let workers = u32::try_from(idle + self.startable(can_start)).unwrap_or(u32::MAX);
        Room { free, workers }
    }

    /// How many more workers may start (`can_start`: the job's binary is here): under the
    /// pool's cap on processes and within its numbers.
    fn startable(&self, can_start: bool) -> usize {
        match can_start {
            true => (self.max_workers.saturating_sub(self.workers.len()))
                .min(self.end.saturating_sub(self.next) as usize),
            false => 0,
        }
    }

    /// Grants the waiting asks that fit now, in order (one that lacks a worker goes to the
    /// driver; the first that lacks room stops the rest).
    pub(crate) fn retry(
        &mut self,
        (grants, client): (&mut Grants, ConnId),
        can_start: bool,
    ) -> Vec<Decided> {
        let mut decided = Vec::new();
        let mut at = 0;
        while let Some(first) = self.waiting.get(at) {
            if first.away {
                at += 1;
                continue;
            }
            let ask = (first.owner, first.key, &first.shape.clone());
            let pooled = self.owns(first.owner);
            let asked = match self.try_lease((grants, client), ask, can_start) {
                Ok(asked) => asked,
                Err(Lack::Worker) if !pooled => Asked::Forward,
                // Waits on for a worker; the asks behind it may have one.
                Err(Lack::Worker) => {
                    at += 1;
                    continue;
                }
                Err(Lack::Room) => break,
            };
            let first = self.waiting.remove(at).expect("looked at");
            decided.push(Decided {
                owner: first.owner,
                key: first.key,
                shape: first.shape,
                asked,
            });
        }
        decided
    }

    /// Leases a worker for the ask if one may take it and the node's resources fit it now.
    fn try_lease(
        &mut self,
        (grants, client): (&mut Grants, ConnId),
        (owner, key, shape): (u64, TaskId, &Resources),
        can_start: bool,
    ) -> Result<Asked, Lack> {
        let idle = (self.workers.iter())
            .find(|(_, u)| matches!(u, Use::Idle(_)))
            .map(|(&w, _)| w);
        let fresh = (self.startable(can_start) > 0).then_some(self.next);
        // At the cap, a blocked owner of the pool's is leased itself: it runs the tasks it
        // waits for on top of the blocked one (as the driver nests them on its workers).
        let nest = (idle.is_none() && fresh.is_none() && self.blocked_here(owner)).then_some(owner);
        let worker = idle.or(fresh).or(nest).ok_or(Lack::Worker)?;
        if !grants.try_grant(client, shape) {
            return Err(Lack::Room);
        }
        let granted = Granted {
            owner,
            worker,
            shape: shape.clone(),
            blocked: false,
            debt: false,
        };
        self.leases.insert(key, granted);
        if nest.is_some() {
            // It stays leased to its own owner too.
            return Ok(Asked::Granted { worker });
        }
        if idle.is_some() {
            self.workers.insert(worker, Use::Leased(key));
            return Ok(Asked::Granted { worker });
        }
        self.next += 1;
        self.workers.insert(worker, Use::Starting(key));
        Ok(Asked::Start { worker })
    }

    /// Whether `worker` is one of the pool's own, not lent to the driver (which nests the
    /// asks of its workers on them itself).
    fn owns(&self, worker: u64) -> bool {
        matches!(
            self.workers.get(&worker),
            Some(Use::Starting(_) | Use::Leased(_) | Use::Idle(_))
        )
    }

    /// The driver borrows a worker for its own tasks at `now`, the borrow named `ticket`: an
    /// idle one, or a new one under the cap (`beyond_cap`: past it). Otherwise it waits, behind
    /// the borrows waiting already, for a worker to come free; if after [`ASK_WAITS`] every
    /// worker of the pool waits in `get`, one starts past the cap (their tasks may wait for
    /// the driver's, as in the stall the driver breaks with `beyond_cap`).
    pub(crate) fn lend(&mut self, ticket: u64, beyond_cap: bool, now: Instant) -> Lend {
        let now_or_never = match beyond_cap || self.borrows.is_empty() {
            true => self.lend_now(ticket, beyond_cap),
            false => None,
        };
        now_or_never.unwrap_or_else(|| {
            let until = now + ASK_WAITS;
            self.borrows.push_back(Borrow { ticket, until });
            Lend::Waits
        })
    }

    /// Lends an idle worker, or starts one if the cap allows (or `beyond_cap`).
    fn lend_now(&mut self, ticket: u64, beyond_cap: bool) -> Option<Lend> {
        let idle = (self.workers.iter())
            .find(|(_, u)| matches!(u, Use::Idle(_)))
            .map(|(&w, _)| w);
        if let Some(worker) = idle {
            self.workers.insert(worker, Use::Driver);
            return Some(Lend::Idle { worker });
        }
        let room = beyond_cap || self.workers.len() < self.max_workers;
        if !room || self.next >= self.end {
            return None;
        }
        let worker = self.next;
        self.next += 1;
        self.workers.insert(worker, Use::Lending(ticket));
        Some(Lend::Start { worker })
    }

    /// Lends the workers that came free to the borrows waiting for them, in order.
    pub(crate) fn lend_waiting(&mut self) -> Vec<(u64, Lend)> {
        let mut lent = Vec::new();
        while let Some(first) = self.borrows.front() {
            let ticket = first.ticket;
            let Some(lend) = self.lend_now(ticket, false) else {
                break;
            };
            self.borrows.pop_front();
            lent.push((ticket, lend));
        }
        lent
    }

    /// The driver gives worker `worker` back, or one it started itself joins the pool: it
    /// idles from `now`. False when the pool holds it otherwise (leased, starting).
    pub(crate) fn take_back(&mut self, worker: u64, now: Instant) -> bool {
        match self.workers.get(&worker) {
            Some(Use::Driver) | None => {
                // Idle: what it sent up when its task ended took any held block with it.
                self.driver_blocked.remove(&worker);
                self.workers.insert(worker, Use::Idle(now));
                true
            }
            Some(_) => false,
        }
    }

    /// Worker `worker`, lent to the driver, holds an actor now: it leaves the pool (its cap
    /// counts processes for tasks).
    pub(crate) fn keep(&mut self, (grants, client): (&mut Grants, ConnId), worker: u64) {
        if matches!(self.workers.get(&worker), Some(Use::Driver)) {
            self.workers.remove(&worker);
            self.unblock_driver((grants, client), worker);
        }
    }

    /// Whether a worker of the pool runs (or starts, or idles): not every one waits in `get`.
    fn any_runs(&self) -> bool {
        (self.workers.iter()).any(|(worker, used)| match used {
            Use::Leased(key) => !self.leases.get(key).is_some_and(|l| l.blocked),
            Use::Driver => !self.driver_blocked.contains_key(worker),
            Use::Starting(_) | Use::Lending(_) | Use::Idle(_) => true,
        })
    }

    /// Whether `worker` is one of the pool's, leased, and blocked in `get`.
    fn blocked_here(&self, worker: u64) -> bool {
        match self.workers.get(&worker) {
            Some(Use::Leased(key)) => self.leases.get(key).is_some_and(|l| l.blocked),
            _ => false,
        }
    }

    /// Worker `worker`, started for a lease or a borrow of the driver's, runs (`ok`) or
    /// could not start: whom to tell, and whether the lease or borrow stands (a lease that
    /// does not has its resources back).
    pub(crate) fn started(
        &mut self,
        (grants, client): (&mut Grants, ConnId),
        worker: u64,
        ok: bool,
    ) -> Option<StartedFor> {
        let used = self.workers.get(&worker).copied()?;
        if !ok {
            self.workers.remove(&worker);
        }
        let key = match used {
            Use::Starting(key) => key,
            Use::Lending(ticket) => {
                if ok {
                    self.workers.insert(worker, Use::Driver);
                }
                return Some(StartedFor::Driver { ticket, stands: ok });
            }
            // Given back before it ran: it idles (or, not started, is gone).
            _ => return None,
        };
        if ok {
            self.workers.insert(worker, Use::Leased(key));
            let owner = self.leases.get(&key)?.owner;
            let stands = true;
            return Some(StartedFor::Lease { owner, key, stands });
        }
        let lease = self.leases.remove(&key)?;
        give_back(grants, client, &lease);
        let (owner, stands) = (lease.owner, false);
        Some(StartedFor::Lease { owner, key, stands })
    }

    /// Worker `owner` gives lease `key` back, or withdraws its ask: true when it is the
    /// pool's (its worker idles from `now`).
    pub(crate) fn unlease(
        &mut self,
        (grants, client): (&mut Grants, ConnId),
        (owner, key): (u64, TaskId),
        now: Instant,
    ) -> bool {
        if let Some(at) = (self.waiting.iter()).position(|w| w.key == key && w.owner == owner) {
            self.waiting.remove(at);
            return true;
        }
        if self.leases.get(&key).is_none_or(|l| l.owner != owner) {
            return false;
        }
        let lease = self.leases.remove(&key).expect("checked");
        give_back(grants, client, &lease);
        // The worker of this lease idles (one that still starts, from its start on: nothing
        // waits for it). An owner leased itself while blocked stays under the lease it runs
        // on; one leased itself while idle (it was the idle worker the ask found) idles again.
        if let Some(used) = self.workers.get_mut(&lease.worker)
            && matches!(used, Use::Leased(k) | Use::Starting(k) if *k == key)
        {
            *used = Use::Idle(now);
        }
        true
    }

    /// The worker of lease `key`, when it is the pool's and `owner` holds it (the one to
    /// kill when the owner cancels a task it pushed there by force).
    pub(crate) fn leased_worker(&self, owner: u64, key: TaskId) -> Option<u64> {
        (self.leases.get(&key))
            .filter(|l| l.owner == owner)
            .map(|l| l.worker)
    }

    /// Worker `worker`'s task the lease ran blocks in `get` (`blocked`) or resumes: the CPU
    /// goes back to the node, or is taken again.
    pub(crate) fn blocked(
        &mut self,
        (grants, client): (&mut Grants, ConnId),
        worker: u64,
        blocked: bool,
    ) {
        let key = match self.workers.get(&worker).copied() {
            Some(Use::Leased(key)) => key,
            Some(Use::Driver) | None => {
                // The driver gives its CPU back itself; the pool only notes the wait.
                match blocked {
                    true => drop(self.driver_blocked.insert(worker, None)),
                    false => drop(self.driver_blocked.remove(&worker)),
                };
                return;
            }
            _ => return,
        };
        let Some(lease) = self.leases.get_mut(&key) else {
            return;
        };
        let cpu = cpu_of(&lease.shape);
        match (blocked, lease.blocked) {
            (true, false) => {
                lease.blocked = true;
                if lease.debt {
                    // It never took the CPU back: nothing to give.
                    lease.debt = false;
                } else {
                    grants.give_back(client, &cpu);
                }
            }
            (false, true) => {
                lease.blocked = false;
                lease.debt = !grants.try_grant(client, &cpu);
            }
            _ => {}
        }
    }

    /// Worker `worker`, asked to exit while idle, still owes work: it is an idle worker of
    /// the pool again from `now`. False for a worker not asked (nothing changes).
    pub(crate) fn stays(&mut self, worker: u64, now: Instant) -> bool {
        if !self.asked_to_exit.remove(&worker) {
            return false;
        }
        self.workers.insert(worker, Use::Idle(now));
        true
    }

    /// Worker `worker` of the driver's (lent to it, or started by it and never the pool's)
    /// blocks in `get` holding `cpu` (maybe none), waiting only for tasks it owns itself
    /// (`awaiting`: the asks of its leases), which the driver neither runs nor could run on
    /// top of it: the node keeps the block from the driver and lends the CPU out of the
    /// driver's grant to whoever waits here, as it does for a worker leased to an owner
    /// (Ray's raylet hears a worker's blocking; its owner does not). True when it did; the
    /// driver hears of the block only if the worker sends it something before it resumes
    /// ([`Pool::release_block`]).
    pub(crate) fn hold_block(
        &mut self,
        (grants, client): (&mut Grants, ConnId),
        worker: u64,
        (cpu, awaiting): (Amount, Vec<TaskId>),
    ) -> bool {
        // The driver's: lent to it, or one it started itself (not the pool's at all).
        let drivers = matches!(self.workers.get(&worker), Some(Use::Driver) | None);
        if !drivers || self.driver_blocked.contains_key(&worker) {
            return false;
        }
        grants.give_back(job_conn(client), &cpus_of(cpu));
        (self.driver_blocked).insert(worker, Some(HeldBlock { cpu, awaiting }));
        true
    }

    /// Worker `worker`, lent to the driver, resumes: true when the node held its block (the
    /// driver hears of neither), whose CPU is the driver's again, beyond the node's free
    /// CPU if it was lent out meanwhile ([`Grants::take_back`]).
    pub(crate) fn resume_held(
        &mut self,
        (grants, client): (&mut Grants, ConnId),
        worker: u64,
    ) -> bool {
        self.unblock_driver((grants, client), worker).is_some()
    }

    /// The block the node holds for worker `worker`, lent to the driver, which must hear of
    /// it now (the worker sends it something: the driver may run or nest tasks on it); the
    /// CPU is the driver's again, and the driver gives it back itself as it hears the
    /// block. The pool notes the wait on.
    pub(crate) fn release_block(
        &mut self,
        (grants, client): (&mut Grants, ConnId),
        worker: u64,
    ) -> Option<HeldBlock> {
        let held = self.unblock_driver((grants, client), worker)?;
        self.driver_blocked.insert(worker, None);
        Some(held)
    }

    /// Worker `worker` lent to the driver no longer waits (it resumed, exited or left the
    /// pool): a block the node held gives the driver its CPU back.
    fn unblock_driver(
        &mut self,
        (grants, client): (&mut Grants, ConnId),
        worker: u64,
    ) -> Option<HeldBlock> {
        let held = self.driver_blocked.remove(&worker)??;
        grants.take_back(job_conn(client), &cpus_of(held.cpu));
        Some(held)
    }

    /// Worker `worker` of the job exited: its lease ends if it had one, its place in the
    /// pool goes, its asks leave, and the workers leased to it are to be killed.
    pub(crate) fn exited(&mut self, (grants, client): (&mut Grants, ConnId), worker: u64) -> Exit {
        let mut exit = Exit::default();
        self.asked_to_exit.remove(&worker);
        self.unblock_driver((grants, client), worker);
        if let Some(Use::Leased(key) | Use::Starting(key)) = self.workers.remove(&worker)
            && let Some(lease) = self.leases.remove(&key)
        {
            give_back(grants, client, &lease);
            exit.ended.push((lease.owner, key));
        }
        self.waiting.retain(|w| w.owner != worker);
        // Leased itself: those go with it.
        let own: Vec<TaskId> = (self.leases.iter())
            .filter(|(_, l)| l.owner == worker && l.worker == worker)
            .map(|(k, _)| *k)
            .collect();
        for key in own {
            if let Some(lease) = self.leases.remove(&key) {
                give_back(grants, client, &lease);
            }
        }
        let mut kill: Vec<u64> = (self.leases.values())
            .filter(|l| l.owner == worker)
            .map(|l| l.worker)
            .collect();
        kill.sort_unstable();
        exit.kill = kill;
        exit
    }

    /// What is due at `now`: workers idle for [`IDLE_FOR`] beyond those kept stop (they leave
    /// the pool now; not those that own work `elsewhere`), and asks that waited [`ASK_WAITS`]
    /// (or longer, see [`ASK_WAITS_MOST`]) go on, keeping their place here until they are
    /// granted elsewhere ([`Pool::leaves`]) or refused everywhere ([`Pool::come_home`]).
    pub(crate) fn due(&mut self, now: Instant, elsewhere: &dyn Fn(u64) -> bool) -> Due {
        let stop = self.stoppable(now, elsewhere);
        for worker in &stop {
            self.workers.remove(worker);
            self.asked_to_exit.insert(*worker);
        }
        let mut forward = Vec::new();
        for ask in &mut self.waiting {
            if !ask.away && ask.until.is_some_and(|until| until <= now) {
                // It keeps its place here while it is passed on.
                ask.away = true;
                forward.push(Decided {
                    owner: ask.owner,
                    key: ask.key,
                    shape: ask.shape.clone(),
                    asked: Asked::Forward,
                });
            }
        }
        let mut lend = Vec::new();
        while let Some(first) = self.borrows.front().filter(|b| b.until <= now) {
            let ticket = first.ticket;
            if self.any_runs() {
                // A worker that runs comes free in time: wait on.
                for borrow in self.borrows.iter_mut().filter(|b| b.until <= now) {
                    borrow.until = now + ASK_WAITS;
                }
                break;
            }
            let Some(lent) = self.lend_now(ticket, true) else {
                break;
            };
            self.borrows.pop_front();
            lend.push((ticket, lent));
        }
        Due {
            stop,
            forward,
            lend,
        }
    }

    /// When [`Pool::due`] next has something to do.
    pub(crate) fn next_due(&self, elsewhere: &dyn Fn(u64) -> bool) -> Option<Instant> {
        (self.stop_candidates(elsewhere).into_iter())
            .map(|(since, _)| since + IDLE_FOR)
            .chain(
                self.waiting
                    .iter()
                    .filter(|w| !w.away)
                    .filter_map(|w| w.until),
            )
            .chain(self.borrows.iter().map(|b| b.until))
            .min()
    }
}

/// For each of `all`, the most of each resource any of the others has: one pass keeping the
/// largest and second largest amount of each kind (a cluster's join recomputes this for
/// every node, so the work grows with the nodes, not their square).
pub(crate) fn most_elsewhere(all: &[&Resources]) -> Vec<Resources> {
    /// The largest amount (and which of `all` has it) and the second largest.
    #[derive(Default, Clone, Copy)]
    struct Top {
        first: Amount,
        holder: usize,
        second: Amount,
    }
    impl Top {
        fn add(&mut self, amount: Amount, at: usize) {
            if amount > self.first {
                self.second = self.first;
                self.first = amount;
                self.holder = at;
            } else if amount > self.second {
                self.second = amount;
            }
        }
        fn without(&self, at: usize) -> Amount {
            if self.holder == at {
                self.second
            } else {
                self.first
            }
        }
    }
    let (mut cpu, mut gpu) = (Top::default(), Top::default());
    let mut custom: BTreeMap<&str, Top> = BTreeMap::new();
    for (at, one) in all.iter().enumerate() {
        cpu.add(one.cpu, at);
        gpu.add(one.gpu, at);
        for (name, amount) in &one.custom {
            custom.entry(name.as_str()).or_default().add(*amount, at);
        }
    }
    (0..all.len())
        .map(|at| Resources {
            cpu: cpu.without(at),
            gpu: gpu.without(at),
            // Sorted by name, without zero entries, as `Resources` keeps them.
            custom: (custom.iter())
                .map(|(name, top)| (name.to_string(), top.without(at)))
                .filter(|(_, amount)| *amount > Amount::ZERO)
                .collect(),
        })
        .collect()
}

/// The CPU of `shape` alone.
fn cpu_of(shape: &Resources) -> Resources {
    cpus_of(shape.cpu)
}

/// `cpu` CPUs and nothing else.
fn cpus_of(cpu: Amount) -> Resources {
    Resources {
        cpu,
        gpu: Amount::ZERO,
        custom: Vec::new(),
    }
}

/// What lease `lease` holds goes back to the node: its shape, less the CPU it gave back
/// while blocked or runs on without a grant.
fn give_back(grants: &mut Grants, client: ConnId, lease: &Granted) {
    let mut back = lease.shape.clone();
    if lease.blocked || lease.debt {
        back.subtract(&cpu_of(&lease.shape));
    }
    grants.give_back(client, &back);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::grants::Answer;

    /// No worker owns work on other nodes.
    fn nothing_elsewhere(_: u64) -> bool {
        false
    }

    fn cpus(n: f64) -> Resources {
        Resources::cpus(n).expect("a whole number of CPUs")
    }

    fn key(owner: u64, seq: u64) -> TaskId {
        TaskId::new(owner, seq)
    }

    const CLIENT: ConnId = 1 | POOL_BIT;

    #[test]
    fn each_node_s_elsewhere_is_the_most_the_others_have() {
        let with = |cpu: f64, gpu: f64, custom: &[(&str, f64)]| {
            let mut r = Resources::cpus(cpu).expect("cpus");
            r.gpu = Amount::from_f64(gpu).expect("gpus");
            for (name, amount) in custom {
                r.custom
                    .push((name.to_string(), Amount::from_f64(*amount).expect("amount")));
            }
            r.custom.sort();
            r
        };
        let nodes = [
            with(8.0, 0.0, &[("alpha", 1.0)]),
            with(8.0, 2.0, &[]),
            with(4.0, 1.0, &[("alpha", 3.0), ("beta", 1.0)]),
            with(2.0, 0.0, &[]),
        ];
        let all: Vec<&Resources> = nodes.iter().collect();
        // The same, taken the long way: over every other node.
        let naive = |at: usize| {
            let mut most = Resources::default();
            for (_, one) in nodes.iter().enumerate().filter(|(o, _)| *o != at) {
                most.cpu = most.cpu.max(one.cpu);
                most.gpu = most.gpu.max(one.gpu);
                for (name, amount) in &one.custom {
                    match most.custom.iter_mut().find(|(n, _)| n == name) {
                        Some((_, have)) => *have = (*have).max(*amount),
                        None => most.custom.push((name.clone(), *amount)),
                    }
                }
            }
            most.custom.sort();
            most
        };
        let each = most_elsewhere(&all);
        assert_eq!(each.len(), nodes.len());
        for (at, elsewhere) in each.iter().enumerate() {
            assert_eq!(*elsewhere, naive(at), "node {at}");
        }
        // Two nodes with 8 CPUs: each sees the other's 8; beta only on node 2: nowhere else.
        assert_eq!(each[0].cpu, Amount::from_f64(8.0).expect("8"));
        assert!(each[2].custom.iter().all(|(name, _)| name != "beta"));
        assert_eq!(most_elsewhere(&[]), Vec::<Resources>::new());
        assert_eq!(most_elsewhere(&[&nodes[2]]), vec![Resources::default()]);
    }

    #[test]
    fn an_ask_takes_an_idle_worker_or_starts_one_and_one_without_a_worker_goes_to_the_driver() {
        let mut grants = Grants::new(cpus(2.0));
        let mut pool = Pool::new(100..103, 8, cpus(4.0));
        let t0 = Instant::now();
        let one = cpus(1.0);
        let ask = |pool: &mut Pool, grants: &mut Grants, owner, k, shape: &Resources, start| {
            pool.ask((grants, CLIENT), (owner, k, shape), start, t0)
        };
        assert_eq!(
            ask(&mut pool, &mut grants, 7, key(7, 1), &one, true),
            Asked::Start { worker: 100 }
        );
        assert_eq!(
            pool.started((&mut grants, CLIENT), 100, true),
            Some(StartedFor::Lease {
                owner: 7,
                key: key(7, 1),
                stands: true
            })
        );
        // None may start while the binary is missing: the driver places it.
        assert_eq!(
            ask(&mut pool, &mut grants, 7, key(7, 2), &one, false),
            Asked::Forward
        );
        assert_eq!(
            ask(&mut pool, &mut grants, 7, key(7, 2), &one, true),
            Asked::Start { worker: 101 }
        );
        assert_eq!(grants.held_by(CLIENT), cpus(2.0));
        // Pushes reach a worker of the pool only from the owner it is leased to (101 is
        // still starting); workers not the pool's take what comes.
        assert!(pool.takes_push(7, 100));
        assert!(!pool.takes_push(8, 100));
        assert!(!pool.takes_push(7, 101));
        assert!(pool.takes_push(8, 500));
        // Only its owner gives a lease back; the worker idles and takes the next ask.
        assert!(!pool.unlease((&mut grants, CLIENT), (8, key(7, 1)), t0));
        assert!(pool.unlease((&mut grants, CLIENT), (7, key(7, 1)), t0));
        assert!(
            !pool.takes_push(7, 100),
            "its lease ended: a late push is dropped"
        );
        assert_eq!(
            ask(&mut pool, &mut grants, 8, key(8, 1), &one, true),
            Asked::Granted { worker: 100 }
        );
        assert!(pool.takes_push(8, 100) && !pool.takes_push(7, 100));
        // A key that is not the asker's, or open already, is the driver's to refuse; and the
        // numbers run out at the range's end.
        let zero = Resources::default();
        assert!(pool.unlease((&mut grants, CLIENT), (7, key(7, 2)), t0));
        let asks = [
            (key(9, 1), &one, Asked::Forward),
            (key(8, 1), &one, Asked::Forward),
            (key(8, 2), &zero, Asked::Granted { worker: 101 }),
            (key(8, 3), &zero, Asked::Start { worker: 102 }),
            (key(8, 4), &zero, Asked::Forward),
        ];
        for (k, shape, expected) in asks {
            assert_eq!(
                ask(&mut pool, &mut grants, 8, k, shape, true),
                expected,
                "{k}"
            );
        }
    }

    #[test]
    fn an_owner_leased_itself_while_idle_idles_again_when_it_gives_the_lease_back() {
        let mut grants = Grants::new(cpus(2.0));
        let mut pool = Pool::new(100..103, 8, cpus(4.0)).keeping_idle(0);
        let t0 = Instant::now();
        let one = cpus(1.0);
        let asked = pool.ask((&mut grants, CLIENT), (7, key(7, 1), &one), true, t0);
        assert_eq!(asked, Asked::Start { worker: 100 });
        pool.started((&mut grants, CLIENT), 100, true);
        assert!(pool.unlease((&mut grants, CLIENT), (7, key(7, 1)), t0));
        // Worker 100, idle, owns tasks too: its own ask finds it, the one idle worker.
        let asked = pool.ask((&mut grants, CLIENT), (100, key(100, 1), &one), true, t0);
        assert_eq!(asked, Asked::Granted { worker: 100 });
        assert!(pool.unlease((&mut grants, CLIENT), (100, key(100, 1)), t0));
        // It idles again: the next ask takes it, and it stops once idle a while (it was left
        // leased under the ended lease, neither leased again nor stopped).
        let later = t0 + IDLE_FOR;
        assert_eq!(pool.due(later, &nothing_elsewhere).stop, [100]);
        assert_eq!(grants.held_by(CLIENT), Resources::default());
    }

    #[test]
    fn an_ask_offered_elsewhere_keeps_its_place_and_the_pool_tells_its_room() {
        let mut grants = Grants::new(cpus(2.0));
        let mut pool = Pool::new(100..200, 3, cpus(4.0));
        let t0 = Instant::now();
        let one = cpus(1.0);
        // Room for others: the free CPUs, and the workers that may start (none without the
        // binary).
        let room = |pool: &Pool, grants: &Grants, can_start| pool.room(grants.room(), can_start);
        let told = |free: f64, workers| Room {
            free: cpus(free),
            workers,
        };
        assert_eq!(room(&pool, &grants, true), told(2.0, 3));
        assert_eq!(room(&pool, &grants, false), told(2.0, 0));
        // The driver holds the CPUs: owner 7's two asks wait; none is left for others.
        assert!(grants.try_grant(1, &cpus(2.0)));
        for seq in [1, 2] {
            let ask = (7, key(7, seq), &one);
            assert_eq!(pool.ask((&mut grants, CLIENT), ask, true, t0), Asked::Waits);
        }
        assert_eq!(room(&pool, &grants, true), Room::default());
        let offered: Vec<TaskId> = pool.to_offer().into_iter().map(|(_, k, _)| k).collect();
        assert_eq!(offered, [key(7, 1), key(7, 2)]);
        // The first is offered elsewhere: not offered again, and not decided here.
        pool.send_away(key(7, 1));
        assert_eq!(pool.to_offer().len(), 1);
        grants.give_back(1, &one);
        let granted = pool.retry((&mut grants, CLIENT), true);
        assert_eq!(
            granted.iter().map(|d| d.key).collect::<Vec<_>>(),
            [key(7, 2)]
        );
        let due = pool.due(t0 + ASK_WAITS, &nothing_elsewhere);
        assert!(due.forward.is_empty(), "{due:?}");
        // Refused there before its wait ended, it is back in its place and goes on after
        // its wait, still keeping its place here.
        pool.come_home(key(7, 1), t0);
        let forwarded = |due: Due| due.forward.iter().map(|d| d.key).collect::<Vec<_>>();
        assert_eq!(
            forwarded(pool.due(t0 + ASK_WAITS, &nothing_elsewhere)),
            [key(7, 1)]
        );
        assert_eq!(pool.to_offer().len(), 0);
        assert!(forwarded(pool.due(t0 + 2 * ASK_WAITS, &nothing_elsewhere)).is_empty());
        // Refused everywhere, it waits twice as long, and so on up to ASK_WAITS_MOST.
        let mut now = t0 + ASK_WAITS;
        for wait in [2, 4, 8, 16, 16] {
            pool.come_home(key(7, 1), now);
            assert_eq!(
                pool.next_due(&nothing_elsewhere),
                Some(now + wait * ASK_WAITS)
            );
            assert!(forwarded(pool.due(now + wait * ASK_WAITS / 2, &nothing_elsewhere)).is_empty());
            now += wait * ASK_WAITS;
            assert_eq!(forwarded(pool.due(now, &nothing_elsewhere)), [key(7, 1)]);
        }
        assert_eq!(16 * ASK_WAITS, ASK_WAITS_MOST);
        // Granted there, it waits here no more.
        pool.leaves(key(7, 1));
        let ask = (7, key(7, 3), &cpus(2.0));
        assert_eq!(pool.ask((&mut grants, CLIENT), ask, true, t0), Asked::Waits);
        pool.send_away(key(7, 3));
        pool.leaves(key(7, 3));
        assert!(pool.to_offer().is_empty());
        assert_eq!(pool.next_due(&nothing_elsewhere), None);
        assert_eq!(room(&pool, &grants, true), told(0.0, 2));
    }

    #[test]
    fn an_ask_without_room_waits_for_a_blocked_worker_s_cpu_or_goes_to_the_driver_in_time() {
        let mut grants = Grants::new(cpus(2.0));
        let mut pool = Pool::new(100..200, 8, cpus(4.0));
        let t0 = Instant::now();
        let one = cpus(1.0);
        // The owner's own task holds a CPU (the driver's grant, another holder).
        assert!(grants.try_grant(1, &one));
        assert_eq!(
            pool.ask((&mut grants, CLIENT), (7, key(7, 1), &one), true, t0),
            Asked::Start { worker: 100 }
        );
        for seq in 2..=3 {
            let asked = pool.ask((&mut grants, CLIENT), (7, key(7, seq), &one), true, t0);
            assert_eq!(asked, Asked::Waits);
        }
        assert!(
            pool.retry((&mut grants, CLIENT), true).is_empty(),
            "no room yet"
        );
        // The owner blocks: its driver gives its CPU back, and the first ask that waited
        // takes it.
        grants.give_back(1, &one);
        let decided = pool.retry((&mut grants, CLIENT), true);
        let asked: Vec<(TaskId, Asked)> = decided.iter().map(|d| (d.key, d.asked)).collect();
        assert_eq!(asked, [(key(7, 2), Asked::Start { worker: 101 })]);
        assert_eq!(pool.next_due(&nothing_elsewhere), Some(t0 + ASK_WAITS));
        // The other goes to the driver once it has waited long enough; one withdrawn meanwhile
        // would not.
        assert!(
            pool.due(t0 + ASK_WAITS / 2, &nothing_elsewhere)
                .forward
                .is_empty()
        );
        let due = pool.due(t0 + ASK_WAITS, &nothing_elsewhere);
        let forwarded: Vec<(u64, TaskId, Resources)> = due
            .forward
            .into_iter()
            .map(|d| (d.owner, d.key, d.shape))
            .collect();
        assert_eq!(forwarded, [(7, key(7, 3), one.clone())]);
        assert_eq!(
            pool.ask((&mut grants, CLIENT), (7, key(7, 4), &one), true, t0),
            Asked::Waits
        );
        assert!(pool.unlease((&mut grants, CLIENT), (7, key(7, 4)), t0));
        assert!(
            pool.due(t0 + ASK_WAITS, &nothing_elsewhere)
                .forward
                .is_empty()
        );
    }

    #[test]
    fn at_the_cap_a_blocked_owner_of_the_pool_s_is_leased_itself_and_others_go_to_the_driver() {
        let mut grants = Grants::new(cpus(4.0));
        let mut pool = Pool::new(100..200, 1, cpus(4.0));
        let t0 = Instant::now();
        let one = cpus(1.0);
        let ask = |pool: &mut Pool, grants: &mut Grants, owner, seq| {
            pool.ask((grants, CLIENT), (owner, key(owner, seq), &one), true, t0)
        };
        assert_eq!(
            ask(&mut pool, &mut grants, 7, 1),
            Asked::Start { worker: 100 }
        );
        pool.started((&mut grants, CLIENT), 100, true);
        // The pool is at its cap. An owner of the driver's goes to the driver (which may run
        // the task on top of it); the pool's own worker, not blocked yet, waits.
        assert_eq!(ask(&mut pool, &mut grants, 8, 1), Asked::Forward);
        assert_eq!(ask(&mut pool, &mut grants, 100, 1), Asked::Waits);
        // It blocks waiting for that task: it is leased itself, and stays leased to its own
        // owner when it gives that lease back.
        pool.blocked((&mut grants, CLIENT), 100, true);
        let decided = pool.retry((&mut grants, CLIENT), true);
        let asked: Vec<(TaskId, Asked)> = decided.iter().map(|d| (d.key, d.asked)).collect();
        assert_eq!(asked, [(key(100, 1), Asked::Granted { worker: 100 })]);
        assert!(pool.unlease((&mut grants, CLIENT), (100, key(100, 1)), t0));
        assert_eq!(pool.leased_worker(7, key(7, 1)), Some(100));
        assert!(
            pool.due(t0 + IDLE_FOR, &nothing_elsewhere).stop.is_empty(),
            "still leased to 7"
        );
        // Its death ends what it was leased, its own leases included.
        assert_eq!(
            ask(&mut pool, &mut grants, 100, 2),
            Asked::Granted { worker: 100 }
        );
        let exit = pool.exited((&mut grants, CLIENT), 100);
        assert_eq!(
            exit,
            Exit {
                ended: vec![(7, key(7, 1))],
                kill: vec![]
            }
        );
        assert_eq!(grants.held_by(CLIENT), Resources::default());
    }

    #[test]
    fn a_blocked_leased_worker_gives_its_cpu_back_and_repays_what_it_took_beyond() {
        let mut grants = Grants::new(cpus(1.0));
        let mut pool = Pool::new(100..200, 8, cpus(4.0));
        let t0 = Instant::now();
        let one = cpus(1.0);
        pool.ask((&mut grants, CLIENT), (7, key(7, 1), &one), true, t0);
        pool.started((&mut grants, CLIENT), 100, true);
        pool.blocked((&mut grants, CLIENT), 100, true);
        assert_eq!(grants.free(), &cpus(1.0));
        // Another lease takes the CPU meanwhile; the first resumes beyond the node's grant.
        let asked = pool.ask((&mut grants, CLIENT), (100, key(100, 1), &one), true, t0);
        assert_eq!(asked, Asked::Start { worker: 101 });
        pool.started((&mut grants, CLIENT), 101, true);
        pool.blocked((&mut grants, CLIENT), 100, false);
        assert_eq!(grants.held_by(CLIENT), cpus(1.0));
        // Its end gives back only what it held: the node's books stay whole.
        assert!(pool.unlease((&mut grants, CLIENT), (7, key(7, 1)), t0));
        assert_eq!(grants.held_by(CLIENT), cpus(1.0));
        assert!(pool.unlease((&mut grants, CLIENT), (100, key(100, 1)), t0));
        assert_eq!(grants.free(), &cpus(1.0));
        assert_eq!(grants.held_by(CLIENT), Resources::default());
    }

    #[test]
    fn deaths_end_leases_and_kill_what_a_dead_owner_leased_and_idle_workers_stop() {
        let mut grants = Grants::new(cpus(4.0));
        let mut pool = Pool::new(100..200, 8, cpus(4.0));
        let t0 = Instant::now();
        let one = cpus(1.0);
        for seq in 1..=3 {
            let asked = pool.ask((&mut grants, CLIENT), (7, key(7, seq), &one), true, t0);
            assert_eq!(asked, Asked::Start { worker: 99 + seq });
        }
        assert_eq!(
            pool.started((&mut grants, CLIENT), 100, true),
            Some(StartedFor::Lease {
                owner: 7,
                key: key(7, 1),
                stands: true
            })
        );
        // A start that failed ends its lease: the owner hears, the CPU is back.
        assert_eq!(
            pool.started((&mut grants, CLIENT), 101, false),
            Some(StartedFor::Lease {
                owner: 7,
                key: key(7, 2),
                stands: false
            })
        );
        assert_eq!(grants.held_by(CLIENT), cpus(2.0));
        // The leased worker dies: its owner hears.
        let exit = pool.exited((&mut grants, CLIENT), 100);
        assert_eq!(
            exit,
            Exit {
                ended: vec![(7, key(7, 1))],
                kill: vec![]
            }
        );
        // The owner dies: the worker leased to it is killed, and its lease ends with it.
        let exit = pool.exited((&mut grants, CLIENT), 7);
        assert_eq!(
            exit,
            Exit {
                ended: vec![],
                kill: vec![102]
            }
        );
        pool.started((&mut grants, CLIENT), 102, true);
        let exit = pool.exited((&mut grants, CLIENT), 102);
        assert_eq!(exit.ended, vec![(7, key(7, 3))]);
        assert_eq!(grants.held_by(CLIENT), Resources::default());
        // A worker given back idles, and stops after a second of it.
        pool.ask((&mut grants, CLIENT), (8, key(8, 1), &one), true, t0);
        pool.started((&mut grants, CLIENT), 103, true);
        assert!(pool.unlease((&mut grants, CLIENT), (8, key(8, 1)), t0));
        assert_eq!(pool.next_due(&nothing_elsewhere), Some(t0 + IDLE_FOR));
        assert!(
            pool.due(t0 + IDLE_FOR / 2, &nothing_elsewhere)
                .stop
                .is_empty()
        );
        assert_eq!(pool.due(t0 + IDLE_FOR, &nothing_elsewhere).stop, vec![103]);
        assert!(!pool.has(103));
        assert_eq!(pool.leased_worker(8, key(8, 1)), None);
    }

    #[test]
    fn a_block_of_the_driver_s_task_stays_at_the_node_which_lends_its_cpu_meanwhile() {
        const DRIVER: ConnId = 1;
        let mut grants = Grants::new(cpus(2.0));
        let mut pool = Pool::new(100..200, 8, cpus(2.0));
        let t0 = Instant::now();
        // The driver runs a task of one CPU on a worker it borrowed; the worker's own
        // children take the other CPU, and one more waits for room.
        assert_eq!(grants.ask(DRIVER, 1, cpus(1.0)), Answer::Granted);
        assert_eq!(pool.lend(1, false, t0), Lend::Start { worker: 100 });
        pool.started((&mut grants, CLIENT), 100, true);
        let one = cpus(1.0);
        let child = |seq| (100, key(100, seq), &one);
        let asked = pool.ask((&mut grants, CLIENT), child(1), true, t0);
        assert_eq!(asked, Asked::Start { worker: 101 });
        pool.started((&mut grants, CLIENT), 101, true);
        assert_eq!(
            pool.ask((&mut grants, CLIENT), child(2), true, t0),
            Asked::Waits
        );
        // The task blocks waiting for them: the node keeps the block and lends its CPU,
        // which the waiting child takes.
        let block = (cpus(1.0).cpu, vec![key(100, 2)]);
        assert!(pool.hold_block((&mut grants, CLIENT), 100, block.clone()));
        assert!(!pool.hold_block((&mut grants, CLIENT), 100, block.clone()));
        assert_eq!(grants.held_by(DRIVER), Resources::default());
        let retried = pool.retry((&mut grants, CLIENT), true);
        assert_eq!(retried.len(), 1, "{retried:?}");
        assert_eq!(retried[0].asked, Asked::Start { worker: 102 });
        // It resumes while both children run: the CPU is the driver's again, beyond the
        // node's two, and the first lease to end repays it.
        assert!(pool.resume_held((&mut grants, CLIENT), 100));
        assert!(!pool.resume_held((&mut grants, CLIENT), 100), "once");
        assert_eq!(grants.held_by(DRIVER), cpus(1.0));
        assert!(pool.unlease((&mut grants, CLIENT), (100, key(100, 1)), t0));
        assert_eq!(grants.free(), &Resources::default());
        assert!(pool.unlease((&mut grants, CLIENT), (100, key(100, 2)), t0));
        assert_eq!(grants.free(), &cpus(1.0));
        // Blocked again, it sends the driver something: the driver hears the block first,
        // with the CPU back in its grant (it gives it back itself), and then its resumption.
        assert!(pool.hold_block((&mut grants, CLIENT), 100, block.clone()));
        assert_eq!(grants.free(), &cpus(2.0));
        let held = pool.release_block((&mut grants, CLIENT), 100);
        assert_eq!(held.map(|h| (h.cpu, h.awaiting)), Some(block.clone()));
        assert_eq!(grants.held_by(DRIVER), cpus(1.0));
        assert_eq!(pool.release_block((&mut grants, CLIENT), 100), None);
        assert!(!pool.resume_held((&mut grants, CLIENT), 100));
        // A worker that dies while the node holds its block gives the driver its CPU back
        // (the driver counts it free as it hears of the death).
        assert!(pool.hold_block((&mut grants, CLIENT), 100, block));
        pool.exited((&mut grants, CLIENT), 100);
        assert_eq!(grants.held_by(DRIVER), cpus(1.0));
        assert_eq!(grants.free(), &cpus(1.0));
        // Only the driver's workers, and one it started itself is the driver's too (a
        // worker leased to an owner gives its lease's CPU); a task of no CPU lends none.
        let waits = (cpus(1.0).cpu, Vec::new());
        assert!(!pool.hold_block((&mut grants, CLIENT), 101, waits.clone()));
        assert!(pool.hold_block((&mut grants, CLIENT), 7, waits));
        assert!(pool.resume_held((&mut grants, CLIENT), 7));
        let no_cpu = (Amount::ZERO, Vec::new());
        assert!(pool.hold_block((&mut grants, CLIENT), 7, no_cpu));
        assert_eq!(grants.held_by(DRIVER), cpus(1.0));
        assert!(pool.resume_held((&mut grants, CLIENT), 7));
        assert_eq!(grants.held_by(DRIVER), cpus(1.0));
    }

    #[test]
    fn the_driver_borrows_workers_of_the_pool_under_its_cap_and_gives_them_back() {
        let mut grants = Grants::new(cpus(4.0));
        let mut pool = Pool::new(100..200, 2, cpus(4.0));
        let t0 = Instant::now();
        let none = Resources::default();
        // The driver's first borrow starts a worker; it hears once the process runs.
        assert_eq!(pool.lend(1, false, t0), Lend::Start { worker: 100 });
        assert_eq!(
            pool.started((&mut grants, CLIENT), 100, true),
            Some(StartedFor::Driver {
                ticket: 1,
                stands: true
            })
        );
        // An owner's lease takes the last place under the cap.
        let asked = pool.ask((&mut grants, CLIENT), (7, key(7, 1), &none), true, t0);
        assert_eq!(asked, Asked::Start { worker: 101 });
        pool.started((&mut grants, CLIENT), 101, true);
        // At the cap the next borrow waits while a worker runs, past its wait too.
        assert_eq!(pool.lend(2, false, t0), Lend::Waits);
        assert_eq!(pool.next_due(&nothing_elsewhere), Some(t0 + ASK_WAITS));
        assert_eq!(pool.due(t0 + ASK_WAITS, &nothing_elsewhere).lend, vec![]);
        // The lease ends: its worker goes to the borrow, ahead of any owner.
        assert!(pool.unlease((&mut grants, CLIENT), (7, key(7, 1)), t0));
        assert_eq!(pool.lend_waiting(), vec![(2, Lend::Idle { worker: 101 })]);
        // An owner of the driver's finds no worker at the cap: the driver nests it.
        let asked = pool.ask((&mut grants, CLIENT), (100, key(100, 1), &none), true, t0);
        assert_eq!(asked, Asked::Forward);
        // Both of the driver's workers wait in get: a borrow that waited starts one past
        // the cap (their tasks may wait for the driver's).
        pool.blocked((&mut grants, CLIENT), 100, true);
        pool.blocked((&mut grants, CLIENT), 101, true);
        assert_eq!(pool.lend(3, false, t0), Lend::Waits);
        let later = t0 + 2 * ASK_WAITS;
        assert_eq!(
            pool.due(later, &nothing_elsewhere).lend,
            vec![(3, Lend::Start { worker: 102 })]
        );
        // The driver's stall breaker starts one past it at once.
        assert_eq!(pool.lend(4, true, t0), Lend::Start { worker: 103 });
        // A worker the driver gives back idles and is lent again or stopped; one it keeps
        // for an actor leaves the pool; one the driver started itself joins it.
        assert!(pool.take_back(101, later));
        assert_eq!(pool.lend(5, false, later), Lend::Idle { worker: 101 });
        pool.keep((&mut grants, CLIENT), 100);
        assert!(!pool.has(100));
        assert!(pool.take_back(7, later));
        assert_eq!(pool.due(later + IDLE_FOR, &nothing_elsewhere).stop, vec![7]);
        // One still starting for a borrow is not the driver's to give yet.
        assert!(!pool.take_back(102, later));
        // A pool that keeps as many idle workers as the node's CPUs stops only those beyond,
        // the longest idle first.
        let mut pool = Pool::new(100..200, 8, cpus(4.0)).keeping_idle(1);
        for (worker, at) in [(1, t0), (2, later), (3, t0)] {
            assert!(pool.take_back(worker, at));
        }
        assert_eq!(pool.next_due(&nothing_elsewhere), Some(t0 + IDLE_FOR));
        assert_eq!(pool.due(t0 + IDLE_FOR, &nothing_elsewhere).stop, vec![1, 3]);
        assert_eq!(pool.next_due(&nothing_elsewhere), None);
        assert!(
            pool.due(later + 10 * IDLE_FOR, &nothing_elsewhere)
                .stop
                .is_empty()
        );
        // An idle worker that owns tasks on a lease (its task ended, its children run on) is
        // not stopped until it gives the lease back.
        let mut pool = Pool::new(100..200, 8, cpus(4.0));
        let none = Resources::default();
        assert!(pool.take_back(5, t0) && pool.take_back(9, t0));
        let asked = pool.ask((&mut grants, CLIENT), (9, key(9, 1), &none), true, t0);
        assert_eq!(asked, Asked::Granted { worker: 5 });
        assert_eq!(pool.next_due(&nothing_elsewhere), None);
        assert!(pool.due(t0 + IDLE_FOR, &nothing_elsewhere).stop.is_empty());
        assert!(pool.unlease((&mut grants, CLIENT), (9, key(9, 1)), later));
        // Nor one whose children run on leases of other nodes.
        let on_other_nodes = |w: u64| w == 9;
        assert_eq!(pool.next_due(&on_other_nodes), Some(later + IDLE_FOR));
        assert_eq!(pool.due(later + IDLE_FOR, &on_other_nodes).stop, vec![5]);
        assert_eq!(pool.due(later + IDLE_FOR, &nothing_elsewhere).stop, vec![9]);
    }
}
