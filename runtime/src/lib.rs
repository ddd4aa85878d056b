//! Prism: a distributed execution framework in the line of Ray, typed at compile time.
//!
//! Annotate functions with [`#[remote]`](remote); calling `f::remote(args)` returns an
//! [`ObjectRef`] at once and the call runs in a worker process of the cluster. References are
//! accepted wherever a value of the same type is expected, so task graphs are built by passing
//! futures around; `.await`, [`get`], [`get_all`] and [`wait`] collect results.
//!
//! # Examples
//!
//! ```no_run
//! use prism::remote;
//!
//! #[remote]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! #[remote(num_cpus = 1, max_retries = 3)]
//! fn add(a: u64, b: u64) -> u64 {
//!     a + b
//! }
//!
//! #[prism::main]
//! async fn main() -> prism::Result<()> {
//!     let a = square::remote(3u64);
//!     let b = square::remote(4u64);
//!     let sum = add::remote(a, b); // references flow into the next task
//!     assert_eq!(sum.await?, 25);
//!     Ok(())
//! }
//! ```

#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

// The crate's own actors (`collective::Rendezvous`) use the macros' `::prism` paths.
#[cfg(feature = "collective")]
extern crate self as prism;

mod api;
#[doc(hidden)]
pub mod cli;
/// Collective communication among actors: allreduce, broadcast, allgather, reduce-scatter,
/// barrier.
#[cfg(feature = "collective")]
pub mod collective;
mod config;
mod context;
mod daemon;
mod dashboard;
mod error;
mod files;
mod generator;
#[cfg(test)]
mod layers;
mod node;
mod process;
mod proto;
mod registry;
mod rng;
mod session;
/// The deterministic cluster simulator behind `prism-sim` (not part of the user API).
#[doc(hidden)]
pub mod sim;
mod store;
#[cfg(feature = "tune")]
pub mod tune;
mod value;
mod worker;

#[doc(inline)]
pub use prism_macros::{actor, main, remote};

pub use api::actor::{
    ASYNC_ACTOR_CONCURRENCY, ActorHandle, ActorOptions, Lifetime, get_actor, get_actor_in, kill,
};
pub use api::memory::{Location, MemoryReport, ObjectInfo, memory};
pub use api::object_ref::{ArchivedRef, ObjectRef};
pub use api::placement::{
    Bundle, PlacementGroup, PlacementStrategy, placement_group, remove_placement_group,
};
pub use api::state;
pub use api::state::timeline;
pub use api::stream::{Blocking, ObjectRefStream};
pub use api::{
    IntoRefs, WaitResult, available_resources, cancel, cancel_force, cluster_resources, get,
    get_all, get_all_blocking, get_archived, get_archived_blocking, get_blocking, get_timeout,
    get_timeout_blocking, init, init_with, is_driver, is_initialized, namespace, node_name, nodes,
    owned_object_count, put, put_ref, shutdown, wait, wait_blocking, worker_messages_received,
    worker_messages_relayed,
};
pub use config::Config;
pub use error::{Error, Result, TaskError};
pub use generator::Stream;
pub use prism_graph::{ActorId, ObjectId, TaskId};
pub use rkyv;
pub use rkyv::Archived;
pub use value::Remotable;

/// What generated code needs; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::__actor_options_builder as actor_options_builder;
    pub use crate::__options_builder as options_builder;
    pub use crate::api::actor::{
        Actor, ActorHandle, ActorImpl, ActorOptions, ActorStub, RawActor, call as call_actor,
        call_stream as call_actor_stream, create as create_actor, try_create as try_create_actor,
    };
    pub use crate::api::call::{ArgSlot, IntoArg, TaskOptions, submit, submit_stream};
    pub use crate::api::object_ref::{ObjectRef, RawRef};
    pub use crate::api::stream::ObjectRefStream;
    pub use crate::generator::Stream;

    /// Where in `group` a call runs (for the generated option builders).
    pub fn group_slot(
        group: &crate::PlacementGroup,
        bundle: Option<u32>,
    ) -> crate::api::placement::GroupSlot {
        group.slot(bundle)
    }
    pub use crate::api::actor::actor_defaults;
    pub use crate::api::{block_on, enter_worker_if_spawned, run_main, run_main_sync};
    pub use crate::error::Result;
    pub use crate::registry::{
        ActorClass, ActorMethod, ActorState, AsyncActor, AsyncCall, CallData, Returned,
        SharedActor, read_actor, share_actor, write_actor,
    };
    pub use crate::registry::{Invocation, RemoteFunction};
    pub use crate::value::Remotable;
    pub use inventory;
    pub use prism_graph::TaskError;
    pub use rkyv;
    pub use rkyv::util::AlignedVec;
}
