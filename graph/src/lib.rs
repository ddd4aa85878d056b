//! Prism's pure data model: the ids of tasks and objects, the [`TaskSpec`] a submitter hands to
//! its owner, resource demands, task errors, and the owner's DAG of tasks and objects
//! ([`TaskGraph`]) with dependency readiness, failure propagation and lineage.
//!
//! Nothing here does IO or knows about an async runtime: the owner in `prism` drives these types
//! with events and acts on what they return.
//!
//! # Examples
//!
//! ```
//! use prism_graph::{ObjectId, TaskGraph, TaskId, Readiness};
//!
//! let mut graph = TaskGraph::new();
//! let read = TaskId::new(0, 1);
//! let add = TaskId::new(0, 2);
//! assert_eq!(graph.add_task(read, &[], 1).unwrap(), Readiness::Ready);
//! let input = ObjectId::new(read, 0);
//! assert_eq!(graph.add_task(add, &[input, input], 1).unwrap(), Readiness::Waiting);
//! assert_eq!(graph.complete_task(read).unwrap(), vec![add]);
//! ```

#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

mod dag;
mod error;
mod ids;
mod resources;
mod spec;

pub use dag::{GraphError, ObjectState, Readiness, TaskGraph, TaskState};
pub use error::TaskError;
pub use ids::{
    ActorId, ArchivedActorId, ArchivedObjectId, ArchivedTaskId, IdMap, IdSet, ObjectId,
    ParseTaskIdError, TaskId,
};
pub use resources::{Amount, PlacementStrategy, ResourceError, Resources};
pub use spec::{ArchivedTaskKind, Arg, TaskKind, TaskSpec};
