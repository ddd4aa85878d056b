//! The cluster's directory of jobs as the head's control store keeps it: each job's driver,
//! its actors (where each runs, its incarnation, its name) and its placement groups. Drivers
//! keep it current with [`JobUpdate`]s; `prism list` and the dashboard read it; the head saves
//! it with its node table, so that a restarted head still knows it.

use rkyv::{Archive, Deserialize as FromArchive, Serialize as ToArchive};
use serde::{Deserialize, Serialize};

/// What a driver says of itself once (in every whole [`JobUpdate`]).
#[derive(Debug, Clone, PartialEq, Archive, ToArchive, FromArchive, Serialize, Deserialize)]
pub struct JobInfo {
    /// The driver's host (its address towards the head).
    pub driver: String,
    /// The driver's process id.
    pub pid: u32,
    /// The driver's command line.
    pub entry: String,
    /// When the job started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
}

/// Where a job is in its life.
#[derive(Debug, Clone, PartialEq, Archive, ToArchive, FromArchive, Serialize, Deserialize)]
pub enum JobState {
    /// Its driver is heard from.
    Running,
    /// Its driver ended it.
    Finished,
    /// Its driver went silent without ending it (the reason says since when).
    Failed(String),
}

/// Where an actor is in its life.
#[derive(Debug, Clone, PartialEq, Archive, ToArchive, FromArchive, Serialize, Deserialize)]
pub enum ActorState {
    /// Its constructor has not run yet (first start).
    Starting,
    /// Ready for calls.
    Alive,
    /// Its process died and it is being started again.
    Restarting,
    /// Gone for good, and why.
    Dead(String),
}

impl ActorState {
    /// The name listings show (`STARTING`, `ALIVE`, `RESTARTING`, `DEAD`), and why it is dead.
    pub fn name_and_reason(&self) -> (&'static str, Option<&str>) {
        match self {
            ActorState::Starting => ("STARTING", None),
            ActorState::Alive => ("ALIVE", None),
            ActorState::Restarting => ("RESTARTING", None),
            ActorState::Dead(reason) => ("DEAD", Some(reason)),
        }
    }
}

/// One actor of a job.
#[derive(Debug, Clone, PartialEq, Archive, ToArchive, FromArchive, Serialize, Deserialize)]
pub struct ActorStatus {
    /// The actor's id.
    pub id: prism_graph::ActorId,
    /// Its type.
    pub class: String,
    /// The name it was created under, if any.
    pub name: Option<String>,
    /// The namespace of its name (empty when it has none; a head's table saved before
    /// namespaces reads as empty).
    #[serde(default)]
    pub namespace: String,
    /// Where it is in its life.
    pub state: ActorState,
    /// The node its current incarnation runs on (empty while it has none).
    pub node: String,
    /// How many times it was restarted (its incarnation, counted from 0).
    pub restarts: u32,
    /// How a process of another job reaches its current incarnation (none while it has no
    /// worker, or in a head's table saved before this was kept).
    #[serde(default)]
    pub reach: Option<ActorReach>,
    /// How many times a call in flight when its process dies runs again.
    #[serde(default)]
    pub max_task_retries: u32,
}

/// Where an actor's current incarnation runs, for callers in other jobs.
#[derive(Debug, Clone, PartialEq, Archive, ToArchive, FromArchive, Serialize, Deserialize)]
pub struct ActorReach {
    /// Its worker's number (in its job).
    pub worker: u64,
    /// Its node's peer address.
    pub at: String,
    /// Its worker's direct endpoint (none: it has none, and other jobs cannot call it).
    pub direct: Option<String>,
}

/// Where a placement group is in its life.
#[derive(Debug, Clone, PartialEq, Archive, ToArchive, FromArchive, Serialize, Deserialize)]
pub enum GroupState {
    /// It waits for room.
    Pending,
    /// Its bundles are reserved.
    Created,
    /// It was removed (or its job ended).
    Removed,
}

/// One placement group of a job.
#[derive(Debug, Clone, PartialEq, Archive, ToArchive, FromArchive, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The group's number in its job.
    pub id: u64,
    /// How its bundles are spread (`PACK`, `SPREAD`, `STRICT_PACK`, `STRICT_SPREAD`).
    pub strategy: String,
    /// Each bundle's resources, as `{CPU: 1}`.
    pub bundles: Vec<String>,
    /// The node each bundle is reserved on (empty until it is).
    pub nodes: Vec<String>,
    /// Where it is in its life.
    pub state: GroupState,
}

/// What changed in a job's directory since the driver's last update that the head took, or
/// (`full`) all of it, a bounded number of entries at a time. A driver sends one each second
/// while it runs (the head counts a job whose driver goes silent failed) and a last one with
/// `ended` when it stops.
#[derive(Debug, Clone, PartialEq, Archive, ToArchive, FromArchive)]
pub struct JobUpdate {
    /// The job (only its driver may update it).
    pub job: String,
    /// Numbers the driver's updates: the head takes only a later one than it has.
    pub seq: u64,
    /// The driver's wall clock when it sent the update, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The update begins a whole listing of the job's directory (and carries `info`): the
    /// head (re)starts the job's record from it; the listing may go on over later updates.
    pub full: bool,
    /// Nothing was left out for a later update: the head now holds the driver's whole
    /// directory as of this update. Ending a whole listing, whatever the listing did not name
    /// has ended.
    pub complete: bool,
    /// The driver (in whole updates and the last one).
    pub info: Option<JobInfo>,
    /// Actors that are new or changed (every actor, over a whole listing).
    pub actors: Vec<ActorStatus>,
    /// Actors the driver no longer keeps (dead, or released with their last handle).
    pub actors_gone: Vec<prism_graph::ActorId>,
    /// Placement groups that are new or changed (every group, over a whole listing).
    pub groups: Vec<GroupStatus>,
    /// Groups that were removed.
    pub groups_gone: Vec<u64>,
    /// The driver stopped: the job is finished.
    pub ended: bool,
}

/// One job as the control store knows it (the answer to a `Jobs` request).
#[derive(Debug, Clone, PartialEq, Archive, ToArchive, FromArchive, Serialize, Deserialize)]
pub struct JobStatus {
    /// The job.
    pub job: String,
    /// Its driver.
    pub info: JobInfo,
    /// Where it is in its life.
    pub state: JobState,
    /// When it ended (0 while it runs), in milliseconds since the Unix epoch.
    pub ended_ms: u64,
    /// When its driver was last heard from, in milliseconds since the Unix epoch (its clock).
    pub heard_ms: u64,
    /// Its actors, dead ones too (the latest kept).
    pub actors: Vec<ActorStatus>,
    /// Its placement groups, removed ones too (the latest kept).
    pub groups: Vec<GroupStatus>,
}
