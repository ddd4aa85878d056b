//! The process-wide context: in the driver the embedded node ([`Core`]), in a worker the
//! connection to its node ([`WorkerClient`]). API calls and `ObjectRef` handles reach the
//! runtime through it.

use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use prism_graph::{ActorId, ObjectId, TaskError, TaskId, TaskSpec};

use crate::node::Core;
use crate::proto::owner::Known;
use crate::store::{self, ObjectBytes, Segment};
use crate::value::Remotable;
use crate::worker::WorkerClient;
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub(crate) enum Context {
    Driver(Arc<Core>),
    Worker(Arc<WorkerClient>),
}

static CONTEXT: RwLock<Option<Context>> = RwLock::new(None);

pub(crate) fn current() -> Result<Context> {
    CONTEXT.read().clone().ok_or(Error::NotInitialized)
}

pub(crate) fn try_current() -> Option<Context> {
    CONTEXT.read().clone()
}

pub(crate) fn is_set() -> bool {
    CONTEXT.read().is_some()
}

pub(crate) fn set_driver(core: Arc<Core>) -> Result<()> {
    let mut slot = CONTEXT.write();
    if slot.is_some() {
        return Err(Error::AlreadyInitialized);
    }
    *slot = Some(Context::Driver(core));
    Ok(())
}

pub(crate) fn set_worker(client: Arc<WorkerClient>) {
    *CONTEXT.write() = Some(Context::Worker(client));
}

pub(crate) fn take() -> Option<Context> {
    CONTEXT.write().take()
}

impl Context {
    pub(crate) fn next_task_id(&self) -> TaskId {
        match self {
            Context::Driver(core) => core.next_task_id(),
            Context::Worker(client) => client.next_task_id(),
        }
    }

    pub(crate) fn submit(&self, spec: TaskSpec, failed: Option<TaskError>) {
        match self {
            Context::Driver(core) => core.submit(spec, failed),
            Context::Worker(client) => client.submit(spec, failed),
        }
    }

    /// Stores a new object: small values inline with the owner, large ones written once,
    /// in place, into a shared-memory segment of their own.
    pub(crate) fn put<T: Remotable>(&self, id: ObjectId, value: &T) -> Result<()> {
        let encode = |e: rkyv::rancor::Error| Error::Encode {
            what: std::any::type_name::<T>().to_string(),
            reason: e.to_string(),
        };
        let (dir, threshold, capacity) = match self {
            Context::Driver(core) => (
                core.store_dir(),
                core.config().inline_threshold_bytes(),
                core.config().object_store_bytes(),
            ),
            Context::Worker(client) => client.store_params(),
        };
        let (len, nested) = crate::value::collect_nested(|| value.archived_len());
        let len = len.map_err(encode)?;
        let bytes = if len < threshold {
            ObjectBytes::Inline(Arc::new(value.to_bytes().map_err(encode)?))
        } else {
            if len as u64 > capacity {
                return Err(Error::ObjectTooLarge {
                    object: id.to_string(),
                    size: len as u64,
                    capacity,
                });
            }
            let mapped = match self {
                Context::Driver(core) => core.reserve(id, len)?,
                Context::Worker(_) => None,
            };
            let fill = |buf: &mut [u8]| value.archive_into(buf);
            let segment = match mapped {
                Some(map) => Segment::refill(dir, id, map, fill),
                None => {
                    store::take_pooled(dir, id, len as u64);
                    Segment::create_with(dir, id, len, fill)
                }
            };
            let segment = segment.map_err(|e| Error::Encode {
                what: format!("object {id} into {}", dir.display()),
                reason: e.to_string(),
            })?;
            ObjectBytes::Shared(Arc::new(segment))
        };
        match self {
            Context::Driver(core) => core.put(id, bytes, nested),
            Context::Worker(client) => client.put(id, bytes, nested),
        }
        Ok(())
    }

    /// Values at least this large (archived) go to shared memory rather than inline.
    pub(crate) fn inline_threshold(&self) -> usize {
        match self {
            Context::Driver(core) => core.config().inline_threshold_bytes(),
            Context::Worker(client) => client.store_params().1,
        }
    }

    /// A reference this process read from a value: counted like a clone.
    pub(crate) fn borrow_ref(&self, id: ObjectId) {
        match self {
            Context::Driver(core) => core.add_ref(id),
            Context::Worker(client) => client.borrow(id),
        }
    }

    /// Takes item `index` of this process's stream of generator `task` (see `api::stream`).
    pub(crate) fn stream_next(&self, task: TaskId, index: u32) {
        match self {
            Context::Driver(core) => core.stream_next(task, index),
            Context::Worker(client) => client.stream_next(task, index),
        }
    }

    pub(crate) fn release(&self, id: ObjectId) {
        match self {
            Context::Driver(core) => core.release(id),
            Context::Worker(client) => client.release(id),
        }
    }

    pub(crate) fn cancel(&self, id: ObjectId, force: bool) -> Result<()> {
        match self {
            Context::Driver(core) => {
                core.cancel(id, force);
                Ok(())
            }
            Context::Worker(client) => client.cancel(id, force),
        }
    }

    pub(crate) fn actor_add_ref(&self, id: ActorId) {
        match self {
            Context::Driver(core) => core.actor_add_ref(id),
            Context::Worker(client) => client.actor_borrow(id),
        }
    }

    pub(crate) fn actor_release(&self, id: ActorId) {
        match self {
            Context::Driver(core) => core.actor_release(id),
            Context::Worker(client) => client.actor_release(id),
        }
    }

    pub(crate) fn function_of(&self, id: ObjectId) -> Option<Arc<str>> {
        match self {
            Context::Driver(core) => core.function_of(id),
            Context::Worker(client) => client.function_of(id),
        }
    }

    /// Waits until at least `need` of `ids` are ready or failed, or `timeout` passes, and
    /// records in `known` what is known of each.
    pub(crate) async fn fetch<K: Known + ?Sized>(
        &self,
        ids: &[ObjectId],
        known: &mut K,
        need: usize,
        timeout: Option<Duration>,
    ) -> Result<()> {
        match self {
            Context::Worker(client) if crate::worker::on_event_loop() => {
                client.fetch_async(ids, known, need, timeout).await
            }
            Context::Worker(client) => {
                let deadline = timeout.map(|t| Instant::now() + t);
                client.fetch(ids, known, need, deadline)
            }
            Context::Driver(core) => {
                let mut timer = timeout.map(|t| {
                    core.handle()
                        .spawn(async move { tokio::time::sleep(t).await })
                });
                let mut progress = crate::node::Progress::default();
                std::future::poll_fn(|cx| {
                    let count = match core.poll_objects(ids, known, need, &mut progress, cx.waker())
                    {
                        Ok(count) => count,
                        Err(id) => return Poll::Ready(Err(core.unknown_object(id))),
                    };
                    if count >= need {
                        return Poll::Ready(Ok(()));
                    }
                    match timer.as_mut() {
                        Some(t) => std::pin::Pin::new(t).poll(cx).map(|_| Ok(())),
                        None => Poll::Pending,
                    }
                })
                .await?;
                if let Some(t) = timer {
                    t.abort();
                }
                Ok(())
            }
        }
    }
}

use std::future::Future as _;
