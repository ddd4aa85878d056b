//! `prism::memory()`: what the object store holds — each object's size, where it lives, which
//! function made it and how many references keep it.

use crate::context::{self, Context};
use crate::{Error, Result};

pub use crate::proto::owner::memory::{Location, MemoryReport, ObjectInfo};

/// What the object store holds now. Known in the driver (which owns every object in the
/// embedded cluster).
pub fn memory() -> Result<MemoryReport> {
    match context::current()? {
        Context::Driver(core) => Ok(core.memory()),
        Context::Worker(_) => Err(Error::InvalidArgument(
            "prism::memory() is answered by the driver".into(),
        )),
    }
}
