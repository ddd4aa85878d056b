//! The protocol core: the cluster's logic as plain state machines, with no IO inside (no
//! async runtime, no files, no sockets, no clock reads). The shells (the driver's node, the
//! worker, the daemons) feed them events and carry out what they decide.
//!
//! Here: the control store (the head's node table), the board of task events drivers report
//! to it (`board`), and the directory of jobs it keeps (with
//! what a driver tells it of its actors and placement groups), a node's lease on a job it
//! hosts, the jobs a node daemon hosts (`host`: which connection steers each, draining, one
//! pull per object), the node's resources granted to those jobs (`grants`), the job's task
//! events (`events`), the driver's node (`node`: the owner's books, actors, placement groups, copies of
//! objects across a cluster), the scheduler of one node's workers, the set of nodes a driver
//! schedules onto, placement groups' naming and plans, a worker's books (`worker`: the tasks
//! it was sent, the values it asked for, its references, blocking in `get`), and the table
//! helpers the books share; and the deduplication of workers' output lines at the driver
//! (`logs`).
//! The only other module of the crate they name is `store`, for the type of the mapped objects
//! the owner holds (never to do IO with it).

pub(crate) mod board;
pub(crate) mod control;
pub(crate) mod directory;
pub(crate) mod driver_link;
pub(crate) mod events;
pub(crate) mod grants;
pub(crate) mod held_for;
pub(crate) mod host;
pub(crate) mod lease;
pub(crate) mod logs;
pub(crate) mod names;
pub(crate) mod node;
pub(crate) mod nodes;
pub(crate) mod owner;
pub(crate) mod placement;
pub(crate) mod pool;
pub(crate) mod relay;
pub(crate) mod scheduler;
pub(crate) mod spill;
pub(crate) mod worker;

/// Shrinks a table that holds under a quarter of its capacity (and a large one): true if it
/// did. Tables that once held a burst would otherwise keep its memory.
pub(crate) fn shrink<C: Shrinkable>(table: &mut C) -> bool {
    const LARGE: usize = 4096;
    if table.capacity() < LARGE || table.len().saturating_mul(4) > table.capacity() {
        return false;
    }
    table.shrink_to_fit();
    true
}

/// A hash table [`shrink`] can shrink.
pub(crate) trait Shrinkable {
    fn len(&self) -> usize;
    fn capacity(&self) -> usize;
    fn shrink_to_fit(&mut self);
}

/// Implements [`Shrinkable`] for a std hash table type by its own methods.
macro_rules! shrinkable {
    ($($params:ident),* => $table:ty) => {
        impl<$($params),*> Shrinkable for $table
        where
            K: Eq + std::hash::Hash,
            S: std::hash::BuildHasher,
        {
            fn len(&self) -> usize {
                self.len()
            }
            fn capacity(&self) -> usize {
                self.capacity()
            }
            fn shrink_to_fit(&mut self) {
                self.shrink_to_fit()
            }
        }
    };
}

shrinkable!(K, V, S => std::collections::HashMap<K, V, S>);
shrinkable!(K, S => std::collections::HashSet<K, S>);
