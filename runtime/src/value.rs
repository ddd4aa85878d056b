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
    /// Validates archived bytes and deserializes them.
    fn from_bytes(bytes: &[u8]) -> Result<Self, rancor::Error>;
    /// Validates archived bytes (which must be aligned) and views them without copying.
    fn access(bytes: &[u8]) -> Result<&Self::Archived, rancor::Error>;
}

impl<T> Remotable for T
where
    T: rkyv::Archive
        + for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
        + Send
        + 'static,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, HighDeserializer<rancor::Error>>,
{
    fn to_bytes(&self) -> Result<AlignedVec, rancor::Error> {
        rkyv::to_bytes::<rancor::Error>(self)
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
