//! Streaming generators: a remote function or actor method that returns [`Stream<T>`](crate::Stream) makes its
//! items one at a time, and its caller gets an [`ObjectRefStream<T>`] at once, which hands out
//! each item's [`ObjectRef<T>`] as soon as the task has made it, before the task ends.
//!
//! ```ignore
//! #[remote]
//! fn squares(n: u64) -> prism::Stream<u64> {
//!     prism::Stream::new((0..n).map(|i| i * i))
//! }
//!
//! let mut items = squares::remote(4);
//! while let Some(item) = items.next_ref().await {
//!     println!("{}", item?.await?);
//! }
//! ```
//!
//! Items are objects like any other (`(task, 1)`, `(task, 2)`, ...): small ones travel inline,
//! large ones go to the shared-memory store of the node that made them, and they can be passed
//! on to other tasks. With `.options().backpressure(n)` the generator pauses while `n` of its
//! items are not taken by the stream's reader. A generator that fails (panics, returns an
//! error item, or loses its worker beyond its retries) ends the stream with that error after
//! the items it made; a retry after its worker died runs it again and skips the items already
//! delivered. Dropping the stream lets the items nobody took go (and a paused generator run to
//! its end).

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use futures::future::BoxFuture;
use prism_graph::{ObjectId, TaskError};

use crate::api::object_ref::{ObjectRef, RawRef};
use crate::context;
use crate::proto::owner::Slot;
use crate::{Error, Result};

/// The caller's side of a streaming generator: the references of its items, in order, as the
/// task makes them. Read it with [`next_ref`](ObjectRefStream::next_ref) (or as a
/// `futures::Stream`), or from synchronous code with
/// [`next_blocking`](ObjectRefStream::next_blocking) or as an iterator (`into_iter`, each
/// `next` blocks). Holding it keeps the items not read yet alive; dropping it lets them go.
pub struct ObjectRefStream<T> {
    /// The generator's return object: its item count once it ends, or its error.
    end: ObjectRef<u64>,
    /// The next item's number (from 1).
    next: u32,
    /// The stream ended (or failed): nothing more comes.
    done: bool,
    /// The item being waited for by `poll_next`.
    waiting: Option<BoxFuture<'static, Option<Result<RawRef>>>>,
    _type: PhantomData<fn() -> T>,
}

impl ObjectRefStream<()> {
    /// The stream of the generator whose end object `end` is (generated code).
    pub(crate) fn from_end(end: RawRef) -> Self {
        ObjectRefStream {
            end: ObjectRef::from_raw(end),
            next: 1,
            done: false,
            waiting: None,
            _type: PhantomData,
        }
    }

    /// The same stream with its item type (generated code).
    #[doc(hidden)]
    pub fn typed<T>(self) -> ObjectRefStream<T> {
        ObjectRefStream {
            end: self.end,
            next: self.next,
            done: self.done,
            waiting: self.waiting,
            _type: PhantomData,
        }
    }
}

impl<T> ObjectRefStream<T> {
    /// The generator task's return object: ready with the number of items once the task has
    /// made all of them, or failed with the task's error.
    pub fn completed(&self) -> &ObjectRef<u64> {
        &self.end
    }

    /// Takes the next item: the reference of item `self.next`, claimed from its owner now
    /// (whether made yet or not); the future waits until it is made or the stream ends.
    fn take_next(&mut self) -> BoxFuture<'static, Option<Result<RawRef>>> {
        let ctx = match context::current() {
            Ok(ctx) => ctx,
            Err(e) => return Box::pin(async move { Some(Err(e)) }),
        };
        let index = self.next;
        self.next += 1;
        let task = self.end.id().task;
        ctx.stream_next(task, index);
        let item = RawRef::adopt(ObjectId::new(task, index));
        let end = self.end.clone();
        Box::pin(async move {
            let ids = [item.id()];
            let mut known = [None];
            if let Err(e) = ctx.fetch(&ids, &mut known[..], 1, None).await {
                return Some(Err(e));
            }
            match known[0].take() {
                Some(Slot::Failed(error)) => past_end(&end, index, error).await,
                Some(_) => Some(Ok(item)),
                None => Some(Err(Error::UnknownObject(item.id().to_string()))),
            }
        })
    }

    /// Waits for the next item's reference: `None` once the generator ended and every item
    /// was taken, an error when it failed (after the items it made).
    pub async fn next_ref(&mut self) -> Option<Result<ObjectRef<T>>> {
        if self.done {
            return None;
        }
        let taken = match self.waiting.take() {
            Some(waiting) => waiting.await,
            None => self.take_next().await,
        };
        self.settle(taken)
    }

    /// [`next_ref`](ObjectRefStream::next_ref), blocking the thread.
    pub fn next_blocking(&mut self) -> Option<Result<ObjectRef<T>>> {
        super::spin::block_on(self.next_ref())
    }

    fn settle(&mut self, taken: Option<Result<RawRef>>) -> Option<Result<ObjectRef<T>>> {
        match taken {
            Some(Ok(raw)) => Some(Ok(ObjectRef::from_raw(raw))),
            other => {
                self.done = true;
                other.map(|r| r.map(ObjectRef::from_raw))
            }
        }
    }
}

/// Item `index` failed: past the end of a stream that ended well (`None`), or the stream's
/// error (the generator's, or the item's own when it was made and then lost).
async fn past_end(end: &ObjectRef<u64>, index: u32, error: TaskError) -> Option<Result<RawRef>> {
    match crate::get(end).await {
        Ok(count) if u64::from(index) > count => None,
        Ok(_) => Some(Err(Error::Task(error))),
        Err(e) => Some(Err(e)),
    }
}

impl<T> futures::Stream for ObjectRefStream<T> {
    type Item = Result<ObjectRef<T>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let mut waiting = match self.waiting.take() {
            Some(waiting) => waiting,
            None => self.take_next(),
        };
        match waiting.as_mut().poll(cx) {
            Poll::Ready(taken) => Poll::Ready(self.settle(taken)),
            Poll::Pending => {
                self.waiting = Some(waiting);
                Poll::Pending
            }
        }
    }
}

/// An [`ObjectRefStream`] read from synchronous code: each `next` blocks until the next item is
/// made (`for item in stream { .. }`).
#[derive(Debug)]
pub struct Blocking<T>(ObjectRefStream<T>);

impl<T> Iterator for Blocking<T> {
    type Item = Result<ObjectRef<T>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next_blocking()
    }
}

impl<T> IntoIterator for ObjectRefStream<T> {
    type Item = Result<ObjectRef<T>>;
    type IntoIter = Blocking<T>;

    fn into_iter(self) -> Blocking<T> {
        Blocking(self)
    }
}

impl<T> Unpin for ObjectRefStream<T> {}

impl<T> fmt::Debug for ObjectRefStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ObjectRefStream<{}>(task {}, next item {})",
            std::any::type_name::<T>(),
            self.end.id().task,
            self.next
        )
    }
}
