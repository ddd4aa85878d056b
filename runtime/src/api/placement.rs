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

/// A placement group: its bundles are reserved together (all or none) by the driver's cluster,
/// and tasks and actors placed in it with `.placement(&group, bundle)` (one bundle) or
/// `.placement_group(&group)` (any bundle) use only what it reserved. Made with
/// [`placement_group`], ended with [`remove_placement_group`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementGroup {
    id: u64,
    bundles: u32,
}

impl PlacementGroup {
    /// The group's number in this driver.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// How many bundles it has.
    pub fn bundle_count(&self) -> u32 {
        self.bundles
    }

    /// Resolves once every bundle is reserved; an error if the group was removed first.
    pub fn ready(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        Ready {
            core: driver_core(),
            id: self.id,
        }
    }

    /// Waits up to `timeout` for [`PlacementGroup::ready`]: whether the group is reserved.
    pub fn wait_blocking(&self, timeout: Duration) -> Result<bool> {
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

fn driver_core() -> Result<std::sync::Arc<Core>> {
    match context::current()? {
        Context::Driver(core) => Ok(core),
        Context::Worker(_) => Err(Error::InvalidArgument(
            "placement groups are made, awaited and removed by the driver".into(),
        )),
    }
}

struct Ready {
    core: Result<std::sync::Arc<Core>>,
    id: u64,
}

impl Future for Ready {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<()>> {
        let core = match &self.core {
            Ok(core) => core,
            Err(e) => return Poll::Ready(Err(e.clone())),
        };
        core.poll_group(self.id, cx.waker())
            .map(|r| r.map_err(Error::InvalidArgument))
    }
}

/// Reserves `bundles` as one placement group placed by `strategy`; returns at once (see
/// [`PlacementGroup::ready`]). A group that does not fit yet waits for room, as in Ray.
///
/// # Errors
///
/// No bundles, an empty bundle or an invalid amount; a call outside the driver.
pub fn placement_group(
    bundles: Vec<Bundle>,
    strategy: PlacementStrategy,
) -> Result<PlacementGroup> {
    let core = driver_core()?;
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
    let id = core.create_group(demands, strategy);
    Ok(PlacementGroup { id, bundles: count })
}

/// Removes a placement group: its reservations go back to their nodes, tasks waiting to run in
/// it fail as unschedulable, and its running tasks and actors are stopped (as in Ray).
///
/// # Errors
///
/// A call outside the driver.
pub fn remove_placement_group(group: &PlacementGroup) -> Result<()> {
    driver_core()?.remove_group(group.id);
    Ok(())
}
