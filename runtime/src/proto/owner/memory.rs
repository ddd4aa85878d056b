//! What the owner reports of the objects it tracks (`prism::memory()`): each object's size,
//! where it lives, which function made it and how many references keep it.

use prism_graph::ObjectId;

/// Where an object's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// Its task has not finished.
    Pending,
    /// Its task failed.
    Failed,
    /// Small: in the owner's memory.
    Inline,
    /// Large: in the node's shared-memory store.
    SharedMemory,
    /// Moved to disk to make room; read back on the next use.
    Spilled,
    /// In the store of another node of the cluster (fetched on the driver's first read).
    Remote,
}

/// One object as the owner sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ObjectInfo {
    /// The object.
    pub id: ObjectId,
    /// Its archived size in bytes (0 while pending).
    pub size: u64,
    /// Where it lives.
    pub location: Location,
    /// The function that made it (`put` for puts).
    pub function: String,
    /// The process that created it: 0 for the driver, n for worker n.
    pub owner: u64,
    /// Live references to it (driver handles plus one per worker holding it).
    pub refs: u32,
}

/// The store's contents and use.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MemoryReport {
    /// Every object the owner tracks, by id.
    pub objects: Vec<ObjectInfo>,
    /// Bytes in the shared-memory store.
    pub shared_bytes: u64,
    /// The shared-memory store's capacity in bytes.
    pub capacity: u64,
    /// Bytes spilled to disk.
    pub spilled_bytes: u64,
}
