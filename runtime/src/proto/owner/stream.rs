//! The owner's books of streaming generators: which items a generator made, which its consumer
//! took, and when the producer may go on (backpressure).
//!
//! Item `k` (from 1) of generator task `t` is object `(t, k)`; the task's one return object
//! `(t, 0)` holds the number of items once it ends. An item made before the consumer asks for
//! it is held by the stream (one reference) until the consumer takes it; an item asked for
//! before it exists is a pending object the consumer holds, filled when it comes (or failed
//! when the generator ends without it). The consumer's stream holds the end object: when its
//! last reference goes, the stream is dropped, and the items nobody took go with it.

use prism_graph::{ObjectId, TaskError, TaskId};
use prism_transport::StreamRun;

use super::{ObjectEntry, Owner, Slot};
use crate::proto::scheduler::WorkerId;

/// What the owner keeps of one generator's stream.
#[derive(Debug)]
pub(crate) struct StreamBook {
    /// Items made and not taken that pause the producer (0: no limit).
    window: u32,
    /// Items made so far (`1..=produced`).
    produced: u32,
    /// Items the consumer asked for so far (`1..=claimed`).
    claimed: u32,
    /// The consumed count the producer was last told.
    acked: u32,
    /// The generator ended (it made all it will make, or failed).
    ended: bool,
    /// The consumer dropped the stream.
    dropped: bool,
}

impl StreamBook {
    /// Items the consumer is done with: all before the one it asks for now.
    fn consumed(&self) -> u32 {
        self.claimed.saturating_sub(1)
    }
}

impl Owner {
    /// Opens the books of a generator task just submitted, pausing after `window` items.
    pub(super) fn open_stream(&mut self, task: TaskId, window: u32) {
        let book = StreamBook {
            window,
            produced: 0,
            claimed: 0,
            acked: 0,
            ended: false,
            dropped: false,
        };
        self.streams.insert(task, book);
    }

    /// How the next run of `task` yields (for its `Execute`), if it is a generator: it skips
    /// the items made already and knows how many were taken.
    pub(crate) fn stream_run(&mut self, task: TaskId) -> Option<StreamRun> {
        let book = self.streams.get_mut(&task)?;
        book.acked = book.consumed();
        Some(StreamRun {
            window: book.window,
            skip: book.produced,
            consumed: if book.dropped {
                u32::MAX
            } else {
                book.consumed()
            },
        })
    }

    /// Generator `task` made item `index` with `slot`, whose value refers to `nested`.
    pub(crate) fn yielded(&mut self, task: TaskId, index: u32, slot: Slot, nested: Vec<ObjectId>) {
        let id = ObjectId::new(task, index);
        let Some(book) = self.streams.get_mut(&task) else {
            tracing::warn!(object = %id, "an item of a stream the owner does not know: dropped");
            return self.drop_value(id, slot);
        };
        if index == 0 || index <= book.produced || book.ended {
            tracing::warn!(object = %id, produced = book.produced, "an item made twice or after its stream ended: dropped");
            return;
        }
        book.produced = index;
        let (claimed, dropped) = (index <= book.claimed, book.dropped);
        if claimed && !self.objects.contains_key(&id) {
            // The consumer asked for it and let it go since.
            return self.drop_value(id, slot);
        }
        let _ = self.graph.add_ready_object(id);
        self.account(&slot);
        if claimed {
            self.set_contains(id, nested);
            self.set_slot(id, slot);
        } else {
            let function = self
                .function_of(ObjectId::new(task, 0))
                .unwrap_or_else(|| "stream".into());
            self.insert_object(id, ObjectEntry::new(slot, function));
            self.set_contains(id, nested);
            if dropped {
                self.release(id);
            }
        }
        self.touch(id);
        self.unpark();
        self.stream_ack(task);
    }

    /// A value nobody can read: its files go (through an entry freed at once).
    fn drop_value(&mut self, id: ObjectId, slot: Slot) {
        if self.objects.contains_key(&id) {
            return;
        }
        let _ = self.graph.add_ready_object(id);
        self.account(&slot);
        self.objects
            .insert(id, ObjectEntry::new(slot, "stream".into()));
        self.release(id);
    }

    /// The consumer (this process, or `holder`) takes item `index` of generator `task`: it
    /// holds the item's one reference from now on, made or not.
    pub(crate) fn stream_claim(&mut self, task: TaskId, index: u32, holder: Option<WorkerId>) {
        let id = ObjectId::new(task, index);
        let Some(book) = self.streams.get_mut(&task) else {
            let error = TaskError::ObjectUnavailable {
                object: id,
                function: String::from("<stream>"),
                reason: format!("task {task} is not a streaming generator this process owns"),
            };
            self.objects
                .insert(id, ObjectEntry::new(Slot::Failed(error), "stream".into()));
            return self.hold(id, holder);
        };
        let (made, taken_before) = (index <= book.produced, index <= book.claimed);
        book.claimed = book.claimed.max(index);
        let end = (book.ended && !made).then_some(book.produced);
        match self.objects.get(&id) {
            // Held by the stream until now: the reference moves to the consumer.
            Some(_) if made && !taken_before => self.hold(id, holder),
            Some(_) => {
                self.add_ref(id);
                self.hold(id, holder);
            }
            None => {
                let function = self
                    .function_of(ObjectId::new(task, 0))
                    .unwrap_or_else(|| "stream".into());
                let slot = match end {
                    Some(count) => Slot::Failed(stream_ended(task, index, count)),
                    None => Slot::Pending,
                };
                self.insert_object(id, ObjectEntry::new(slot, function));
                self.hold(id, holder);
            }
        }
        self.stream_ack(task);
    }

    /// Tells the producer of `task` that more items were taken, when it may be paused for it.
    fn stream_ack(&mut self, task: TaskId) {
        let Some(book) = self.streams.get_mut(&task) else {
            return;
        };
        if book.ended || book.window == 0 || book.acked == u32::MAX {
            return;
        }
        let consumed = if book.dropped {
            u32::MAX
        } else {
            book.consumed()
        };
        let paused = book.produced >= book.acked.saturating_add(book.window);
        if consumed > book.acked && paused {
            book.acked = consumed;
            self.stream_acks.push((task, consumed));
        }
    }

    /// The stream's end object lost its last reference: the consumer dropped the stream.
    pub(super) fn stream_dropped(&mut self, task: TaskId) {
        let Some(book) = self.streams.get_mut(&task) else {
            return;
        };
        book.dropped = true;
        let unclaimed = book.claimed + 1..=book.produced;
        if book.ended {
            self.streams.remove(&task);
        } else if book.window > 0 {
            book.acked = u32::MAX;
            self.stream_acks.push((task, u32::MAX));
        }
        for index in unclaimed {
            self.release(ObjectId::new(task, index));
        }
    }

    /// Generator `task` ended (with `error` when it failed): items asked for and never made
    /// fail with it, or as past the stream's end.
    pub(super) fn stream_ended(&mut self, task: TaskId, error: Option<&TaskError>) {
        let Some(book) = self.streams.get_mut(&task) else {
            return;
        };
        book.ended = true;
        let (produced, claimed) = (book.produced, book.claimed);
        if book.dropped {
            self.streams.remove(&task);
        }
        for index in produced + 1..=claimed {
            let id = ObjectId::new(task, index);
            if matches!(self.peek(id), Some(Slot::Pending)) {
                let error = error
                    .cloned()
                    .unwrap_or_else(|| stream_ended(task, index, produced));
                self.set_slot(id, Slot::Failed(error));
            }
        }
    }

    /// Whether `id` is the end object of a generator's stream.
    pub(super) fn is_stream_end(&self, id: ObjectId) -> bool {
        id.index == 0 && self.streams.contains_key(&id.task)
    }
}

/// The error of an item asked for past the end of a generator that made `count` items.
fn stream_ended(task: TaskId, index: u32, count: u32) -> TaskError {
    TaskError::ObjectUnavailable {
        object: ObjectId::new(task, index),
        function: String::from("<stream>"),
        reason: format!("the stream of task {task} ended after {count} items"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prism_graph::TaskSpec;

    use super::*;
    use crate::store::ObjectBytes;

    const TASK: TaskId = TaskId::new(0, 1);

    fn generator(window: u32) -> (Owner, ObjectId) {
        let mut owner = Owner::default();
        let spec = TaskSpec {
            max_retries: 1,
            stream: Some(window),
            ..TaskSpec::call(TASK, "tests::gen", Vec::new())
        };
        assert!(owner.submit(spec, None));
        owner.started(TASK, 7);
        (owner, ObjectId::new(TASK, 0))
    }

    fn value() -> Slot {
        Slot::Ready(ObjectBytes::Inline(Arc::new(rkyv::util::AlignedVec::new())))
    }

    fn item(index: u32) -> ObjectId {
        ObjectId::new(TASK, index)
    }

    fn is_ready(owner: &Owner, index: u32) -> bool {
        matches!(owner.peek(item(index)), Some(Slot::Ready(_)))
    }

    #[test]
    fn items_made_before_and_after_they_are_asked_for_reach_the_consumer() {
        let (mut owner, end) = generator(0);
        owner.yielded(TASK, 1, value(), Vec::new());
        owner.stream_claim(TASK, 1, None);
        assert!(is_ready(&owner, 1), "made first, then taken");
        owner.stream_claim(TASK, 2, None);
        assert!(matches!(owner.peek(item(2)), Some(Slot::Pending)));
        owner.yielded(TASK, 2, value(), Vec::new());
        assert!(is_ready(&owner, 2), "asked for first, then filled");
        owner.stream_claim(TASK, 3, None);
        owner.complete(TASK, vec![value()], Vec::new());
        match owner.peek(item(3)) {
            Some(Slot::Failed(e)) => assert!(e.to_string().contains("ended after 2 items")),
            other => panic!("item 3 past the end: {other:?}"),
        }
        owner.stream_claim(TASK, 4, None);
        assert!(
            matches!(owner.peek(item(4)), Some(Slot::Failed(_))),
            "asked for after the end"
        );
        for index in 1..=4 {
            owner.release(item(index));
        }
        owner.release(end);
        assert_eq!(owner.object_count(), 0, "everything went with the stream");
        assert!(owner.streams.is_empty());
    }

    #[test]
    fn a_failure_fails_the_item_asked_for_and_keeps_those_made() {
        let (mut owner, end) = generator(0);
        owner.yielded(TASK, 1, value(), Vec::new());
        owner.stream_claim(TASK, 1, None);
        owner.stream_claim(TASK, 2, None);
        let error = TaskError::Panicked {
            task: TASK,
            function: "tests::gen".into(),
            message: "boom".into(),
        };
        owner.fail(TASK, error.clone());
        assert!(is_ready(&owner, 1));
        assert_eq!(
            owner.peek(item(2)).cloned().map(|s| s.describe().2),
            Some(Some(error.to_string()))
        );
        assert!(matches!(owner.peek(end), Some(Slot::Failed(_))));
    }

    #[test]
    fn the_producer_hears_of_taken_items_only_when_it_may_be_paused() {
        let (mut owner, _end) = generator(2);
        assert_eq!(
            owner
                .stream_run(TASK)
                .map(|r| (r.window, r.skip, r.consumed)),
            Some((2, 0, 0))
        );
        owner.yielded(TASK, 1, value(), Vec::new());
        owner.stream_claim(TASK, 1, None);
        owner.stream_claim(TASK, 2, None);
        assert!(owner.stream_acks.is_empty(), "one item ahead: not paused");
        owner.yielded(TASK, 2, value(), Vec::new());
        assert_eq!(
            owner.stream_acks,
            vec![(TASK, 1)],
            "paused at 2 with one taken"
        );
        owner.yielded(TASK, 3, value(), Vec::new());
        owner.stream_acks.clear();
        owner.stream_claim(TASK, 3, None);
        assert_eq!(owner.stream_acks, vec![(TASK, 2)]);
        // A retry skips the three made and knows two were taken.
        assert_eq!(
            owner.stream_run(TASK).map(|r| (r.skip, r.consumed)),
            Some((3, 2))
        );
    }

    #[test]
    fn dropping_the_stream_frees_untaken_items_and_later_ones_and_unpauses_the_producer() {
        let (mut owner, end) = generator(1);
        owner.yielded(TASK, 1, value(), Vec::new());
        owner.yielded(TASK, 2, value(), Vec::new());
        owner.stream_claim(TASK, 1, None);
        owner.release(end);
        assert_eq!(owner.stream_acks, vec![(TASK, u32::MAX)]);
        assert!(owner.peek(item(2)).is_none(), "the untaken item went");
        assert!(is_ready(&owner, 1), "the taken one stays with its holder");
        owner.yielded(TASK, 3, value(), Vec::new());
        assert!(
            owner.peek(item(3)).is_none(),
            "an item made after the drop goes at once"
        );
        owner.complete(TASK, vec![value()], Vec::new());
        owner.release(item(1));
        assert_eq!(owner.object_count(), 0);
        assert!(owner.streams.is_empty());
    }

    #[test]
    fn a_worker_that_takes_an_item_holds_it_until_it_releases_it_or_dies() {
        let (mut owner, end) = generator(0);
        owner.yielded(TASK, 1, value(), Vec::new());
        owner.stream_claim(TASK, 1, Some(3));
        owner.stream_claim(TASK, 2, Some(3));
        owner.release(end);
        assert!(is_ready(&owner, 1));
        owner.worker_gone(3);
        owner.yielded(TASK, 2, value(), Vec::new());
        owner.complete(TASK, vec![value()], Vec::new());
        assert_eq!(owner.object_count(), 0, "the dead worker's items went");
    }
}
