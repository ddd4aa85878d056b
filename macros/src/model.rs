//! The typed model of a `#[remote]` function, built from the parsed item.

use syn::{Ident, ItemFn, Type};

use crate::attr::RemoteOptions;

/// One argument: `name: Type`.
pub(crate) struct Param {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
}

/// A remote function, validated.
pub(crate) struct RemoteFn {
    pub(crate) item: ItemFn,
    pub(crate) params: Vec<Param>,
    /// The return types, one per return object.
    pub(crate) returns: Vec<Type>,
    /// Whether the function returns a tuple split into several objects.
    pub(crate) split: bool,
    pub(crate) is_async: bool,
    pub(crate) options: RemoteOptions,
}
