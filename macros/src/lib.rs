//! Prism's procedural macros: `#[remote]` turns a function into a remote function with typed
//! stubs and a registry entry; `#[prism::main]` makes `main` start Prism (and makes a process
//! that a node started as a worker run the worker loop instead of the body).
//!
//! Each macro parses into a typed model (`model`), validates it collecting every error
//! (`check`), and generates code (`expand`) that names only `::prism::__private::*`.

#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]

mod actor;
mod attr;
mod check;
mod expand;
mod model;

use proc_macro::TokenStream;

/// Makes a function callable as a remote task: `name::remote(args)` returns an
/// `ObjectRef<R>` at once, `name::options().num_cpus(2).remote(args)` overrides options per
/// call. Options: `num_cpus`, `num_gpus`, `resources(name = amount, ...)`, `max_retries`,
/// `retry_exceptions`, `num_returns` (for tuple returns: one `ObjectRef` per element).
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::remote(attr.into(), item.into()).into()
}

/// Makes a struct an actor class. Put it on the struct and on its `impl` block: the impl's
/// `fn new(..) -> Self` (or `Result<Self, E>`) is the constructor, and every `&self` /
/// `&mut self` method becomes a stub on `ActorHandle<Type>` returning an `ObjectRef`.
/// `Type::remote(args)` starts the actor; `Type::options().name("ps").max_restarts(3)
/// .remote(args)` sets options.
#[proc_macro_attribute]
pub fn actor(attr: TokenStream, item: TokenStream) -> TokenStream {
    actor::expand(attr.into(), item.into()).into()
}

/// Starts Prism around `main` (sync or async); in a worker process, runs the worker loop and
/// never the body.
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::main(attr.into(), item.into()).into()
}
