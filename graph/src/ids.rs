//! Identifiers of tasks and objects. A task id is unique in the cluster because it pairs the
//! submitting process (its owner number) with that owner's own counter; an object id is the task
//! that makes it plus the index of the return value.

use std::fmt;

/// The id of one task: the owner that submitted it and that owner's sequence number.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq, Hash))]
pub struct TaskId {
    /// The owner (submitting process) number: 0 for the driver, then one per worker.
    pub owner: u64,
    /// The owner's own counter.
    pub seq: u64,
}

impl TaskId {
    /// Makes the id of the `seq`-th task of `owner`.
    pub const fn new(owner: u64, seq: u64) -> Self {
        TaskId { owner, seq }
    }
}

impl ArchivedTaskId {
    /// Converts the archived id back into a native one.
    pub fn to_native(&self) -> TaskId {
        TaskId::new(self.owner.to_native(), self.seq.to_native())
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}.{}", self.owner, self.seq)
    }
}

/// A text that is not a task id as [`TaskId`]'s `Display` writes it (`OWNER_HEX.SEQ`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not a task id (OWNER.SEQ: the owner in hexadecimal, as `prism list tasks` prints it)"
)]
pub struct ParseTaskIdError {
    text: String,
}

impl std::str::FromStr for TaskId {
    type Err = ParseTaskIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ParseTaskIdError {
            text: text.to_string(),
        };
        let (owner, seq) = text.split_once('.').ok_or_else(bad)?;
        let owner = u64::from_str_radix(owner, 16).map_err(|_| bad())?;
        let seq = seq.parse().map_err(|_| bad())?;
        Ok(TaskId::new(owner, seq))
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({self})")
    }
}

/// The id of one object: the task that produces it and the index of the return value
/// (objects made by `put` carry a task id of their own that never runs).
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq, Hash))]
pub struct ObjectId {
    /// The producing task.
    pub task: TaskId,
    /// Which of the task's return values.
    pub index: u32,
}

impl ObjectId {
    /// Makes the id of return value `index` of `task`.
    pub const fn new(task: TaskId, index: u32) -> Self {
        ObjectId { task, index }
    }
}

impl ArchivedObjectId {
    /// Converts the archived id back into a native one.
    pub fn to_native(&self) -> ObjectId {
        ObjectId::new(self.task.to_native(), self.index.to_native())
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.task, self.index)
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

/// The id of an actor: the id of the task that first created it.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq, Hash))]
pub struct ActorId(pub TaskId);

impl ArchivedActorId {
    /// Converts the archived id back into a native one.
    pub fn to_native(&self) -> ActorId {
        ActorId(self.0.to_native())
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a{}", self.0)
    }
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorId({self})")
    }
}

/// A hash map keyed by ids. Ids are small and made by the runtime, so a fast hash (foldhash)
/// replaces the default SipHash on the hot paths of submit, complete and get. Its seed is
/// fixed: the order of iteration depends only on what was inserted, so the protocol core
/// decides the same way in every run (the deterministic simulator replays a seed bit for bit).
pub type IdMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

/// A hash set of ids; see [`IdMap`].
pub type IdSet<K> = std::collections::HashSet<K, foldhash::fast::FixedState>;

#[cfg(test)]
mod tests {
    #[test]
    fn a_task_id_reads_back_what_it_prints() {
        let id = TaskId::new(0x2_0000_0003, 41);
        assert_eq!(id.to_string().parse::<TaskId>(), Ok(id));
        for bad in ["", "12", "x.1", "1.y", "1.2.3", "1.-4"] {
            assert!(bad.parse::<TaskId>().is_err(), "{bad:?}");
        }
    }

    use super::*;

    #[test]
    fn ids_display_owner_in_hex_and_round_trip_through_rkyv() {
        let id = ObjectId::new(TaskId::new(0x1f, 42), 3);
        assert_eq!(id.to_string(), "1f.42/3");
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&id).unwrap();
        let archived = rkyv::access::<ArchivedObjectId, rkyv::rancor::Error>(&bytes).unwrap();
        assert_eq!(archived.to_native(), id);
    }
}
