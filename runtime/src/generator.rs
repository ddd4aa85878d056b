//! What a streaming generator returns ([`Stream`]), and how a worker runs its items out one at
//! a time ([`drive`]). The caller's side is `api::stream`.

use std::fmt;

use prism_graph::TaskError;

use crate::value::Remotable;

/// What a streaming generator returns: its items, made one at a time while its caller reads
/// them. Build it from any iterator that can move to another thread.
pub struct Stream<T> {
    items: Box<dyn Iterator<Item = std::result::Result<T, String>> + Send>,
}

impl<T: 'static> Stream<T> {
    /// The items of `items`, in order.
    pub fn new<I>(items: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        Stream {
            items: Box::new(items.into_iter().map(Ok)),
        }
    }

    /// The items of `items` up to the first error, which fails the task (its stream ends
    /// with that error after the items before it).
    pub fn try_new<I, E>(items: I) -> Self
    where
        I: IntoIterator<Item = std::result::Result<T, E>>,
        I::IntoIter: Send + 'static,
        E: fmt::Display,
    {
        Stream {
            items: Box::new(
                items
                    .into_iter()
                    .map(|item| item.map_err(|e| e.to_string())),
            ),
        }
    }

    /// The items, for the worker that runs the generator.
    pub(crate) fn into_items(
        self,
    ) -> Box<dyn Iterator<Item = std::result::Result<T, String>> + Send> {
        self.items
    }
}

impl<T> fmt::Debug for Stream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Stream<{}>", std::any::type_name::<T>())
    }
}

/// Items of a generator run in this worker go out through this (the worker's link).
pub(crate) trait ItemSink {
    /// Stores item `index` (its archived `bytes`, referring to `nested`) and hands it to the
    /// owner; waits while the consumer is too far behind.
    fn item(
        &self,
        index: u32,
        bytes: rkyv::util::AlignedVec,
        nested: crate::value::Nested,
    ) -> std::result::Result<(), TaskError>;
}

/// Runs a generator's items through `sink`, skipping the first `skip` (delivered by an earlier
/// run): the number of items, or the error that ended it.
pub(crate) fn drive<T: Remotable>(
    items: Stream<T>,
    sink: &dyn ItemSink,
    skip: u32,
    fail: impl Fn(String) -> TaskError,
) -> std::result::Result<u64, TaskError> {
    let mut count: u32 = 0;
    for item in items.into_items() {
        count = count
            .checked_add(1)
            .ok_or_else(|| fail(format!("it made more than {} items", u32::MAX)))?;
        let value = item.map_err(|e| fail(format!("item {count} failed: {e}")))?;
        if count <= skip {
            continue;
        }
        let (bytes, nested) = crate::value::collect_nested(|| value.to_bytes());
        let bytes = bytes.map_err(|e| fail(format!("item {count} cannot be archived: {e}")))?;
        sink.item(count, bytes, nested)?;
    }
    Ok(u64::from(count))
}
