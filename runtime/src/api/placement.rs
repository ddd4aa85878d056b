//! Placement groups: reserve bundles of resources together, across nodes (gang scheduling), and
//! run tasks and actors inside them with `.placement(&group, bundle)`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use prism_graph::Resources;

pub use crate::proto::placement::PlacementStrategy;

use crate::context::{self, Context};
use crate::node::Core;
use crate::{Error, Result};
use prism_transport::Answer;

/// The resources of one bundle of a placement group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bundle {
    num_cpus: f64,
    num_gpus: f64,
    resources: Vec<(String, f64)>,
}

impl Bundle {
    /// An empty bundle; add what it holds with [`Bundle::cpus`], [`Bundle::gpus`] and
    /// [`Bundle::resource`].
    pub fn new() -> Self {
        Bundle::default()
    }

    /// CPUs the bundle holds.
    pub fn cpus(mut self, n: f64) -> Self {
        self.num_cpus = n;
        self
    }

    /// GPUs the bundle holds.
    pub fn gpus(mut self, n: f64) -> Self {
        self.num_gpus = n;
        self
    }

    /// A custom resource the bundle holds (replacing an earlier amount of the same name).
    pub fn resource(mut self, name: &str, amount: f64) -> Self {
        self.resources.retain(|(n, _)| n != name);
        self.resources.push((name.to_string(), amount));
        self
    }

    fn demand(&self) -> std::result::Result<Resources, String> {
        crate::api::call::demand(self.num_cpus, self.num_gpus, &self.resources)
    }
}

/// A placement group: its bundles are reserved together (all or none) by the job's cluster,
/// and tasks and actors placed in it with `.placement(&group, bundle)` (one bundle) or
/// `.placement_group(&group)` (any bundle) use only what it reserved. Made with
/// [`placement_group`], ended with [`remove_placement_group`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementGroup {
    id: u64,
    bundles: u32,
}

impl PlacementGroup {
    /// The group's number in its job.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// How many bundles it has.
    pub fn bundle_count(&self) -> u32 {
        self.bundles
    }

    /// Resolves once every bundle is reserved; an error if the group was removed first.
    pub fn ready(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        let id = self.id;
        let ctx = context::current();
        async move {
            match ctx? {
                Context::Driver(core) => Ready { core, id }.await,
                ctx @ Context::Worker(_) => worker_ready(&ctx, id, None).await.map(drop),
            }
        }
    }

    /// Waits up to `timeout` for [`PlacementGroup::ready`]: whether the group is reserved.
    pub fn wait_blocking(&self, timeout: Duration) -> Result<bool> {
        if let ctx @ Context::Worker(_) = context::current()? {
            // A worker's wait blocks its thread: the timeout goes into the wait itself.
            return crate::api::block_on(worker_ready(&ctx, self.id, Some(timeout)));
        }
        let ready = self.ready();
        match crate::api::block_on(async { tokio::time::timeout(timeout, ready).await }) {
            Ok(result) => result.map(|()| true),
            Err(_) => Ok(false),
        }
    }

    /// The group and bundle (any: `None`) a call's options name, checked against the group.
    pub(crate) fn slot(&self, bundle: Option<u32>) -> GroupSlot {
        GroupSlot {
            group: self.id,
            bundle,
            bundles: self.bundles,
        }
    }
}

/// Where in a placement group a call runs (part of its options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSlot {
    group: u64,
    bundle: Option<u32>,
    bundles: u32,
}

impl GroupSlot {
    /// What a call demanding `base` demands inside the group.
    pub(crate) fn demand(&self, base: &Resources) -> std::result::Result<Resources, String> {
        if let Some(i) = self.bundle
            && i >= self.bundles
        {
            return Err(format!(
                "bundle {i} of placement group {:x} does not exist: it has {} bundle(s)",
                self.group, self.bundles
            ));
        }
        crate::proto::placement::group_demand(base, self.group, self.bundle)
    }
}

/// In a worker: waits (up to `timeout`) for the node's answer, an object read as any other;
/// whether the group is ready.
async fn worker_ready(ctx: &Context, id: u64, timeout: Option<Duration>) -> Result<bool> {
    let Context::Worker(client) = ctx else {
        unreachable!("called for workers only");
    };
    let answer = client.group_ready(id)?;
    let mut slots = [None];
    let fetched = ctx.fetch(&[answer], &mut slots[..], 1, timeout).await;
    let [slot] = slots;
    match client.take_answer(answer, slot, fetched)? {
        None => Ok(false),
        Some(Answer::Ready) => Ok(true),
        Some(Answer::Refused(refusal)) => Err(Error::from_refusal(refusal)),
        Some(other) => Err(crate::worker::unexpected(other)),
    }
}

struct Ready {
    core: std::sync::Arc<Core>,
    id: u64,
}

impl Future for Ready {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<()>> {
        self.core
            .poll_group(self.id, cx.waker())
            .map(|r| r.map_err(Error::InvalidArgument))
    }
}

/// Reserves `bundles` as one placement group placed by `strategy`; returns at once (see
/// [`PlacementGroup::ready`]). A group that does not fit yet waits for room, as in Ray.
///
/// # Errors
///
/// No bundles, an empty bundle or an invalid amount; in a worker, a broken link to its node.
pub fn placement_group(
    bundles: Vec<Bundle>,
    strategy: PlacementStrategy,
) -> Result<PlacementGroup> {
    let ctx = context::current()?;
    if bundles.is_empty() {
        return Err(Error::InvalidArgument(
            "a placement group needs at least one bundle".into(),
        ));
    }
    let mut demands = Vec::with_capacity(bundles.len());
    for (i, bundle) in bundles.iter().enumerate() {
        let demand = bundle
            .demand()
            .map_err(|e| Error::InvalidArgument(format!("bundle {i}: {e}")))?;
        if demand.iter().next().is_none() {
            return Err(Error::InvalidArgument(format!(
                "bundle {i} holds no resources"
            )));
        }
        demands.push(demand);
    }
    let count = demands.len() as u32;
    let id = match ctx {
        Context::Driver(core) => core.create_group(demands, strategy),
        Context::Worker(client) => client.create_group(demands, strategy)?,
    };
    Ok(PlacementGroup { id, bundles: count })
}

/// Removes a placement group: its reservations go back to their nodes, tasks waiting to run in
/// it fail as unschedulable, and its running tasks and actors are stopped (as in Ray).
///
/// # Errors
///
/// Prism is not initialized; in a worker, a broken link to its node.
pub fn remove_placement_group(group: &PlacementGroup) -> Result<()> {
    match context::current()? {
        Context::Driver(core) => core.remove_group(group.id),
        Context::Worker(client) => client.remove_group(group.id)?,
    }
    Ok(())
}
