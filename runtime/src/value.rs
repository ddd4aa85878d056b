//! What may cross a process boundary: any type rkyv can archive, validate and deserialize.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

/// A value that can be an argument or a return value of a remote function, or an object.
///
/// Implemented for every type that derives `rkyv::Archive`, `rkyv::Serialize` and
/// `rkyv::Deserialize` (with bytecheck, rkyv's default), and for the standard types rkyv supports.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot cross a process boundary as a Prism value",
    note = "derive `prism::rkyv::Archive`, `prism::rkyv::Serialize` and `prism::rkyv::Deserialize` for it"
)]
pub trait Remotable: rkyv::Archive + Sized + Send + 'static {
    /// Archives the value.
    fn to_bytes(&self) -> Result<AlignedVec, rancor::Error>;
    /// The length of the value's archive, without writing it.
    fn archived_len(&self) -> Result<usize, rancor::Error>;
    /// Archives the value into `buf` (aligned, at least [`archived_len`](Self::archived_len)
    /// long); returns the length written.
    fn archive_into(&self, buf: &mut [u8]) -> Result<usize, rancor::Error>;
    /// Validates archived bytes and deserializes them.
    fn from_bytes(bytes: &[u8]) -> Result<Self, rancor::Error>;
    /// Validates archived bytes (which must be aligned) and views them without copying.
    fn access(bytes: &[u8]) -> Result<&Self::Archived, rancor::Error>;
}

impl<T> Remotable for T
where
    T: rkyv::Archive
        + for<'a, 'b> rkyv::Serialize<HighSerializer<Sink<'b>, ArenaHandle<'a>, rancor::Error>>
        + Send
        + 'static,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, HighDeserializer<rancor::Error>>,
{
    fn to_bytes(&self) -> Result<AlignedVec, rancor::Error> {
        match rkyv::api::high::to_bytes_in::<_, rancor::Error>(self, Sink::Vec(AlignedVec::new()))?
        {
            Sink::Vec(bytes) => Ok(bytes),
            _ => unreachable!("the sink keeps its kind"),
        }
    }

    fn archived_len(&self) -> Result<usize, rancor::Error> {
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(self, Sink::Count(0))
            .map(|sink| rkyv::ser::Positional::pos(&sink))
    }

    fn archive_into(&self, buf: &mut [u8]) -> Result<usize, rancor::Error> {
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(self, Sink::Slice { buf, pos: 0 })
            .map(|sink| rkyv::ser::Positional::pos(&sink))
    }

    fn access(bytes: &[u8]) -> Result<&Self::Archived, rancor::Error> {
        rkyv::access::<T::Archived, rancor::Error>(bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, rancor::Error> {
        if (bytes.as_ptr() as usize).is_multiple_of(16) {
            rkyv::from_bytes::<T, rancor::Error>(bytes)
        } else {
            let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
            aligned.extend_from_slice(bytes);
            rkyv::from_bytes::<T, rancor::Error>(&aligned)
        }
    }
}

/// Where an archive is written: counted only (to size a segment first), into a fixed buffer
/// (a shared-memory segment being filled in place), or into a growing vector.
#[doc(hidden)]
#[derive(Debug)]
pub enum Sink<'a> {
    /// Counts bytes without storing them.
    Count(usize),
    /// Writes into a buffer of a measured size.
    Slice {
        /// The buffer.
        buf: &'a mut [u8],
        /// Bytes written so far.
        pos: usize,
    },
    /// Appends to a vector.
    Vec(AlignedVec),
}

impl rkyv::ser::Positional for Sink<'_> {
    fn pos(&self) -> usize {
        match self {
            Sink::Count(n) => *n,
            Sink::Slice { pos, .. } => *pos,
            Sink::Vec(v) => v.len(),
        }
    }
}

impl<E: rancor::Source> rkyv::ser::Writer<E> for Sink<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        match self {
            Sink::Count(n) => *n += bytes.len(),
            Sink::Slice { buf, pos } => {
                let end = *pos + bytes.len();
                let Some(target) = buf.get_mut(*pos..end) else {
                    return Err(E::new(std::io::Error::other(format!(
                        "archive exceeds its {}-byte segment",
                        buf.len()
                    ))));
                };
                target.copy_from_slice(bytes);
                *pos = end;
            }
            Sink::Vec(v) => v.extend_from_slice(bytes),
        }
        Ok(())
    }
}

/// What a value being encoded refers to: objects and actors.
#[derive(Debug, Default)]
pub(crate) struct Nested {
    /// The objects whose references it holds.
    pub(crate) objects: Vec<prism_graph::ObjectId>,
    /// The actors whose handles it holds.
    pub(crate) actors: Vec<prism_graph::ActorId>,
}

thread_local! {
    /// What this thread archived while a value is being encoded.
    static NESTED: std::cell::RefCell<Option<Nested>> = const { std::cell::RefCell::new(None) };
}

/// Runs `encode` and returns, with its result, the objects whose references and the actors
/// whose handles it archived: the value being encoded contains them, so they must live as long
/// as it.
pub(crate) fn collect_nested<R>(encode: impl FnOnce() -> R) -> (R, Nested) {
    let outer = NESTED.with(|n| n.borrow_mut().replace(Nested::default()));
    let result = encode();
    let nested = NESTED.with(|n| std::mem::replace(&mut *n.borrow_mut(), outer));
    (result, nested.unwrap_or_default())
}

/// A handle to `actor` is being archived inside a value: noted if [`collect_nested`] runs.
pub(crate) fn note_actor(actor: prism_graph::ActorId) {
    NESTED.with(|n| {
        if let Some(nested) = n.borrow_mut().as_mut() {
            nested.actors.push(actor);
        }
    });
}

/// A reference to `id` is being archived inside a value: noted if [`collect_nested`] runs.
pub(crate) fn note_nested(id: prism_graph::ObjectId) {
    NESTED.with(|n| {
        if let Some(nested) = n.borrow_mut().as_mut() {
            nested.objects.push(id);
        }
    });
}
