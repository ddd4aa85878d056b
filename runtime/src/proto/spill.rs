//! Spillback between node daemons, without IO: a node's pool that has no room for an ask of
//! one of its owners passes it on to another node of the job (OSDI'18's bottom-up
//! scheduling: the local scheduler forwards what it cannot run), whose pool grants it on a
//! worker of its own now or refuses it; the driver hears of it only when the pool knows no
//! other node of the job (embedded, or a cluster whose addresses the driver lacks).
//!
//! The daemon of the owner's node keeps, per job, the job's other nodes (their daemons' peer
//! addresses and resources in total, as the driver tells them: [`ToHost::Peers`]), the asks
//! it passed on and not yet heard of, and the leases granted elsewhere to its owners (their
//! give-backs and force-cancels go there; their ends come back from there). The granting
//! daemon keeps where each owner it leased to lives, so that the grant and the lease's end
//! go back to that node. A node that leaves the job ends the leases there (their owners
//! hear it) and the leases its owners held on this node (their workers are killed).
//!
//! Which node: the next in turn (from where the last pass ended) whose resources in total
//! fit the shape, skipping those that refused an ask within [`REFUSED_FOR`], and never one
//! this ask tried; after [`MAX_TRIES`] refusals, or when none is left, the ask is back in
//! its place at home, to be passed on again after a longer wait (the pool's
//! [`ASK_WAITS_MOST`]). (It used to go to the driver then, which queued it at the owner's
//! node: when other nodes came to have room later, nothing of it waited at home for them to
//! take, and a fan-out's last owners ran on few CPUs for most of a second.)
//!
//! When: after the ask waited at its own node (the pool's [`ASK_WAITS`]), unless another
//! node has room for it now. Each pool tells the nodes that asked it what room it has
//! ([`Room`], whenever that changes, more room at most once per [`ROOM_PACE`], and after each
//! refusal); a node not heard from yet is thought to have its whole resources free. An ask
//! its node has no room for goes at once to the next node in turn thought to have room for
//! it ([`Spill::offer`], the room thought there shrinking by the ask; a node it knows has
//! room before one it has not heard from, so that a large job's asks go where its binary and
//! workers are before they spread) and keeps its place at home meanwhile: refused, it is back
//! in its place ([`Next::Home`]), and the node that refused is thought full until it says
//! otherwise. So asks leave at once for nodes with room, and wait at home, where their
//! owner's blocking lends them its CPU, while none has (Ray's raylets spill back at once
//! from a view of the cluster's room; this view is of the nodes this one asked, learnt by
//! asking).
//!
//! Where first: an ask whose owner names the node holding the most of its task's arguments
//! (values earlier tasks left there: `near` in [`ToNode::Lease`]) goes to that node's pool at
//! once, before this node's pool looks at it ([`Spill::offer_near`]), which holds it a while
//! for room to come back if it has none; refused there, it is decided here as a new ask
//! ([`Next::Ask`]). (Ray's
//! owners send such a task's lease request to the raylet of the node with the most of its
//! arguments' bytes.)
//!
//! [`ToNode::Lease`]: prism_transport::ToNode::Lease
//! [`ASK_WAITS`]: crate::proto::pool::ASK_WAITS
//! [`ASK_WAITS_MOST`]: crate::proto::pool::ASK_WAITS_MOST
//! [`ToHost::Peers`]: prism_transport::ToHost::Peers

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::time::{Duration, Instant};

use prism_graph::{Resources, TaskId};
use prism_transport::PeerLease;

use crate::rng::Rng;

/// How many of the job's other nodes each node's pool may pass asks on to.
pub(crate) const PEERS: usize = 256;

/// Which of `count` nodes (positions in a list) the node at position `at` may pass asks on
/// to: all others in a cluster of up to [`PEERS`] + 1 nodes; in a larger one [`PEERS`] of
/// them drawn at random (seeded by the position, so the same each time), so that each pool's
/// list (and what the driver tells for a join) stays small and the asks of owners on a few
/// nodes spread over the whole cluster. (An even stride from each position made the lists of
/// owners a stride apart the same: 256 of 1,000 nodes at a stride of 3, and the simulated
/// fan-out of 100 ms tasks from 10 neighbouring owners took 8.0 s; drawn at random, 6.25 s;
/// the CPUs' bound is 5 s.)
pub(crate) fn peers_of(at: usize, count: usize) -> Vec<usize> {
    if count.saturating_sub(1) <= PEERS {
        return (1..count).map(|i| (at + i) % count).collect();
    }
    let mut rng = Rng::new(at as u64);
    let mut chosen = HashSet::with_capacity(PEERS);
    let mut peers = Vec::with_capacity(PEERS);
    while peers.len() < PEERS {
        let peer = rng.below(count as u64) as usize;
        if peer != at && chosen.insert(peer) {
            peers.push(peer);
        }
    }
    peers
}

/// The names in `set`, in turn from the one after `last` (round to the first again).
fn in_turn<'a>(set: &'a BTreeSet<String>, last: Option<&str>) -> impl Iterator<Item = &'a String> {
    let after = last.map_or(Bound::Unbounded, Bound::Excluded);
    (set.range::<str, _>((after, Bound::Unbounded)))
        .chain(set.iter())
        .take(set.len())
}

/// How many nodes an ask is passed on to in a round, before it is back at home.
pub(crate) const MAX_TRIES: usize = 3;

/// How long a node that refused an ask is passed over (unless no other fits).
pub(crate) const REFUSED_FOR: Duration = Duration::from_millis(100);

/// How long a passed-on ask waits for its answer before it counts refused (the peer may be
/// unreachable: its frames are lost).
pub(crate) const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// What a node's pool could grant another node's owners now (see the module's docs).
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Room {
    /// The resources free for leases.
    pub(crate) free: Resources,
    /// How many more workers it could lease.
    pub(crate) workers: u32,
}

impl Room {
    /// Whether an ask of `shape` fits.
    pub(crate) fn fits(&self, shape: &Resources) -> bool {
        self.workers > 0 && shape.fits_in(&self.free)
    }

    /// Less an ask of `shape` (as the asking node counts what it offered).
    pub(crate) fn take(&mut self, shape: &Resources) {
        self.free.subtract(shape);
        self.workers = self.workers.saturating_sub(1);
    }

    /// Whether no ask fits at all.
    fn is_full(&self) -> bool {
        self.workers == 0 || self.free.iter().next().is_none()
    }

    /// Whether a node that thinks this pool has `thought` is to hear that it has `self`:
    /// when it has more of something than thought (asks could come that wait at home), or
    /// none left while some is thought (asks would come only to be refused). Less room than
    /// thought that still takes asks goes untold: those it cannot take are refused, and a
    /// refusal is followed by the room as it is.
    pub(crate) fn news_to(&self, thought: &Room) -> bool {
        let more = self.workers > thought.workers || !self.free.fits_in(&thought.free);
        more || (self.is_full() && !thought.is_full())
    }
}

/// How often at most a pool tells one node that it has more room than that node thinks
/// (none left, and the room after a refusal, are told at once): a busy node whose CPU frees
/// and is taken by its own owners a moment later would otherwise announce each such moment
/// and draw asks it then refuses.
pub(crate) const ROOM_PACE: Duration = Duration::from_millis(3);

/// What a node that asked this pool thinks of its room, and when it was last told.
#[derive(Debug, Clone, Default)]
pub(crate) struct Told {
    /// What it was told less the asks it sent since (`None`: to be told at once, as after a
    /// refusal).
    thought: Option<Room>,
    /// When it was last told.
    at: Option<Instant>,
    /// More room is news to it, held back until [`ROOM_PACE`] after `at`.
    held: bool,
}

impl Told {
    /// It sent an ask of `shape`: it counts it off what it thinks.
    pub(crate) fn asked(&mut self, shape: &Resources) {
        if let Some(thought) = &mut self.thought {
            thought.take(shape);
        }
    }

    /// It was refused an ask: it hears the room as it is at once.
    pub(crate) fn refused(&mut self) {
        self.thought = None;
    }

    /// What to tell it at `now`, when the pool has `room`: news to it ([`Room::news_to`]) at
    /// once when it is to hear at once or none is left, more room at most once per
    /// [`ROOM_PACE`] (held back till then, [`Told::due`]).
    pub(crate) fn tell(&mut self, room: &Room, now: Instant) -> Option<Room> {
        let Some(thought) = &self.thought else {
            return Some(self.told(room, now));
        };
        if !room.news_to(thought) {
            self.held = false;
            return None;
        }
        let paced = self.at.is_some_and(|at| now < at + ROOM_PACE);
        if paced && !room.is_full() {
            self.held = true;
            return None;
        }
        Some(self.told(room, now))
    }

    fn told(&mut self, room: &Room, now: Instant) -> Room {
        self.thought = Some(room.clone());
        self.at = Some(now);
        self.held = false;
        room.clone()
    }

    /// When the room held back from it is due.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.at.filter(|_| self.held).map(|at| at + ROOM_PACE)
    }
}

/// An ask passed on to another node, not yet answered.
#[derive(Debug)]
struct Passed {
    owner: u64,
    shape: Resources,
    /// The node it waits at.
    at: String,
    /// Since when it waits there.
    since: Instant,
    /// The nodes it was passed to, in order.
    tried: Vec<String>,
    /// The owner gave it back meanwhile: a grant goes straight back.
    withdrawn: bool,
    /// Offered there at once ([`Spill::offer`]) while it keeps its place at home: refused,
    /// it goes back there.
    from_home: bool,
    /// Asked there first, where its task's arguments are ([`Spill::offer_near`]): refused,
    /// it is asked of this node's pool.
    near: bool,
}

/// Where an ask goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// To this node's pool.
    Peer(String),
    /// Back to its place in this node's pool (an ask offered at once was refused, or every
    /// node it was passed to).
    Home,
    /// To this node's pool, as a new ask (one asked first of the node near its arguments,
    /// refused there).
    Ask,
}

/// What a grant from another node means here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Grant {
    /// The owner is told: the lease is on that node's worker.
    Tell { at: String },
    /// Nobody wants it (withdrawn, or not known here): give it back there.
    GiveBack,
}

/// What an owner's give-back or force-cancel of lease `key` is, here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Held {
    /// A lease on that node: tell it.
    At(String),
    /// An ask still on its way: done here (a grant goes back when it comes).
    Withdrawn,
}

/// What a node's leaving the job ends (see [`Spill::peers_changed`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Left {
    /// Leases granted there to owners here: (owner, key, the node's address), to end.
    pub(crate) ended: Vec<(u64, TaskId, String)>,
    /// Asks waiting there: (owner, key, shape, where they go next).
    pub(crate) again: Vec<(u64, TaskId, Resources, Next)>,
    /// Owners there that hold leases here: their leased workers go.
    pub(crate) owners: Vec<u64>,
}

/// A job's spillback books on one node (see the module's docs).
#[derive(Debug, Default)]
pub(crate) struct Spill {
    /// The job's other nodes: peer address to resources in total.
    peers: BTreeMap<String, Resources>,
    /// Where the last pass went (the next starts after it).
    last: Option<String>,
    /// Nodes that refused an ask lately, and when.
    refused: HashMap<String, Instant>,
    /// Asks passed on and not yet answered, by key.
    passed: HashMap<TaskId, Passed>,
    /// Leases other nodes granted to owners here: key to (owner, node).
    afar: HashMap<TaskId, (u64, String)>,
    /// Owners on other nodes that asked this node: owner to its node's address.
    owners: HashMap<u64, String>,
    /// The room each node said it has, less what was offered there since; a node not in it
    /// is thought to have its whole resources free (and workers without end).
    rooms: HashMap<String, Room>,
    /// The nodes in `rooms` thought to have some room, and the nodes not in it (not heard
    /// from, nothing offered there yet): what an offer looks through, the first before the
    /// second, so that a large job's full nodes cost it nothing and its asks go to nodes
    /// known to have room (its binary, its workers) before they spread to new ones.
    roomy: BTreeSet<String>,
    unheard: BTreeSet<String>,
    /// Nodes known to have the job's binary (they granted an ask of this node's, so its
    /// workers run there), and how many nodes this one sent to fetch it there.
    holders: BTreeMap<String, usize>,
    /// How many nodes this one let fetch the binary from itself.
    serves: usize,
    /// Where each node asked and not yet known to have the binary was told to fetch it from
    /// (`None`: here): its next asks name the same (it fetches once).
    fetches_from: BTreeMap<String, Option<String>>,
}

impl Spill {
    /// The job's other nodes changed: `joined` (address, resources in total) and `left`. What
    /// the nodes that left held of this node's, and this node of theirs, ends.
    pub(crate) fn peers_changed(
        &mut self,
        joined: Vec<(String, Resources)>,
        left: &[String],
        now: Instant,
    ) -> Left {
        let names: Vec<String> = joined.iter().map(|(at, _)| at.clone()).collect();
        self.peers.extend(joined);
        for at in &names {
            self.index(at);
        }
        let mut out = Left::default();
        for gone in left {
            self.peers.remove(gone);
            self.refused.remove(gone);
            self.rooms.remove(gone);
            self.index(gone);
            self.holders.remove(gone);
            self.fetches_from.remove(gone);
        }
        let gone = |at: &String| left.contains(at);
        let ended: Vec<TaskId> = (self.afar.iter())
            .filter(|(_, (_, at))| gone(at))
            .map(|(key, _)| *key)
            .collect();
        for key in ended {
            let (owner, at) = self.afar.remove(&key).expect("listed");
            out.ended.push((owner, key, at));
        }
        let waiting: Vec<TaskId> = (self.passed.iter())
            .filter(|(_, p)| gone(&p.at))
            .map(|(key, _)| *key)
            .collect();
        for key in waiting {
            if let Some(again) = self.refused(key, now) {
                out.again.push(again);
            }
        }
        out.owners = (self.owners.iter())
            .filter(|(_, at)| gone(at))
            .map(|(owner, _)| *owner)
            .collect();
        for owner in &out.owners {
            self.owners.remove(owner);
        }
        out.ended
            .sort_unstable_by_key(|(owner, key, _)| (*owner, *key));
        out.again
            .sort_unstable_by_key(|(owner, key, ..)| (*owner, *key));
        out.owners.sort_unstable();
        out
    }

    /// Owner `owner`'s ask `key` for `shape`, which this node cannot grant, at `now`: the
    /// node to pass it on to, or `None` when no other node of the job fits it.
    pub(crate) fn pass(
        &mut self,
        (owner, key, shape): (u64, TaskId, &Resources),
        now: Instant,
    ) -> Option<String> {
        let at = self.pick(shape, &[], now)?;
        self.passing((owner, key, shape), &at, false, now);
        Some(at)
    }

    /// Notes ask `key` passed to node `at` at `now` (`from_home`: see [`Passed`]).
    fn passing(
        &mut self,
        (owner, key, shape): (u64, TaskId, &Resources),
        at: &str,
        from_home: bool,
        now: Instant,
    ) {
        let passed = Passed {
            owner,
            shape: shape.clone(),
            at: at.to_string(),
            since: now,
            tried: vec![at.to_string()],
            withdrawn: false,
            from_home,
            near: false,
        };
        self.passed.insert(key, passed);
    }

    /// Owner `owner`'s ask `key` for `shape`, near its arguments on node `at`, at `now`:
    /// whether it goes there first (`at` is another node of the job whose resources fit it),
    /// before this node's pool sees it. It goes even to a node thought full: what that node
    /// last said of its room may be older than the lease that made the arguments there and
    /// has just been given back, and a refusal costs a round trip where a pull of the
    /// arguments costs their bytes. The room thought there shrinks by it.
    pub(crate) fn offer_near(
        &mut self,
        at: &str,
        (owner, key, shape): (u64, TaskId, &Resources),
        now: Instant,
    ) -> bool {
        let fits = self.peers.get(at).is_some_and(|total| shape.fits_in(total));
        if !fits || self.passed.contains_key(&key) {
            return false;
        }
        if let Some(room) = self.rooms.get_mut(at) {
            room.take(shape);
            self.index(at);
        }
        self.passing((owner, key, shape), at, false, now);
        if let Some(passed) = self.passed.get_mut(&key) {
            passed.near = true;
        }
        true
    }

    /// Owner `owner`'s ask `key` for `shape`, waiting at this node at `now`: the next node in
    /// turn thought to have room for it (it said so, or was not heard from yet and its
    /// resources in total fit), if any, which it is offered to at once (the room thought
    /// there shrinks by it); it keeps its place here meanwhile.
    pub(crate) fn offer(
        &mut self,
        (owner, key, shape): (u64, TaskId, &Resources),
        now: Instant,
    ) -> Option<String> {
        if self.passed.contains_key(&key) {
            return None;
        }
        let last = self.last.as_deref();
        let known = (in_turn(&self.roomy, last))
            .find(|at| self.rooms.get(*at).is_some_and(|room| room.fits(shape)));
        let new = || {
            (in_turn(&self.unheard, last)).find(|at| {
                self.peers
                    .get(*at)
                    .is_some_and(|total| shape.fits_in(total))
            })
        };
        let at = known.or_else(new)?.clone();
        let total = self.peers[&at].clone();
        let room = (self.rooms.entry(at.clone())).or_insert(Room {
            free: total,
            workers: u32::MAX,
        });
        room.take(shape);
        self.index(&at);
        self.last = Some(at.clone());
        self.passing((owner, key, shape), &at, true, now);
        Some(at)
    }

    /// Owner `owner`'s ask `key` for `shape`, for node `to`: naming where it fetches the job's
    /// binary from if it lacks it ([`Spill::binary_source`]).
    pub(crate) fn ask_to(
        &mut self,
        to: &str,
        (owner, key, shape): (u64, TaskId, Resources),
    ) -> PeerLease {
        let binary_from = self.binary_source(to);
        PeerLease::Ask {
            owner,
            key,
            shape,
            binary_from,
            near: false,
        }
    }

    /// Where node `to`, asked for a lease, is to fetch the job's binary from if it lacks it:
    /// `None` for this node (or when `to` has it), else the node known to have it that was
    /// named least so far, if fewer times than this node served it (each source serving its
    /// share, so that the binary spreads as a tree).
    pub(crate) fn binary_source(&mut self, to: &str) -> Option<String> {
        if self.holders.contains_key(to) {
            return None;
        }
        if let Some(named) = self.fetches_from.get(to) {
            return named.clone();
        }
        let least = (self.holders.iter_mut())
            .filter(|(at, _)| at.as_str() != to)
            .min_by_key(|(at, named)| (**named, at.as_str()));
        let named = match least {
            Some((at, named)) if *named < self.serves => {
                *named += 1;
                Some(at.clone())
            }
            _ => {
                self.serves += 1;
                None
            }
        };
        self.fetches_from.insert(to.to_string(), named.clone());
        named
    }

    /// Node `from` said what room it has for this node's asks.
    pub(crate) fn room(&mut self, from: &str, room: Room) {
        if self.peers.contains_key(from) {
            self.rooms.insert(from.to_string(), room);
            self.index(from);
        }
    }

    /// Files node `at` under `roomy` or `unheard` as `peers` and `rooms` now have it (in
    /// neither when it left, or is thought full).
    fn index(&mut self, at: &str) {
        self.roomy.remove(at);
        self.unheard.remove(at);
        if !self.peers.contains_key(at) {
            return;
        }
        match self.rooms.get(at) {
            None => self.unheard.insert(at.to_string()),
            Some(room) if !room.is_full() => self.roomy.insert(at.to_string()),
            Some(_) => false,
        };
    }

    /// The job's other nodes, in turn from where the last pass ended, with their resources
    /// in total.
    fn in_turn(&self) -> impl Iterator<Item = (&String, &Resources)> {
        let after = match &self.last {
            Some(last) => Bound::Excluded(last.as_str()),
            None => Bound::Unbounded,
        };
        (self.peers.range::<str, _>((after, Bound::Unbounded)))
            .chain(self.peers.iter())
            .take(self.peers.len())
    }

    /// The next node in turn whose total fits `shape`, not in `tried`; one that refused
    /// lately only when no other fits.
    fn pick(&mut self, shape: &Resources, tried: &[String], now: Instant) -> Option<String> {
        let mut fallback = None;
        let mut chosen = None;
        for (at, total) in self.in_turn() {
            if tried.contains(at) || !shape.fits_in(total) {
                continue;
            }
            let lately = (self.refused.get(at)).is_some_and(|t| now < *t + REFUSED_FOR);
            if !lately {
                chosen = Some(at.clone());
                break;
            }
            fallback.get_or_insert_with(|| at.clone());
        }
        let at = chosen.or(fallback)?;
        self.last = Some(at.clone());
        Some(at)
    }

    /// Node `from` refused ask `key` at `now` (or did not answer it, or left): where it goes
    /// next, with its owner and shape; `None` when it is not waiting here (withdrawn
    /// asks end here).
    pub(crate) fn refused(
        &mut self,
        key: TaskId,
        now: Instant,
    ) -> Option<(u64, TaskId, Resources, Next)> {
        let mut passed = self.passed.remove(&key)?;
        self.refused.insert(passed.at.clone(), now);
        if passed.withdrawn {
            return None;
        }
        if passed.near || passed.from_home {
            // Full there until it says otherwise (its word follows its refusal).
            self.rooms.insert(passed.at.clone(), Room::default());
            self.index(&passed.at);
            let next = if passed.near { Next::Ask } else { Next::Home };
            return Some((passed.owner, key, passed.shape, next));
        }
        let next = match passed.tried.len() < MAX_TRIES {
            true => self.pick(&passed.shape, &passed.tried, now),
            false => None,
        };
        let Some(at) = next else {
            return Some((passed.owner, key, passed.shape, Next::Home));
        };
        passed.tried.push(at.clone());
        passed.at = at.clone();
        passed.since = now;
        let (owner, shape) = (passed.owner, passed.shape.clone());
        self.passed.insert(key, passed);
        Some((owner, key, shape, Next::Peer(at)))
    }

    /// Node `from` granted ask `key` of owner `owner`.
    pub(crate) fn granted(&mut self, owner: u64, key: TaskId, from: &str) -> Grant {
        let known = self.passed.get(&key).is_some_and(|p| p.owner == owner);
        if !known {
            return Grant::GiveBack;
        }
        let passed = self.passed.remove(&key).expect("checked");
        self.refused.remove(&passed.at);
        // It runs the job's workers: it has the binary for others to fetch.
        self.holders.entry(from.to_string()).or_insert(0);
        self.fetches_from.remove(from);
        if passed.withdrawn {
            return Grant::GiveBack;
        }
        // The address the driver named it by, which the owner's pushes name.
        let at = match passed.at == from {
            true => passed.at,
            false => from.to_string(),
        };
        self.afar.insert(key, (owner, at.clone()));
        Grant::Tell { at }
    }

    /// Owner `owner` gives lease `key` back or withdraws its ask (or cancels a task under it
    /// by force): what it is here, if it is this node's to pass on.
    pub(crate) fn give_back(&mut self, owner: u64, key: TaskId) -> Option<Held> {
        if let Some(passed) = self.passed.get_mut(&key).filter(|p| p.owner == owner) {
            passed.withdrawn = true;
            return Some(Held::Withdrawn);
        }
        let (holder, _) = self.afar.get(&key)?;
        if *holder != owner {
            return None;
        }
        let (_, at) = self.afar.remove(&key).expect("checked");
        Some(Held::At(at))
    }

    /// Where owner `owner`'s lease `key` is, if on another node (a force-cancel goes there;
    /// the lease stays).
    pub(crate) fn lease_at(&self, owner: u64, key: TaskId) -> Option<&str> {
        (self.afar.get(&key))
            .filter(|(holder, _)| *holder == owner)
            .map(|(_, at)| at.as_str())
    }

    /// The node that granted lease `key` ended it: true when the owner is to hear it (an
    /// ask still waiting there, whose worker could not start, counts refused instead:
    /// `false` then, and [`Spill::refused`] says where it goes).
    pub(crate) fn ended(&mut self, owner: u64, key: TaskId) -> bool {
        let known = self.afar.get(&key).is_some_and(|(o, _)| *o == owner);
        if known {
            self.afar.remove(&key);
        }
        known
    }

    /// Whether ask `key` waits for another node's answer.
    #[cfg(test)]
    pub(crate) fn waits(&self, key: TaskId) -> bool {
        self.passed.contains_key(&key)
    }

    /// Owner `owner` here died: the nodes that hold leases of its (or its asks), to tell.
    pub(crate) fn owner_gone(&mut self, owner: u64) -> Vec<String> {
        let mut nodes: Vec<String> = Vec::new();
        self.afar.retain(|_, (holder, at)| {
            let mine = *holder == owner;
            if mine && !nodes.contains(at) {
                nodes.push(at.clone());
            }
            !mine
        });
        for passed in self.passed.values_mut().filter(|p| p.owner == owner) {
            passed.withdrawn = true;
            if !nodes.contains(&passed.at) {
                nodes.push(passed.at.clone());
            }
        }
        nodes.sort();
        nodes
    }

    /// Whether owner `owner` here holds leases on other nodes or has asks out there (it
    /// stays, idle or not: the ends of its tasks come to it).
    pub(crate) fn owns_work(&self, owner: u64) -> bool {
        self.afar.values().any(|(o, _)| *o == owner)
            || self
                .passed
                .values()
                .any(|p| p.owner == owner && !p.withdrawn)
    }

    /// Owner `owner` on node `from` asked this node for a lease: its grants and ends go
    /// there.
    pub(crate) fn took(&mut self, owner: u64, from: &str) {
        self.owners.insert(owner, from.to_string());
    }

    /// The node of owner `owner`, when it is another node's.
    pub(crate) fn owner_at(&self, owner: u64) -> Option<&str> {
        self.owners.get(&owner).map(String::as_str)
    }

    /// Owner `owner`, on another node, died (its workers here go).
    pub(crate) fn forget_owner(&mut self, owner: u64) {
        self.owners.remove(&owner);
    }

    /// The asks passed on at least [`ANSWER_WITHIN`] before `now` without an answer: each
    /// counts refused, and where it goes next.
    pub(crate) fn unanswered(&mut self, now: Instant) -> Vec<(u64, TaskId, Resources, Next)> {
        let mut late: Vec<TaskId> = (self.passed.iter())
            .filter(|(_, p)| now >= p.since + ANSWER_WITHIN)
            .map(|(key, _)| *key)
            .collect();
        late.sort_unstable();
        late.into_iter()
            .filter_map(|key| self.refused(key, now))
            .collect()
    }

    /// When [`Spill::unanswered`] next has something to do.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.passed.values().map(|p| p.since + ANSWER_WITHIN).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(n: u32) -> Resources {
        Resources::cpus(f64::from(n)).expect("a valid amount")
    }

    fn three(now: Instant) -> Spill {
        let mut spill = Spill::default();
        let joined = vec![
            ("b".to_string(), cpus(2)),
            ("c".to_string(), cpus(2)),
            ("d".to_string(), cpus(1)),
        ];
        assert_eq!(spill.peers_changed(joined, &[], now), Left::default());
        spill
    }

    #[test]
    fn a_node_s_peers_are_all_others_in_a_small_cluster_and_spread_in_a_large_one() {
        let of = |at, count| peers_of(at, count);
        assert_eq!(of(0, 1), Vec::<usize>::new());
        assert_eq!(of(1, 3), [2, 0]);
        assert_eq!(
            of(5, PEERS + 1),
            (6..=PEERS).chain(0..5).collect::<Vec<_>>()
        );
        for count in [PEERS + 2, 1000, 5000] {
            for at in [0, 1, count / 2, count - 1] {
                let peers = of(at, count);
                let distinct: std::collections::BTreeSet<usize> = peers.iter().copied().collect();
                assert_eq!(
                    (peers.len(), distinct.len()),
                    (PEERS, PEERS),
                    "{at} of {count}"
                );
                assert!(!distinct.contains(&at), "{at} of {count}");
            }
        }
        // Neighbours share what chance gives (PEERS² / 1000, about 66), not the same list; the
        // peers reach across the list; the same each time.
        let (zero, one) = (of(0, 1000), of(1, 1000));
        let shared = zero.iter().filter(|p| one.contains(p)).count();
        assert!(shared < PEERS / 2, "{shared} shared");
        assert!(zero.iter().max() > Some(&900) && zero.iter().min() < Some(&100));
        assert_eq!(zero, of(0, 1000));
    }

    #[test]
    fn asks_go_to_the_nodes_in_turn_that_fit_and_after_refusals_back_home() {
        let t0 = Instant::now();
        let mut spill = three(t0);
        let key = |seq| TaskId::new(7, seq);
        assert_eq!(spill.pass((7, key(1), &cpus(2)), t0).as_deref(), Some("b"));
        assert_eq!(spill.pass((7, key(2), &cpus(2)), t0).as_deref(), Some("c"));
        assert_eq!(spill.pass((7, key(3), &cpus(1)), t0).as_deref(), Some("d"));
        // Nothing has three CPUs.
        assert_eq!(spill.pass((7, key(4), &cpus(3)), t0), None);
        // b refuses: the ask tries c, then (d too small) it is back at home.
        let next = spill.refused(key(1), t0);
        assert_eq!(next, Some((7, key(1), cpus(2), Next::Peer("c".into()))));
        assert_eq!(
            spill.refused(key(1), t0),
            Some((7, key(1), cpus(2), Next::Home))
        );
        assert!(!spill.waits(key(1)));
        // b and c refused lately: new asks go to d; to b and c only when nothing else fits.
        assert_eq!(spill.pass((7, key(5), &cpus(1)), t0).as_deref(), Some("d"));
        assert_eq!(spill.pass((7, key(6), &cpus(1)), t0).as_deref(), Some("d"));
        assert_eq!(spill.pass((7, key(7), &cpus(2)), t0).as_deref(), Some("b"));
        // A grant clears its node's refusal.
        assert_eq!(
            spill.granted(7, key(7), "b"),
            Grant::Tell { at: "b".into() }
        );
        assert_eq!(spill.pass((7, key(8), &cpus(2)), t0).as_deref(), Some("b"));
        let later = t0 + REFUSED_FOR;
        assert_eq!(
            spill.pass((7, key(9), &cpus(1)), later).as_deref(),
            Some("c")
        );
    }

    #[test]
    fn a_pool_tells_more_room_than_thought_and_none_left_but_not_less() {
        let room = |free: u32, workers| Room {
            free: cpus(free),
            workers,
        };
        let thought = room(2, 3);
        // More CPUs or workers than thought: news.
        assert!(room(3, 3).news_to(&thought));
        assert!(room(2, 4).news_to(&thought));
        // Less that still takes asks: not news (what it cannot take it refuses, then tells).
        assert!(!room(1, 3).news_to(&thought));
        assert!(!room(2, 3).news_to(&thought));
        // None left: news, once.
        assert!(room(0, 3).news_to(&thought));
        assert!(room(2, 0).news_to(&thought));
        assert!(!room(0, 0).news_to(&room(0, 5)));
        // A custom resource it did not have counts as more.
        let mut gpu = room(2, 3);
        gpu.free.gpu = prism_graph::Amount::from_f64(1.0).expect("one");
        assert!(gpu.news_to(&thought));
        // What the asking node counts off for each ask.
        let mut counted = room(2, 1);
        counted.take(&cpus(1));
        assert_eq!(counted, room(1, 0));
    }

    #[test]
    fn more_room_is_told_once_per_pace_none_left_and_after_a_refusal_at_once() {
        let room = |free: u32, workers| Room {
            free: cpus(free),
            workers,
        };
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut told = Told::default();
        // Its first ask: it hears the room at once.
        assert_eq!(told.tell(&room(1, 1), t0), Some(room(1, 1)));
        assert_eq!(told.due(), None);
        // It asks, and counts it off; the CPU comes back within the pace: held back.
        told.asked(&cpus(1));
        assert_eq!(told.tell(&room(1, 1), ms(1)), None);
        assert_eq!(told.due(), Some(t0 + ROOM_PACE));
        // Taken again before it was due: nothing to tell, nothing held.
        assert_eq!(told.tell(&room(0, 0), ms(2)), None);
        assert_eq!(told.due(), None);
        // Free again, and still so once due: told then.
        assert_eq!(told.tell(&room(2, 1), ms(2)), None);
        assert_eq!(told.tell(&room(2, 1), t0 + ROOM_PACE), Some(room(2, 1)));
        assert_eq!(told.due(), None);
        // None left is told at once, whatever the pace.
        assert_eq!(told.tell(&room(0, 0), ms(4)), Some(room(0, 0)));
        // After a refusal it hears the room as it is at once, even when it is no more.
        told.refused();
        assert_eq!(told.tell(&room(0, 0), ms(5)), Some(room(0, 0)));
        // More room long after the last word: at once.
        assert_eq!(told.tell(&room(1, 1), ms(100)), Some(room(1, 1)));
    }

    #[test]
    fn asks_go_at_once_to_nodes_not_heard_from_whose_total_fits() {
        let t0 = Instant::now();
        let mut spill = three(t0);
        let key = |seq| TaskId::new(7, seq);
        // Thought free: b and c take two asks of a CPU each, d one; then none is left. A
        // node offered an ask is known to have room for the next before a new one is tried.
        let offered: Vec<Option<String>> = (1..=6)
            .map(|seq| spill.offer((7, key(seq), &cpus(1)), t0))
            .collect();
        let some = |at: &str| Some(at.to_string());
        assert_eq!(
            offered,
            [some("b"), some("b"), some("c"), some("c"), some("d"), None]
        );
        // Nothing fits three CPUs.
        assert_eq!(spill.offer((7, key(7), &cpus(3)), t0), None);
    }

    #[test]
    fn asks_go_at_once_to_nodes_that_said_they_have_room_and_come_home_when_refused() {
        let t0 = Instant::now();
        let mut spill = three(t0);
        let key = |seq| TaskId::new(7, seq);
        let room = |free: u32, workers| Room {
            free: cpus(free),
            workers,
        };
        // b said it is full, c has room for one worker, d for one CPU; a stranger's word
        // counts for nothing.
        spill.room("b", room(0, 3));
        spill.room("c", room(2, 1));
        spill.room("d", room(1, 4));
        spill.room("z", room(8, 8));
        assert_eq!(spill.offer((7, key(1), &cpus(1)), t0).as_deref(), Some("c"));
        assert!(spill.waits(key(1)));
        // Offered once at a time.
        assert_eq!(spill.offer((7, key(1), &cpus(1)), t0), None);
        assert_eq!(spill.offer((7, key(2), &cpus(2)), t0), None);
        assert_eq!(spill.offer((7, key(3), &cpus(1)), t0).as_deref(), Some("d"));
        // What was offered is not thought free any more.
        assert_eq!(spill.offer((7, key(4), &cpus(1)), t0), None);
        // d refuses: the ask goes back to its place at home, d thought full until it says.
        assert_eq!(
            spill.refused(key(3), t0),
            Some((7, key(3), cpus(1), Next::Home))
        );
        assert_eq!(spill.offer((7, key(3), &cpus(1)), t0), None);
        spill.room("d", room(1, 4));
        assert_eq!(spill.offer((7, key(3), &cpus(1)), t0).as_deref(), Some("d"));
        // A grant is told like any other; a withdrawn one given back.
        assert_eq!(
            spill.granted(7, key(1), "c"),
            Grant::Tell { at: "c".into() }
        );
        assert_eq!(spill.give_back(7, key(3)), Some(Held::Withdrawn));
        assert_eq!(spill.refused(key(3), t0), None);
        // An ask offered to a node that leaves goes home; so does one never answered.
        spill.room("b", room(2, 2));
        assert_eq!(spill.offer((7, key(5), &cpus(1)), t0).as_deref(), Some("b"));
        spill.room("d", room(1, 4));
        assert_eq!(spill.offer((7, key(6), &cpus(1)), t0).as_deref(), Some("d"));
        let left = spill.peers_changed(Vec::new(), &["b".to_string()], t0);
        assert_eq!(left.again, vec![(7, key(5), cpus(1), Next::Home)]);
        assert_eq!(
            spill.unanswered(t0 + ANSWER_WITHIN),
            vec![(7, key(6), cpus(1), Next::Home)]
        );
        spill.room("b", room(2, 2));
        assert_eq!(spill.offer((7, key(7), &cpus(1)), t0), None, "b left");
    }

    #[test]
    fn the_binary_is_fetched_from_the_nodes_that_have_it_in_turn_with_this_one() {
        let t0 = Instant::now();
        let mut spill = three(t0);
        // Nobody else is known to have it: this node serves it.
        assert_eq!(spill.binary_source("b"), None);
        // b granted an ask: it runs the job's workers, so it has it.
        assert_eq!(
            spill.pass((7, TaskId::new(7, 1), &cpus(1)), t0).as_deref(),
            Some("b")
        );
        assert_eq!(
            spill.granted(7, TaskId::new(7, 1), "b"),
            Grant::Tell { at: "b".into() }
        );
        // b and this node take turns; a node asked again is told the same (it fetches once);
        // b itself needs no fetch.
        let named: Vec<Option<String>> = ["c", "d", "c", "d", "b"]
            .into_iter()
            .map(|to| spill.binary_source(to))
            .collect();
        let b = Some("b".to_string());
        assert_eq!(named, [b.clone(), None, b.clone(), None, None]);
        // Once c granted an ask (so it has it), c serves the next node, before b (named once).
        assert_eq!(
            spill.pass((7, TaskId::new(7, 2), &cpus(1)), t0).as_deref(),
            Some("c")
        );
        assert_eq!(
            spill.granted(7, TaskId::new(7, 2), "c"),
            Grant::Tell { at: "c".into() }
        );
        spill.peers_changed(vec![("e".to_string(), cpus(1))], &[], t0);
        assert_eq!(spill.binary_source("e").as_deref(), Some("c"));
        // A node that left serves no more.
        spill.peers_changed(Vec::new(), &["b".to_string(), "c".to_string()], t0);
        assert_eq!(spill.binary_source("f"), None);
    }

    /// Owner 7's asks 1 and 2 passed on to b and c, and b granted the first.
    fn two_passed_one_granted_on_b() -> (Spill, TaskId, TaskId) {
        let t0 = Instant::now();
        let mut spill = three(t0);
        let (k1, k2) = (TaskId::new(7, 1), TaskId::new(7, 2));
        assert_eq!(spill.pass((7, k1, &cpus(1)), t0).as_deref(), Some("b"));
        assert_eq!(spill.pass((7, k2, &cpus(1)), t0).as_deref(), Some("c"));
        assert_eq!(spill.granted(7, k1, "b"), Grant::Tell { at: "b".into() });
        (spill, k1, k2)
    }

    #[test]
    fn a_grant_is_told_to_its_owner_or_given_back_when_nobody_wants_it() {
        let (mut spill, k1, k2) = two_passed_one_granted_on_b();
        assert_eq!(spill.lease_at(7, k1), Some("b"));
        assert!(spill.owns_work(7) && !spill.owns_work(8));
        assert_eq!(spill.lease_at(8, k1), None);
        // Another owner's grant under the same key, or a second grant, is not wanted.
        assert_eq!(spill.granted(8, k2, "c"), Grant::GiveBack);
        assert_eq!(spill.granted(7, k1, "b"), Grant::GiveBack);
        // Withdrawn while on its way: given back when it comes.
        assert_eq!(spill.give_back(7, k2), Some(Held::Withdrawn));
        assert_eq!(spill.granted(7, k2, "c"), Grant::GiveBack);
        assert_eq!(spill.give_back(7, k1), Some(Held::At("b".into())));
        assert_eq!(spill.give_back(7, k1), None);
    }

    #[test]
    fn a_node_that_leaves_ends_the_leases_there_and_sends_its_asks_on() {
        let t0 = Instant::now();
        let mut spill = three(t0);
        let (k1, k2, k3) = (TaskId::new(7, 1), TaskId::new(7, 2), TaskId::new(8, 1));
        spill.pass((7, k1, &cpus(1)), t0);
        spill.pass((7, k2, &cpus(1)), t0);
        spill.pass((8, k3, &cpus(1)), t0);
        assert_eq!(spill.granted(7, k1, "b"), Grant::Tell { at: "b".into() });
        spill.took(40, "b");
        spill.took(41, "c");
        let left = spill.peers_changed(Vec::new(), &["b".to_string(), "c".to_string()], t0);
        assert_eq!(left.ended, vec![(7, k1, "b".to_string())]);
        assert_eq!(left.again, vec![(7, k2, cpus(1), Next::Peer("d".into()))]);
        assert_eq!(left.owners, vec![40, 41]);
        assert_eq!(spill.owner_at(40), None);
        // k3 waited at d: untouched. Unanswered, it counts refused: nothing else fits.
        assert!(spill.waits(k3));
        assert_eq!(spill.unanswered(t0), Vec::new());
        let late = spill.unanswered(t0 + ANSWER_WITHIN);
        assert_eq!(
            late,
            vec![(7, k2, cpus(1), Next::Home), (8, k3, cpus(1), Next::Home)]
        );
        assert_eq!(spill.next_due(), None);
    }

    #[test]
    fn a_dead_owner_s_leases_and_asks_elsewhere_are_told_and_its_grants_given_back() {
        let (mut spill, k1, k2) = two_passed_one_granted_on_b();
        assert_eq!(spill.owner_gone(7), vec!["b".to_string(), "c".to_string()]);
        assert_eq!(spill.granted(7, k2, "c"), Grant::GiveBack);
        assert!(!spill.ended(7, k1));
    }
}
