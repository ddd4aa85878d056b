//! The process the cluster's head starts to host one binary's detached actors (see
//! `daemon/detached.rs`): the user's program, started in the `detached` role, which never
//! runs its `main` body. Told on its input (which only the head holds) to join the cluster
//! as job `detached-<binary>`, it is that job's driver: it makes the detached actors the head
//! orders on its stream (their names claimed at the head under its own job, as any job's),
//! keeps them alive without handles, restarts them as their options say and kills them when
//! told. It outlives a head's restart (it opens its stream again, as its job's connection
//! to the head is made again); it leaves the cluster and exits when the head tells it to
//! stop, or when no head has answered for [`HEADLESS`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_graph::{ActorId, TaskKind, TaskSpec};
use prism_transport::{ActorConfig, FrameReader, HeadOrder, OrderOutcome, OrderReply, Refusal};

use crate::Error;
use crate::config::Config;
use crate::context;
use crate::node::{Core, Orders};

/// Largest start frame the head sends on the process's input.
const MAX_START: usize = 64 << 10;

/// How long the host lives without a head that takes its stream (a head that restarts comes
/// back well within it; one that never does leaves no process behind for long).
const HEADLESS: Duration = Duration::from_secs(60);

/// The pause before the host opens its stream again.
const AGAIN: Duration = Duration::from_millis(200);

/// Whether this process was started by the head to host detached actors.
pub(crate) fn is_detached_host() -> bool {
    std::env::var_os(crate::process::ENV_ROLE)
        .is_some_and(|role| role == crate::process::DETACHED_ROLE)
}

/// Why the host stopped before the head told it to.
#[derive(Debug, thiserror::Error)]
enum HostError {
    /// The start on the process's input could not be read.
    #[error("cannot read the head's start on the input: {0}")]
    Start(String),
    /// Joining the cluster failed.
    #[error("cannot join the cluster: {0}")]
    Join(Error),
    /// No head took the stream for too long.
    #[error("no head took the detached actors' orders for {} s (last: {why})", HEADLESS.as_secs())]
    Headless {
        /// Why the last try failed.
        why: String,
    },
}

/// Serves the head's orders until it says stop (or is gone for good), then leaves the
/// cluster and exits the process.
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
    let mut input = FrameReader::new(std::io::stdin().lock(), MAX_START);
    let start = match input.read_frame() {
        Ok(Some(frame)) => decode(&frame).map_err(HostError::Start)?,
        Ok(None) => return Err(HostError::Start("the input ended".to_string())),
        Err(e) => return Err(HostError::Start(e.to_string())),
    };
    let HeadOrder::Start { head, token, job } = start else {
        return Err(HostError::Start(format!("the first order was {start:?}")));
    };
    let config = Config {
        address: Some(head),
        token: Some(token),
        detached_host: Some(job.clone()),
        ..Config::default()
    };
    let core = Core::start(config).map_err(HostError::Join)?;
    context::set_driver(core.clone()).map_err(HostError::Join)?;
    tracing::info!(job, "hosting detached actors");
    let runtime = core.handle().clone();
    let mut heard = Instant::now();
    loop {
        let why = match runtime.block_on(core.detached_orders()) {
            Ok(mut orders) => {
                heard = Instant::now();
                match runtime.block_on(obey(&core, &mut orders)) {
                    None => return Ok(()),
                    Some(why) => why,
                }
            }
            Err(why) => why,
        };
        if heard.elapsed() > HEADLESS {
            return Err(HostError::Headless { why });
        }
        tracing::info!(job, "the head's orders stopped ({why}): asking again");
        std::thread::sleep(AGAIN);
    }
}

/// Obeys the head's orders on `orders` until it says stop (`None`) or the stream ends (why).
async fn obey(core: &Arc<Core>, orders: &mut Orders) -> Option<String> {
    loop {
        let (order, outcome) = match orders.next().await {
            Ok(HeadOrder::Create { order, spec, setup }) => {
                (order, create(core, *spec, setup).await)
            }
            Ok(HeadOrder::Kill { order, actor }) => (order, core.kill_ordered(actor)),
            Ok(HeadOrder::Stop) => return None,
            Ok(HeadOrder::Start { .. }) => continue,
            Err(why) => return Some(why),
        };
        if let Err(why) = orders.reply(&OrderReply { order, outcome }).await {
            return Some(why);
        }
    }
}

/// Makes the detached actor of creation `spec` (its task renumbered in this job: the
/// creator's ids are its own) and waits for its name's claim; no handle is kept.
async fn create(core: &Arc<Core>, mut spec: TaskSpec, setup: ActorConfig) -> OrderOutcome {
    let TaskKind::ActorCreation {
        max_concurrency, ..
    } = spec.kind
    else {
        return OrderOutcome::Failed(format!("{} is not an actor's creation", spec.function));
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
    let made = match core.create_actor(spec, None, setup) {
        Ok(actor) => std::future::poll_fn(|cx| core.poll_claim(actor, cx.waker()))
            .await
            .map(|_| actor),
        Err(e) => Err(e),
    };
    match made {
        Ok(actor) => {
            // Detached: it lives without handles, until it is killed.
            core.actor_release(actor);
            OrderOutcome::Created(actor)
        }
        Err(Error::ActorNameTaken {
            name,
            namespace,
            holder,
        }) => OrderOutcome::Refused(Refusal::NameTaken {
            name,
            namespace,
            holder,
        }),
        Err(e) => OrderOutcome::Failed(e.to_string()),
    }
}

fn decode(frame: &prism_transport::Frame) -> Result<HeadOrder, String> {
    let archived = frame.access::<HeadOrder>().map_err(|e| e.to_string())?;
    rkyv::deserialize::<HeadOrder, rkyv::rancor::Error>(archived).map_err(|e| e.to_string())
}
