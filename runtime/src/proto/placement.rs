//! Placement groups: bundles of resources reserved together on the cluster's nodes (gang
//! scheduling). As in Ray, a reserved bundle leaves its node's free resources and comes back as
//! resources of its own, named after the group and the bundle (`CPU_group_0_<group>` for bundle
//! 0, `CPU_group_<group>` for any bundle, and a `bundle_group_…` marker), so the schedulers need
//! nothing new: a task placed in a group demands those names instead of plain CPUs.
//!
//! A group is placed whole or not at all, by its strategy; one that does not fit yet waits and
//! is tried again whenever the nodes change. Tasks submitted to it meanwhile wait with it.

use std::task::Waker;

use prism_graph::{Resources, TaskId};

pub use prism_graph::PlacementStrategy;

use crate::proto::nodes::{NodeIdx, Nodes};

/// The units of the marker resource each reserved bundle carries; a task in the group demands
/// [`MARKER_DEMAND`] of it, so even a task that asks for nothing lands on the bundle's node.
const MARKER_TOTAL: f64 = 1000.0;
const MARKER_DEMAND: f64 = 0.001;

/// The name resource `name` of bundle `bundle` (any bundle: `None`) of `group` takes.
pub(crate) fn group_name(name: &str, bundle: Option<u32>, group: u64) -> String {
    match bundle {
        Some(i) => format!("{name}_group_{i}_{group:x}"),
        None => format!("{name}_group_{group:x}"),
    }
}

/// What a task demanding `base` in bundle `bundle` (any: `None`) of `group` demands of its node.
pub(crate) fn group_demand(
    base: &Resources,
    group: u64,
    bundle: Option<u32>,
) -> Result<Resources, String> {
    let mut demand = Resources::default();
    let mut set = |name: &str, amount: f64| {
        demand
            .set(name, amount)
            .map_err(|e| format!("resource {name:?}: {e}"))
    };
    for (name, amount) in base.iter() {
        set(&group_name(name, None, group), amount.as_f64())?;
        if bundle.is_some() {
            set(&group_name(name, bundle, group), amount.as_f64())?;
        }
    }
    set(&group_name("bundle", None, group), MARKER_DEMAND)?;
    if bundle.is_some() {
        set(&group_name("bundle", bundle, group), MARKER_DEMAND)?;
    }
    Ok(demand)
}

/// The resources bundle `i` of `group` adds to its node once reserved.
pub(crate) fn reserved_as(bundle: &Resources, group: u64, i: u32) -> Resources {
    let mut named = Resources::default();
    for (name, amount) in bundle.iter() {
        let _ = named.set(&group_name(name, Some(i), group), amount.as_f64());
        let _ = named.set(&group_name(name, None, group), amount.as_f64());
    }
    let _ = named.set(&group_name("bundle", Some(i), group), MARKER_TOTAL);
    let _ = named.set(&group_name("bundle", None, group), MARKER_TOTAL);
    named
}

/// The group a demand names, if any (from its any-bundle marker).
pub(crate) fn group_of(demand: &Resources) -> Option<u64> {
    demand.iter().find_map(|(name, _)| {
        let hex = name.strip_prefix("bundle_group_")?;
        if hex.contains('_') {
            return None; // a bundle's own marker; its group's marker is present too
        }
        u64::from_str_radix(hex, 16).ok()
    })
}

/// Where a group is in its life.
#[derive(Debug)]
pub(crate) enum Stage {
    /// Waits for room.
    Pending,
    /// Reserved: bundle `i` on node `nodes[i]`.
    Placed(Vec<NodeIdx>),
}

/// Why a group's tasks cannot run when it is not in the books (any more).
pub(crate) fn gone(id: u64) -> String {
    format!("placement group {id:x} was removed (or was not made by this driver)")
}

/// One placement group the driver made.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) bundles: Vec<Resources>,
    pub(crate) strategy: PlacementStrategy,
    pub(crate) stage: Stage,
    pub(crate) waiters: Vec<Waker>,
    /// Tasks submitted to it before it was placed.
    pub(crate) parked: Vec<TaskId>,
    /// Objects promised to workers waiting for it to be placed (see
    /// [`prism_transport::ToNode::GroupReady`]).
    pub(crate) answers: Vec<prism_graph::ObjectId>,
}

/// Where each bundle would go now, or `None` when the strategy cannot be met yet.
pub(crate) fn plan(
    nodes: &Nodes,
    bundles: &[Resources],
    strategy: PlacementStrategy,
    home: Option<NodeIdx>,
) -> Option<Vec<NodeIdx>> {
    let live: Vec<NodeIdx> = (0..nodes.len())
        .filter(|&i| nodes.get(i).is_some_and(|n| n.takes_work()))
        .collect();
    let mut free: Vec<Resources> = (0..nodes.len())
        .map(|i| {
            nodes
                .get(i)
                .map_or_else(Resources::default, |n| n.sched.available().clone())
        })
        .collect();
    // Candidates in order of preference: the driver's node first, then the freest.
    let mut order = live.clone();
    order.sort_by(|&a, &b| {
        let key = |i: NodeIdx| (Some(i) != home, std::cmp::Reverse(free[i].cpu));
        key(a).cmp(&key(b))
    });
    let all_on_one = || {
        order.iter().copied().find(|&n| {
            let mut left = free[n].clone();
            bundles.iter().all(|b| {
                let fits = b.fits_in(&left);
                left.subtract(b);
                fits
            })
        })
    };
    match strategy {
        PlacementStrategy::StrictPack => all_on_one().map(|n| vec![n; bundles.len()]),
        PlacementStrategy::Pack => {
            if let Some(n) = all_on_one() {
                return Some(vec![n; bundles.len()]);
            }
            let mut used: Vec<NodeIdx> = Vec::new();
            let mut at = Vec::with_capacity(bundles.len());
            for bundle in bundles {
                let n = used
                    .iter()
                    .chain(order.iter())
                    .copied()
                    .find(|&n| bundle.fits_in(&free[n]))?;
                free[n].subtract(bundle);
                if !used.contains(&n) {
                    used.push(n);
                }
                at.push(n);
            }
            Some(at)
        }
        PlacementStrategy::Spread | PlacementStrategy::StrictSpread => {
            let strict = strategy == PlacementStrategy::StrictSpread;
            let mut uses = vec![0usize; nodes.len()];
            let mut at = Vec::with_capacity(bundles.len());
            for bundle in bundles {
                let n = order
                    .iter()
                    .copied()
                    .filter(|&n| bundle.fits_in(&free[n]) && (!strict || uses[n] == 0))
                    .min_by_key(|&n| uses[n])?;
                free[n].subtract(bundle);
                uses[n] += 1;
                at.push(n);
            }
            Some(at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(n: f64) -> Resources {
        Resources::cpus(n).unwrap()
    }

    #[test]
    fn group_demands_name_the_group_and_bundle_and_are_found_again() {
        let demand = group_demand(&cpus(1.0), 0x2a, Some(1)).unwrap();
        let names: Vec<&str> = demand.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "CPU_group_1_2a",
                "CPU_group_2a",
                "bundle_group_1_2a",
                "bundle_group_2a"
            ]
        );
        assert_eq!(demand.cpu, prism_graph::Amount::ZERO);
        assert_eq!(group_of(&demand), Some(0x2a));
        assert_eq!(group_of(&cpus(1.0)), None);
        // A reserved bundle holds what its tasks demand.
        assert!(demand.fits_in(&reserved_as(&cpus(1.0), 0x2a, 1)));
        assert!(!demand.fits_in(&reserved_as(&cpus(1.0), 0x2a, 0)));
        let any = group_demand(&Resources::default(), 0x2a, None).unwrap();
        assert!(any.fits_in(&reserved_as(&cpus(1.0), 0x2a, 0)));
    }

    fn nodes(cpus_each: &[f64]) -> Nodes {
        let mut nodes = Nodes::default();
        for (i, &n) in cpus_each.iter().enumerate() {
            nodes.add(format!("n{i}"), cpus(n), 4, 4, 16);
        }
        nodes
    }

    #[test]
    fn strategies_place_bundles_as_promised_or_not_at_all() {
        let two = [cpus(1.0), cpus(1.0)];
        let cluster = nodes(&[2.0, 2.0, 1.0]);
        assert_eq!(
            plan(&cluster, &two, PlacementStrategy::Pack, None),
            Some(vec![0, 0])
        );
        assert_eq!(
            plan(&cluster, &two, PlacementStrategy::StrictPack, Some(1)),
            Some(vec![1, 1])
        );
        assert_eq!(
            plan(&cluster, &two, PlacementStrategy::Spread, None),
            Some(vec![0, 1])
        );
        let four = [cpus(1.0), cpus(1.0), cpus(1.0), cpus(1.0)];
        assert_eq!(
            plan(&cluster, &four, PlacementStrategy::StrictSpread, None),
            None
        );
        let spread = plan(&cluster, &four, PlacementStrategy::Spread, None).unwrap();
        assert_eq!(spread.len(), 4);
        let big = [cpus(3.0)];
        assert_eq!(plan(&cluster, &big, PlacementStrategy::Pack, None), None);
        assert_eq!(
            plan(
                &cluster,
                &[cpus(2.0), cpus(2.0)],
                PlacementStrategy::Pack,
                None
            ),
            Some(vec![0, 1]),
            "Pack spills over when one node cannot hold all"
        );
    }
}
