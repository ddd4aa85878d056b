//! The typed model of a `#[remote]` function, built from the parsed item.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Ident, ItemFn, Type};

use crate::attr::RemoteOptions;

/// One argument: `name: Type`, or `name: &Archived<Type>` for a zero-copy view.
pub(crate) struct Param {
    pub(crate) ident: Ident,
    /// The value's type (`Type` in both forms): callers pass a `Type` or an `ObjectRef<Type>`.
    pub(crate) ty: Type,
    /// Whether the function takes a `&Archived<Type>` view instead of an owned value.
    pub(crate) archived: bool,
}

impl Param {
    /// How errors name the argument: `b: Vec<f64>`.
    fn desc(&self) -> String {
        let ty = &self.ty;
        let ty = quote!(#ty)
            .to_string()
            .replace(" < ", "<")
            .replace(" >", ">");
        if self.archived {
            format!("{}: &Archived<{ty}>", self.ident)
        } else {
            format!("{}: {ty}", self.ident)
        }
    }
}

/// The statements that decode each argument from the invocation `__call`.
pub(crate) fn decode_params(params: &[Param]) -> Vec<TokenStream> {
    params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (ident, ty, desc) = (&p.ident, &p.ty, p.desc());
            if p.archived {
                quote!(let #ident = __call.arg_archived::<#ty>(#i, #desc)?;)
            } else {
                quote!(let #ident = __call.arg::<#ty>(#i, #desc)?;)
            }
        })
        .collect()
}

/// A remote function, validated.
pub(crate) struct RemoteFn {
    pub(crate) item: ItemFn,
    pub(crate) params: Vec<Param>,
    /// The return types, one per return object.
    pub(crate) returns: Vec<Type>,
    /// Whether the function returns a tuple split into several objects.
    pub(crate) split: bool,
    /// `num_returns = N` on a function returning `Vec<T>`: `returns` holds `T`, and the call
    /// gives `N` references, one per element.
    pub(crate) listed: Option<u32>,
    /// The function returns `Stream<T>` (`returns` holds `T`): a streaming generator.
    pub(crate) streamed: bool,
    pub(crate) is_async: bool,
    pub(crate) options: RemoteOptions,
}
