//! Collective communication among a group of actors (cargo feature `collective`), as Ray's
//! `ray.util.collective` and Horovod: allreduce (sum, mean, max, min), broadcast, allgather,
//! reduce-scatter and barrier on `f32` / `f64` buffers.
//!
//! The driver makes a [`Group`] of a name and a size and hands it to the members (actors or
//! tasks); each joins with its rank, then calls the collectives on its [`Communicator`]:
//!
//! ```ignore
//! let group = collective::Group::create("trainers", 4)?;
//! let trainers: Vec<_> = (0..4).map(|rank| Trainer::remote(group.clone(), rank)).collect();
//!
//! // inside Trainer::new(group: Group, rank: u32):
//! let mut comm = group.join(rank)?;
//! // every step:
//! comm.allreduce(&mut gradients, Op::Mean)?;
//! ```
//!
//! Members form a ring (those of one node next to each other) and every collective streams
//! through it chunk by chunk: reduce-scatter then allgather for an allreduce, so each member
//! sends and receives `2 (n - 1) / n` of the buffer whatever the group's size. Between members
//! of one node the links are shared-memory segments in the node's private session directory
//! (no socket, no copy beyond the one into the slot and the one out of it, which the reduction
//! itself does); between nodes they are direct QUIC connections under mutual TLS with a
//! certificate authority of the group's own, whose key only the group's members receive.
//!
//! A member that dies fails the collective in progress at its neighbours (within
//! [`NAP`](shm) on one node, within [`quic::GROUP_IDLE`](prism_transport::quic::GROUP_IDLE)
//! across nodes), and they pass the failure around the ring: every member gets a
//! [`CollectiveError::MemberFailed`] naming the dead rank, never a hang. The communicator stays
//! broken; re-form the group (a new [`Group`]) with the survivors to go on.

mod net;
mod ring;
mod shm;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use prism_transport::tls::ClusterAuthority;

use self::net::Net;
use self::ring::{Fault, Link, Ring};
use crate::ActorHandle;

/// How long [`Group::join`] waits for every member by default.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(120);

/// A reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The sum.
    Sum,
    /// The sum divided by the group's size.
    Mean,
    /// The largest value.
    Max,
    /// The smallest value.
    Min,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// An element type of collective buffers: `f32` or `f64`.
pub trait Element: sealed::Sealed + Copy + Send + Sync + PartialOrd + 'static {
    /// `dst[i] = dst[i] op src[i]` (`Mean` sums; the division comes once at the end).
    fn combine(op: Op, dst: &mut [Self], src: &[Self]);
    /// Divides every element by `n`.
    fn divide(values: &mut [Self], n: usize);
    /// Reads an element from its native-endian bytes.
    fn from_ne_slice(bytes: &[u8]) -> Self;
}

macro_rules! element {
    ($t:ty) => {
        impl Element for $t {
            fn combine(op: Op, dst: &mut [Self], src: &[Self]) {
                let pairs = dst.iter_mut().zip(src);
                match op {
                    Op::Sum | Op::Mean => pairs.for_each(|(d, s)| *d += *s),
                    Op::Max => pairs.for_each(|(d, s)| *d = d.max(*s)),
                    Op::Min => pairs.for_each(|(d, s)| *d = d.min(*s)),
                }
            }

            fn divide(values: &mut [Self], n: usize) {
                let n = n as $t;
                values.iter_mut().for_each(|v| *v /= n);
            }

            fn from_ne_slice(bytes: &[u8]) -> Self {
                <$t>::from_ne_bytes(bytes.try_into().expect("an element's bytes"))
            }
        }
    };
}
element!(f32);
element!(f64);

/// What went wrong in a group.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CollectiveError {
    /// A member died or failed during a collective (or an earlier one: the communicator stays
    /// broken).
    #[error("collective group {group}: {op} failed: rank {rank} failed: {reason}")]
    MemberFailed {
        /// The group.
        group: String,
        /// The collective.
        op: &'static str,
        /// The rank that failed.
        rank: u32,
        /// Why.
        reason: String,
    },
    /// A neighbour sent nothing within the communicator's timeout.
    #[error("collective group {group}: {op} timed out waiting for rank {rank}")]
    TimedOut {
        /// The group.
        group: String,
        /// The collective.
        op: &'static str,
        /// The rank waited for.
        rank: u32,
    },
    /// The call does not fit the group (buffer sizes, a root out of range).
    #[error("collective group {group}: {op}: {reason}")]
    Usage {
        /// The group.
        group: String,
        /// The collective.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Joining failed.
    #[error("collective group {group}: rank {rank} cannot join: {reason}")]
    Join {
        /// The group.
        group: String,
        /// The rank joining.
        rank: u32,
        /// Why.
        reason: String,
    },
    /// Making the group failed.
    #[error("cannot create collective group {group}: {reason}")]
    Create {
        /// The group.
        group: String,
        /// Why.
        reason: String,
    },
}

/// What a member tells the others when it joins.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MemberInfo {
    /// Its rank.
    pub rank: u32,
    /// Its node's object-store directory: members with the same one share memory.
    pub store_dir: String,
    /// Where its QUIC endpoint listens.
    pub addr: String,
    /// A number unique to this join (names its shared-memory inbox).
    pub nonce: u64,
    /// Its node's name (for messages).
    pub node: String,
    /// Its process (members of one node watch each other's).
    pub pid: u32,
    /// When its process started (with the pid, it names the process).
    pub started: u64,
}

/// Where the member that joined as `nonce` on the node with store `store_dir` takes its
/// shared-memory link from its left neighbour.
fn inbox_path(store_dir: &str, nonce: u64) -> PathBuf {
    PathBuf::from(store_dir).join(format!("collective-{nonce:016x}"))
}

/// The meeting point of a group's members: each registers, then reads the table until every
/// rank is in it.
#[crate::actor]
#[derive(Debug)]
pub struct Rendezvous {
    members: Vec<Option<MemberInfo>>,
}

#[crate::actor]
impl Rendezvous {
    /// A meeting point for `world` members.
    pub fn new(world: u32) -> Self {
        Rendezvous {
            members: vec![None; world as usize],
        }
    }

    /// Member `info.rank` is here (a rank that joins again replaces its entry).
    pub fn register(&mut self, info: MemberInfo) -> bool {
        match self.members.get_mut(info.rank as usize) {
            Some(slot) => {
                *slot = Some(info);
                true
            }
            None => false,
        }
    }

    /// The members so far, by rank.
    pub fn members(&self) -> Vec<Option<MemberInfo>> {
        self.members.clone()
    }
}

/// A collective group: its name, size, meeting point and certificate authority. Made by the
/// driver ([`Group::create`]), cloned into every member (an argument of an actor's constructor
/// or of a task), which then [`join`](Group::join)s with its rank.
///
/// The driver may drop its `Group` once it passed it to the members: the meeting point is an
/// actor, which the handles inside the members' arguments keep alive until they joined.
#[derive(Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Group {
    name: String,
    world: u32,
    /// Tells this group's connections from another's.
    tag: u64,
    ca_cert: String,
    ca_key: String,
    rendezvous: ActorHandle<Rendezvous>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.name)
            .field("world", &self.world)
            .finish_non_exhaustive()
    }
}

/// A number no other join or group is likely to have.
fn unique() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// The name in the subject of group `name`'s CA (its certificates name it as their issuer).
fn ca_name(name: &str, tag: u64) -> String {
    format!("group {name} {tag:x}")
}

impl Group {
    /// A group named `name` of `world` members (ranks `0..world`).
    pub fn create(name: &str, world: u32) -> Result<Group, CollectiveError> {
        let fail = |reason: String| CollectiveError::Create {
            group: name.to_string(),
            reason,
        };
        if world == 0 {
            return Err(fail("a group needs at least one member".into()));
        }
        let tag = unique();
        let ca = ClusterAuthority::create(&ca_name(name, tag)).map_err(|e| fail(e.to_string()))?;
        let (ca_cert, ca_key) = ca.to_pem();
        Ok(Group {
            name: name.to_string(),
            world,
            tag,
            ca_cert,
            ca_key,
            rendezvous: Rendezvous::remote(world),
        })
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many members it has.
    pub fn world_size(&self) -> u32 {
        self.world
    }

    /// Joins as rank `rank`, waiting (up to [`JOIN_TIMEOUT`]) for every other member; from a
    /// worker process (an actor or a task).
    pub fn join(&self, rank: u32) -> Result<Communicator, CollectiveError> {
        self.join_within(rank, JOIN_TIMEOUT)
    }

    /// [`Group::join`], waiting at most `timeout` for the others.
    pub fn join_within(
        &self,
        rank: u32,
        timeout: Duration,
    ) -> Result<Communicator, CollectiveError> {
        let fail = |reason: String| CollectiveError::Join {
            group: self.name.clone(),
            rank,
            reason,
        };
        if rank >= self.world {
            return Err(fail(format!("the group has ranks 0..{}", self.world)));
        }
        let deadline = Instant::now() + timeout;
        let store_dir = std::env::var(crate::process::ENV_STORE_DIR)
            .map_err(|_| fail("only a worker process (an actor or a task) can join".into()))?;
        let ca =
            ClusterAuthority::from_pem(&ca_name(&self.name, self.tag), &self.ca_cert, &self.ca_key)
                .map_err(|e| fail(e.to_string()))?;
        let identity = ca
            .issue(&format!("{} rank {rank}", self.name))
            .map_err(|e| fail(e.to_string()))?;
        let ip = std::env::var(crate::process::ENV_NODE_HOST)
            .ok()
            .and_then(|ip| ip.parse().ok())
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        let net = Net::new(ip, identity).map_err(fail)?;
        let me = MemberInfo {
            rank,
            store_dir: store_dir.clone(),
            addr: net.addr().to_string(),
            nonce: unique(),
            node: crate::node_name().unwrap_or_else(|| "local".into()),
            pid: std::process::id(),
            started: crate::process::start_time(std::process::id())
                .map_err(|e| fail(format!("cannot read its own start time: {e}")))?,
        };
        let registered = self
            .rendezvous
            .register(me.clone())
            .get_blocking()
            .map_err(|e| fail(format!("its meeting point failed: {e}")))?;
        if !registered {
            return Err(fail("its meeting point refused the rank".into()));
        }
        let members = self.wait_for_all(deadline).map_err(fail)?;
        // The ring: one node's members side by side, so only node boundaries cross the network.
        let mut rank_at: Vec<u32> = (0..self.world).collect();
        rank_at.sort_by(|&a, &b| {
            let (a, b) = (&members[a as usize], &members[b as usize]);
            (&a.store_dir, a.rank).cmp(&(&b.store_dir, b.rank))
        });
        let n = rank_at.len();
        let pos = rank_at.iter().position(|&r| r == rank).expect("a member");
        let left = &members[rank_at[(pos + n - 1) % n] as usize];
        let right = &members[rank_at[(pos + 1) % n] as usize];
        let mut comm = Communicator {
            links: None,
            net: None,
            group: self.name.clone(),
            rank,
            pos,
            rank_at,
            broken: None,
        };
        if n == 1 {
            return Ok(comm);
        }
        let link_fail = |fault: Fault, what: &str| {
            let (peer, reason) = fault.blame();
            fail(format!("{what} rank {peer}: {reason}"))
        };
        let left_time = deadline.saturating_duration_since(Instant::now());
        enum Incoming {
            Shm(shm::Inbox),
            Net(tokio::task::JoinHandle<Result<net::NetIn, Fault>>),
        }
        let incoming = if left.store_dir == store_dir {
            let peer = shm::Peer::of(left.pid, left.started);
            let inbox = shm::Inbox::create(inbox_path(&store_dir, me.nonce), left.rank, peer);
            Incoming::Shm(inbox.map_err(|e| fail(e.to_string()))?)
        } else {
            Incoming::Net(net.expect(self.tag, left.rank))
        };
        let mut uses_net = false;
        let out: Box<dyn Link + Send> = if right.store_dir == store_dir {
            let path = inbox_path(&store_dir, right.nonce);
            let peer = shm::Peer::of(right.pid, right.started);
            let outbox = shm::Outbox::open(&path, right.rank, peer, left_time)
                .map_err(|f| link_fail(f, "cannot reach"))?;
            Box::new(outbox)
        } else {
            let addr = right
                .addr
                .parse()
                .map_err(|e| fail(format!("rank {} gave no address: {e}", right.rank)))?;
            uses_net = true;
            Box::new(
                net.connect(addr, self.tag, rank, right.rank)
                    .map_err(|f| link_fail(f, "cannot connect to"))?,
            )
        };
        let left_time = deadline.saturating_duration_since(Instant::now());
        let inc: Box<dyn Link + Send> = match incoming {
            Incoming::Shm(mut inbox) => {
                inbox
                    .attached(left_time)
                    .map_err(|f| link_fail(f, "no link from"))?;
                Box::new(inbox)
            }
            Incoming::Net(expected) => {
                uses_net = true;
                let accepted = net.accepted(expected, left.rank, left_time);
                Box::new(accepted.map_err(|f| link_fail(f, "no link from"))?)
            }
        };
        comm.links = Some((out, inc));
        // A ring all on one node needs no network: its runtime and endpoint go.
        comm.net = uses_net.then_some(net);
        tracing::debug!(group = self.name, rank, pos, "joined a collective group");
        Ok(comm)
    }

    /// Polls the meeting point until every rank registered.
    fn wait_for_all(&self, deadline: Instant) -> Result<Vec<MemberInfo>, String> {
        let mut pause = Duration::from_millis(1);
        loop {
            let table = self
                .rendezvous
                .members()
                .get_blocking()
                .map_err(|e| format!("its meeting point failed: {e}"))?;
            if table.iter().all(Option::is_some) {
                return Ok(table.into_iter().flatten().collect());
            }
            if Instant::now() >= deadline {
                let missing: Vec<usize> =
                    (0..table.len()).filter(|&r| table[r].is_none()).collect();
                return Err(format!("ranks {missing:?} never joined"));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

/// A member's side of a group: the collectives. One call at a time (`&mut self`); every member
/// must make the same calls in the same order with buffers of the same sizes.
pub struct Communicator {
    // Links before the network: they drain their queues on drop, which needs its runtime.
    links: Option<(Box<dyn Link + Send>, Box<dyn Link + Send>)>,
    net: Option<Net>,
    group: String,
    rank: u32,
    pos: usize,
    /// The rank at each position of the ring (as many as the group has members).
    rank_at: Vec<u32>,
    broken: Option<CollectiveError>,
}

impl std::fmt::Debug for Communicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Communicator")
            .field("group", &self.group)
            .field("rank", &self.rank)
            .field("world", &self.world_size())
            .finish_non_exhaustive()
    }
}

impl Communicator {
    /// This member's rank.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// The group's size.
    pub fn world_size(&self) -> u32 {
        self.rank_at.len() as u32
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Fails a collective whose neighbour sends nothing for `timeout` with
    /// [`CollectiveError::TimedOut`] (none, the default: wait while the neighbours live; a dead
    /// one fails the collective anyway).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        if let Some((out, inc)) = self.links.as_mut() {
            out.set_timeout(timeout);
            inc.set_timeout(timeout);
        }
    }

    /// Runs `body` on the ring; a failure breaks the communicator and ends the collective at
    /// the neighbours too.
    fn run(
        &mut self,
        op: &'static str,
        body: impl FnOnce(&mut Ring<'_>) -> Result<(), Fault>,
    ) -> Result<(), CollectiveError> {
        if let Some(broken) = &self.broken {
            return Err(broken.clone());
        }
        let Some((out, inc)) = self.links.as_mut() else {
            return Ok(());
        };
        let mut ring = Ring {
            pos: self.pos,
            rank_at: &self.rank_at,
            out: out.as_mut(),
            inc: inc.as_mut(),
        };
        let Err(fault) = body(&mut ring) else {
            return Ok(());
        };
        let (rank, reason) = fault.blame();
        out.abort(rank, &reason);
        inc.abort(rank, &reason);
        let group = self.group.clone();
        let error = match fault {
            Fault::TimedOut { rank } => CollectiveError::TimedOut { group, op, rank },
            _ => CollectiveError::MemberFailed {
                group,
                op,
                rank,
                reason,
            },
        };
        tracing::warn!(rank = self.rank, "{error}");
        self.broken = Some(error.clone());
        Err(error)
    }

    fn usage(&self, op: &'static str, reason: String) -> CollectiveError {
        CollectiveError::Usage {
            group: self.group.clone(),
            op,
            reason,
        }
    }

    /// Reduces `buf` over every member with `op`; every member ends with the result.
    pub fn allreduce<T: Element>(&mut self, buf: &mut [T], op: Op) -> Result<(), CollectiveError> {
        self.run("allreduce", |ring| ring.allreduce(buf, op))
    }

    /// Copies rank `root`'s `buf` into every member's.
    pub fn broadcast<T: Element>(
        &mut self,
        buf: &mut [T],
        root: u32,
    ) -> Result<(), CollectiveError> {
        let Some(root) = self.rank_at.iter().position(|&r| r == root) else {
            let world = self.world_size();
            let reason = format!("root {root} is not a rank of a group of {world}");
            return Err(self.usage("broadcast", reason));
        };
        self.run("broadcast", |ring| ring.broadcast(buf, root))
    }

    /// Checks that `whole` holds `world_size` parts of `part` elements.
    fn check_parts(
        &self,
        op: &'static str,
        (what, whole): (&str, usize),
        part: usize,
    ) -> Result<(), CollectiveError> {
        let n = self.rank_at.len();
        match whole == part * n {
            true => Ok(()),
            false => {
                let reason = format!("the {what} holds {whole} elements, not {n} x {part}");
                Err(self.usage(op, reason))
            }
        }
    }

    /// Gathers every member's `input` into `output`, by rank (`output` holds `world_size`
    /// times `input`).
    pub fn allgather<T: Element>(
        &mut self,
        input: &[T],
        output: &mut [T],
    ) -> Result<(), CollectiveError> {
        self.check_parts("allgather", ("output", output.len()), input.len())?;
        let own = ring::part(output.len(), self.rank_at.len(), self.rank as usize);
        output[own].copy_from_slice(input);
        self.run("allgather", |ring| ring.allgather(output))
    }

    /// Reduces `input` (`world_size` parts of `output.len()` elements) over every member with
    /// `op`; rank r's `output` gets part r of the result.
    pub fn reduce_scatter<T: Element>(
        &mut self,
        input: &[T],
        output: &mut [T],
        op: Op,
    ) -> Result<(), CollectiveError> {
        self.check_parts("reduce_scatter", ("input", input.len()), output.len())?;
        let mut work = input.to_vec();
        self.run("reduce_scatter", |ring| ring.reduce_scatter(&mut work, op))?;
        let own = ring::part(input.len(), self.rank_at.len(), self.rank as usize);
        output.copy_from_slice(&work[own]);
        Ok(())
    }

    /// Waits until every member called it.
    pub fn barrier(&mut self) -> Result<(), CollectiveError> {
        let mut token = [0f32; 1];
        self.run("barrier", |ring| ring.allreduce(&mut token, Op::Sum))
    }
}
