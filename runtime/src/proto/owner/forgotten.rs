//! What the owner freed lately, and whose release let each object's last reference go: a
//! read of an object freed before it gets an error saying so (and who let it go), not one
//! that cannot tell a freed object from one never made in this cluster.

use std::collections::VecDeque;

use prism_graph::ObjectId;

use crate::proto::scheduler::WorkerId;

/// How many freed objects are remembered (the oldest are forgotten first).
const REMEMBERED: usize = 4096;

/// Who released a reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Releaser {
    /// The driver dropped a handle.
    Driver,
    /// A worker released its hold.
    Worker(WorkerId),
    /// A worker that held it is gone.
    WorkerGone(WorkerId),
    /// The object whose value referred to it was freed.
    Container(ObjectId),
    /// The owner itself: a task that needed it as an input ended, or a stream let it go.
    Owner,
    /// Its last reference went before its value came.
    Earlier,
}

impl std::fmt::Display for Releaser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Releaser::Driver => write!(f, "the driver dropped its last handle"),
            Releaser::Worker(w) => write!(f, "worker {w} released its last hold"),
            Releaser::WorkerGone(w) => write!(f, "worker {w}, which held it, is gone"),
            Releaser::Container(c) => {
                write!(f, "object {c}, whose value referred to it, was freed")
            }
            Releaser::Owner => write!(f, "the last task that needed it ended"),
            Releaser::Earlier => write!(f, "its last reference went before its value came"),
        }
    }
}

/// The objects freed last, each with the release that freed it.
#[derive(Debug, Default)]
pub(crate) struct Forgotten {
    freed: VecDeque<(ObjectId, Releaser)>,
}

impl Forgotten {
    /// Object `id` was freed by `by`'s release.
    pub(crate) fn freed(&mut self, id: ObjectId, by: Releaser) {
        if self.freed.len() == REMEMBERED {
            self.freed.pop_front();
        }
        self.freed.push_back((id, by));
    }

    /// Why `id` is gone, when it was freed lately (the latest free of it).
    pub(crate) fn why(&self, id: ObjectId) -> Option<Releaser> {
        self.freed
            .iter()
            .rev()
            .find(|(f, _)| *f == id)
            .map(|(_, by)| *by)
    }
}

#[cfg(test)]
mod tests {
    use prism_graph::TaskId;

    use super::*;

    #[test]
    fn the_latest_frees_are_remembered_with_their_releaser() {
        let id = |seq| ObjectId::new(TaskId::new(1, seq), 0);
        let mut forgotten = Forgotten::default();
        forgotten.freed(id(0), Releaser::Worker(3));
        assert_eq!(forgotten.why(id(0)), Some(Releaser::Worker(3)));
        assert_eq!(forgotten.why(id(1)), None);
        for seq in 1..=REMEMBERED as u64 {
            forgotten.freed(id(seq), Releaser::Driver);
        }
        assert_eq!(forgotten.why(id(0)), None, "the oldest goes first");
        assert_eq!(forgotten.why(id(REMEMBERED as u64)), Some(Releaser::Driver));
    }
}
