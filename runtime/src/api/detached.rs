//! The process the cluster's head starts to host one binary's detached actors (see
//! `daemon/detached.rs`): the user's program, started in the `detached` role, which never
//! runs its `main` body. Told on the link it inherited from the head to join the cluster as
//! job `detached-<binary>`, it is that job's driver: it makes the detached actors the head
//! orders (their names claimed at the head under its own job, as any job's), keeps them
//! alive without handles, restarts them as their options say and kills them when told. It
//! exits when the head's link closes (and dies with the head).

use std::os::unix::net::UnixStream;
use std::sync::Arc;

use prism_graph::{ActorId, TaskKind, TaskSpec};
use prism_transport::{
    ActorConfig, DetachedOrder, DetachedOutcome, DetachedReply, FrameReader, Refusal,
};

use crate::Error;
use crate::config::Config;
use crate::context;
use crate::node::Core;

/// Largest order the head sends (a creation carries its arguments' values, at most 8 MiB
/// each by value).
const MAX_ORDER: usize = 512 << 20;

/// Whether this process was started by the head to host detached actors.
pub(crate) fn is_detached_host() -> bool {
    std::env::var_os(crate::process::ENV_ROLE)
        .is_some_and(|role| role == crate::process::DETACHED_ROLE)
}

/// Why the host stopped before its link closed.
#[derive(Debug, thiserror::Error)]
enum HostError {
    /// The link to the head failed.
    #[error("the link to the head failed: {0}")]
    Link(#[from] std::io::Error),
    /// The head sent what is not an order.
    #[error("the head sent a malformed order: {0}")]
    Frame(String),
    /// The first order was not the start.
    #[error("the head's first order was not the start")]
    NotStarted,
    /// Joining the cluster failed.
    #[error("cannot join the cluster: {0}")]
    Join(Error),
}

/// Serves the head's orders until its link closes, then exits the process.
pub(crate) fn run_host() -> ! {
    let code = match serve() {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("the host of detached actors stops: {e}");
            1
        }
    };
    super::shutdown();
    std::process::exit(code)
}

fn serve() -> Result<(), HostError> {
    let link = crate::process::inherited_link()?;
    let mut orders = FrameReader::new(link.try_clone()?, MAX_ORDER);
    let mut answers = link;
    let Some(first) = orders
        .read_frame()
        .map_err(|e| HostError::Frame(e.to_string()))?
    else {
        return Ok(());
    };
    let DetachedOrder::Start { head, token, job } = decode(&first)? else {
        return Err(HostError::NotStarted);
    };
    let config = Config {
        address: Some(head),
        token: Some(token),
        detached_host: Some(job.clone()),
        ..Config::default()
    };
    let core = match Core::start(config).and_then(|core| {
        context::set_driver(core.clone())?;
        Ok(core)
    }) {
        Ok(core) => core,
        Err(e) => {
            reply(&mut answers, 0, DetachedOutcome::Failed(e.to_string()))?;
            return Err(HostError::Join(e));
        }
    };
    tracing::info!(job, "hosting detached actors");
    reply(&mut answers, 0, DetachedOutcome::Ready)?;
    while let Some(frame) = orders
        .read_frame()
        .map_err(|e| HostError::Frame(e.to_string()))?
    {
        let (order, outcome) = match decode(&frame)? {
            DetachedOrder::Create { order, spec, setup } => (order, create(&core, *spec, setup)),
            DetachedOrder::Kill { order, actor } => {
                core.kill_actor(actor);
                (order, DetachedOutcome::Killed)
            }
            DetachedOrder::Start { .. } => {
                let why = "the host was started already".to_string();
                (0, DetachedOutcome::Failed(why))
            }
        };
        reply(&mut answers, order, outcome)?;
    }
    // The head is gone or stopping: leave the cluster (the actors die with the job) before
    // the link closes, which the head takes for the exit.
    super::shutdown();
    drop(answers);
    Ok(())
}

/// Makes the detached actor of creation `spec` (its task renumbered in this job: the
/// creator's ids are its own) and waits for its name's claim; no handle is kept.
fn create(core: &Arc<Core>, mut spec: TaskSpec, setup: ActorConfig) -> DetachedOutcome {
    let TaskKind::ActorCreation {
        max_concurrency, ..
    } = spec.kind
    else {
        return DetachedOutcome::Failed(format!("{} is not an actor's creation", spec.function));
    };
    let task_id = core.next_task_id();
    spec.task_id = task_id;
    spec.kind = TaskKind::ActorCreation {
        actor: ActorId(task_id),
        max_concurrency,
    };
    let setup = ActorConfig {
        detached: true,
        get_if_exists: false,
        ..setup
    };
    let made = core.create_actor(spec, None, setup).and_then(|actor| {
        let claimed = std::future::poll_fn(|cx| core.poll_claim(actor, cx.waker()));
        super::spin::block_on(claimed).map(|_| actor)
    });
    match made {
        Ok(actor) => {
            // Detached: it lives without handles, until it is killed.
            core.actor_release(actor);
            DetachedOutcome::Created(actor)
        }
        Err(Error::ActorNameTaken {
            name,
            namespace,
            holder,
        }) => DetachedOutcome::Refused(Refusal::NameTaken {
            name,
            namespace,
            holder,
        }),
        Err(e) => DetachedOutcome::Failed(e.to_string()),
    }
}

fn decode(frame: &prism_transport::Frame) -> Result<DetachedOrder, HostError> {
    let archived =
        (frame.access::<DetachedOrder>()).map_err(|e| HostError::Frame(e.to_string()))?;
    rkyv::deserialize::<DetachedOrder, rkyv::rancor::Error>(archived)
        .map_err(|e| HostError::Frame(e.to_string()))
}

fn reply(link: &mut UnixStream, order: u64, outcome: DetachedOutcome) -> Result<(), HostError> {
    let mut frame = Vec::new();
    prism_transport::encode_frame(&DetachedReply { order, outcome }, &mut frame)
        .map_err(|e| HostError::Frame(e.to_string()))?;
    std::io::Write::write_all(link, &frame)?;
    Ok(())
}
