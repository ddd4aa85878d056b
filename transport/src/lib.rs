//! Prism's transport room: it moves bytes and nothing else. A frame is an 8-byte header (length
//! and magic) followed by the rkyv archive of one protocol message; every frame is checked
//! against a size limit before anything is allocated and validated (bytecheck) before it is
//! read, so a corrupt or hostile peer gets a clear [`FrameError`], never undefined behaviour.
//!
//! The same frames serve the Unix sockets between a node and its workers and the QUIC streams
//! between hosts ([`quic`]), which run mutual TLS under the cluster's own CA ([`tls`]).
//!
//! # Examples
//!
//! ```
//! use prism_transport::{FrameDecoder, ToWorker, encode_frame};
//!
//! let mut wire = Vec::new();
//! encode_frame(&ToWorker::Shutdown, &mut wire).unwrap();
//! let mut decoder = FrameDecoder::new(1 << 20);
//! decoder.extend(&wire);
//! let frame = decoder.next_frame().unwrap().expect("one whole frame");
//! assert!(matches!(frame.access::<ToWorker>().unwrap(), prism_transport::ArchivedToWorker::Shutdown));
//! ```

#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

pub mod direct;
mod directory;
mod frame;
mod io;
mod message;
mod path;
pub mod quic;
mod state;
pub mod tls;
pub mod transfer;

pub use directory::{
    ActorReach, ActorState, ActorStatus, GroupState, GroupStatus, JobInfo, JobState, JobStatus,
    JobUpdate,
};
pub use frame::{
    DEFAULT_MAX_FRAME, Frame, FrameDecoder, FrameError, HEADER_LEN, Message, encode_frame,
    encode_payload,
};
pub use io::{AsyncFrameReader, FrameReader};
pub use message::{
    ActorConfig, ActorPlace, Answer, ArchivedActorPlace, ArchivedExecute, ArchivedFromControl,
    ArchivedFromHost, ArchivedHello, ArchivedHostEvent, ArchivedHostHello, ArchivedHostReply,
    ArchivedJoinReply, ArchivedJoinRequest, ArchivedObjectValue, ArchivedOutcome,
    ArchivedOwnedPhase, ArchivedPeerFrame, ArchivedPeerLease, ArchivedPullKey, ArchivedPullReply,
    ArchivedPullRequest, ArchivedPurpose, ArchivedRunTimes, ArchivedStreamRun, ArchivedTaskEnd,
    ArchivedToHost, ArchivedToNode, ArchivedToPeer, ArchivedToWorker, ArchivedValue,
    DetachedCreation, DirectHello, Execute, FromControl, FromHost, FromLogs, HandedTask,
    HandshakeError, HeadOrder, Hello, HostEvent, HostHello, HostReply, JoinReply, JoinRequest,
    MAX_AWAITING, MemberUpdate, NodeStatus, NodeUsage, NodeUse, ObjectValue, OrderOutcome,
    OrderReply, Outcome, OwnedEvent, OwnedPhase, PROTOCOL_VERSION, PeerFrame, PeerLease,
    PendingDemand, PullKey, PullReply, PullRequest, PullStats, Purpose, Refusal, RunTimes, Secret,
    StreamRun, TaskEnd, ToControl, ToHost, ToLogs, ToNode, ToPeer, ToWorker, Value, platform,
};
pub use state::{
    FunctionTimes, HISTOGRAM_BOUNDS_US, Histogram, JobEvents, JobSummary, JobTask, ObjectCount,
    TaskCount, TaskEvent, TaskInfo, TaskPhase, TaskQuery, TaskRun, TaskType,
};
