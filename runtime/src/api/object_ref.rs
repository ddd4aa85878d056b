//! `ObjectRef<T>`: a typed future for an object. Holding one keeps the object alive; awaiting
//! one (or [`ObjectRef::get_blocking`]) returns the value, validated and deserialized.

use std::fmt;
use std::future::IntoFuture;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;
use prism_graph::{ObjectId, TaskError};

use crate::context;
use crate::proto::owner::Slot;
use crate::store::ObjectBytes;
use crate::value::Remotable;
use crate::{Error, Result};

/// An untyped, counted reference to an object. Clones share one count at the owner: cloning
/// and dropping a clone are atomic operations in this process, and the owner hears only when
/// the last clone goes.
#[derive(Clone)]
pub struct RawRef {
    counted: Arc<Counted>,
}

/// One reference the owner counts; released when dropped.
struct Counted {
    id: ObjectId,
}

impl RawRef {
    /// Takes over a reference the owner already counted (a fresh task's return).
    pub(crate) fn adopt(id: ObjectId) -> Self {
        RawRef {
            counted: Arc::new(Counted { id }),
        }
    }

    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.counted.id
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(ctx) = context::try_current() {
            ctx.release(self.id);
        }
    }
}

impl fmt::Debug for RawRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawRef({})", self.id())
    }
}

/// A reference to an immutable object of type `T`: the result of a remote call or of
/// [`put`](crate::put). Returned at once; `.await` it (or call [`get`](crate::get) /
/// [`get_blocking`](ObjectRef::get_blocking)) for the value. Pass it to another remote call
/// where a `T` is expected and the value flows there without passing through the caller.
pub struct ObjectRef<T> {
    raw: RawRef,
    _type: PhantomData<fn() -> T>,
}

impl<T> ObjectRef<T> {
    /// Wraps a counted reference (generated code).
    #[doc(hidden)]
    pub fn from_raw(raw: RawRef) -> Self {
        ObjectRef {
            raw,
            _type: PhantomData,
        }
    }

    pub(crate) fn raw(&self) -> &RawRef {
        &self.raw
    }

    pub(crate) fn into_raw(self) -> RawRef {
        self.raw
    }

    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.raw.id()
    }

    /// The same object seen as another type; reading it then fails with a typed error unless
    /// the bytes are a valid `U`. For tests of that path.
    #[doc(hidden)]
    pub fn __cast<U>(&self) -> ObjectRef<U> {
        ObjectRef::from_raw(self.raw.clone())
    }
}

impl<T: Remotable> ObjectRef<T> {
    /// Waits for the value.
    pub async fn get(&self) -> Result<T> {
        crate::get(self).await
    }

    /// Waits for the value, blocking the thread.
    pub fn get_blocking(&self) -> Result<T> {
        super::spin::block_on(self.get())
    }
}

impl<T> Clone for ObjectRef<T> {
    fn clone(&self) -> Self {
        ObjectRef {
            raw: self.raw.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for ObjectRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ObjectRef<{}>({})",
            std::any::type_name::<T>(),
            self.raw.id()
        )
    }
}

impl<T> PartialEq for ObjectRef<T> {
    fn eq(&self, other: &Self) -> bool {
        self.raw.id() == other.raw.id()
    }
}

impl<T> Eq for ObjectRef<T> {}

impl<T> Hash for ObjectRef<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.raw.id().hash(state);
    }
}

impl<T: Remotable> IntoFuture for ObjectRef<T> {
    type Output = Result<T>;
    type IntoFuture = BoxFuture<'static, Result<T>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { crate::get(&self).await })
    }
}

impl<'a, T: Remotable> IntoFuture for &'a ObjectRef<T> {
    type Output = Result<T>;
    type IntoFuture = BoxFuture<'a, Result<T>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(crate::get(self))
    }
}

/// Turns what the owner knows of an object into the caller's value.
pub(crate) fn decode<T: Remotable>(id: ObjectId, slot: Slot) -> Result<T> {
    match slot {
        Slot::Ready(bytes) => T::from_bytes(bytes.as_slice()).map_err(|e| {
            Error::Task(TaskError::InvalidValue {
                task: id.task,
                function: function_name(id),
                what: format!("object {id} read as {}", std::any::type_name::<T>()),
                reason: e.to_string(),
            })
        }),
        Slot::Failed(e) => Err(Error::Task(e)),
        Slot::Pending | Slot::Spilled(_) | Slot::Restoring(_) | Slot::Remote(_) => {
            unreachable!("the owner restores an object before handing it to a reader")
        }
    }
}

/// A zero-copy view of an object: derefs to its archived form (`Archived<T>`), read straight
/// from the shared-memory segment (or the owner's buffer for small objects). Validated once when
/// made; holding it keeps the bytes mapped and the object alive in its owner's books (it holds a
/// reference, like an `ObjectRef`), so the store counts the memory the view pins.
pub struct ArchivedRef<T: Remotable> {
    bytes: ObjectBytes,
    view: *const T::Archived,
    _hold: RawRef,
}

// SAFETY: the view points into `bytes`, which is immutable and kept alive by the guard; sharing
// or sending the guard shares `&T::Archived`, which needs `T::Archived: Sync`.
unsafe impl<T: Remotable> Send for ArchivedRef<T> where T::Archived: Sync {}
// SAFETY: as above.
unsafe impl<T: Remotable> Sync for ArchivedRef<T> where T::Archived: Sync {}

impl<T: Remotable> ArchivedRef<T> {
    pub(crate) fn new(hold: RawRef, slot: Slot) -> Result<Self> {
        let id = hold.id();
        match slot {
            Slot::Ready(bytes) => {
                let view = T::access(bytes.as_slice()).map_err(|e| {
                    Error::Task(TaskError::InvalidValue {
                        task: id.task,
                        function: function_name(id),
                        what: format!("object {id} viewed as {}", std::any::type_name::<T>()),
                        reason: e.to_string(),
                    })
                })? as *const T::Archived;
                Ok(ArchivedRef {
                    bytes,
                    view,
                    _hold: hold,
                })
            }
            Slot::Failed(e) => Err(Error::Task(e)),
            Slot::Pending | Slot::Spilled(_) | Slot::Restoring(_) | Slot::Remote(_) => {
                unreachable!("the owner restores an object before handing it to a reader")
            }
        }
    }

    /// The archived bytes' length.
    pub fn len_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the bytes live in the shared-memory store (rather than inline with the owner).
    pub fn is_shared(&self) -> bool {
        matches!(self.bytes, ObjectBytes::Shared(_))
    }
}

impl<T: Remotable> std::ops::Deref for ArchivedRef<T> {
    type Target = T::Archived;

    fn deref(&self) -> &T::Archived {
        // SAFETY: `view` was validated by `access` and points into `bytes`, whose storage (a
        // heap buffer behind an Arc, or a read-only mapping) neither moves nor changes while
        // the guard holds it.
        unsafe { &*self.view }
    }
}

impl<T: Remotable> fmt::Debug for ArchivedRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ArchivedRef<{}>({} bytes)",
            std::any::type_name::<T>(),
            self.bytes.len()
        )
    }
}

fn function_name(id: ObjectId) -> String {
    context::try_current()
        .and_then(|c| c.function_of(id))
        .map_or_else(|| "<unknown>".to_string(), |f| f.to_string())
}

// A reference crosses processes as its object's id, inside any value: the encoding process
// records it as nested (so the owner keeps the target alive as long as the container), and the
// decoding process counts the new handle like a clone.
impl<T> rkyv::Archive for ObjectRef<T> {
    type Archived = prism_graph::ArchivedObjectId;
    type Resolver = <ObjectId as rkyv::Archive>::Resolver;

    fn resolve(&self, resolver: Self::Resolver, out: rkyv::Place<Self::Archived>) {
        self.id().resolve(resolver, out);
    }
}

impl<T, S: rkyv::rancor::Fallible + ?Sized> rkyv::Serialize<S> for ObjectRef<T>
where
    ObjectId: rkyv::Serialize<S>,
{
    fn serialize(&self, serializer: &mut S) -> std::result::Result<Self::Resolver, S::Error> {
        crate::value::note_nested(self.id());
        self.id().serialize(serializer)
    }
}

impl<T, D: rkyv::rancor::Fallible + ?Sized> rkyv::Deserialize<ObjectRef<T>, D>
    for prism_graph::ArchivedObjectId
{
    fn deserialize(&self, _: &mut D) -> std::result::Result<ObjectRef<T>, D::Error> {
        let id = self.to_native();
        if let Some(ctx) = context::try_current() {
            ctx.borrow_ref(id);
        }
        Ok(ObjectRef::from_raw(RawRef::adopt(id)))
    }
}
