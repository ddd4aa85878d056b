//! Resource demands and capacities: CPUs, GPUs and custom named resources, in fixed point with
//! four decimal places so that fractional demands (`num_gpus = 0.5`) add up exactly.

use std::fmt;

/// A resource quantity in units of 1/10,000.
#[derive(
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Amount(pub u64);

impl Amount {
    /// Units per whole resource.
    pub const SCALE: u64 = 10_000;
    /// No resource.
    pub const ZERO: Amount = Amount(0);

    /// Converts a non-negative, finite quantity; anything else is an error naming the value.
    pub fn from_f64(value: f64) -> Result<Amount, ResourceError> {
        if !value.is_finite() || !(0.0..=1e12).contains(&value) {
            return Err(ResourceError::Invalid(value));
        }
        let units = (value * Self::SCALE as f64).round() as u64;
        if value > 0.0 && units == 0 {
            return Err(ResourceError::TooSmall(value));
        }
        Ok(Amount(units))
    }

    /// The quantity as a float.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / Self::SCALE as f64
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / Self::SCALE;
        let frac = self.0 % Self::SCALE;
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{frac:04}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A resource quantity that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ResourceError {
    /// Negative, not finite, or absurdly large.
    #[error("resource quantity {0} is invalid: it must be finite and between 0 and 1e12")]
    Invalid(f64),
    /// Positive but below the 1/10,000 resolution.
    #[error("resource quantity {0} is below the resolution of 0.0001")]
    TooSmall(f64),
    /// An empty resource name.
    #[error("a resource name must not be empty")]
    EmptyName,
}

/// A set of resources: a demand of a task or the capacity of a node.
///
/// `CPU` and `GPU` are fields of their own (they are on every path); custom resources are kept
/// sorted by name so that equal sets compare and hash equal.
#[derive(
    Clone,
    Default,
    PartialEq,
    Eq,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Resources {
    /// Logical CPUs.
    pub cpu: Amount,
    /// Logical GPUs.
    pub gpu: Amount,
    /// Custom resources, sorted by name, without zero entries.
    pub custom: Vec<(String, Amount)>,
}

impl Resources {
    /// A demand or capacity of `cpu` CPUs and nothing else.
    pub fn cpus(cpu: f64) -> Result<Self, ResourceError> {
        Ok(Resources {
            cpu: Amount::from_f64(cpu)?,
            ..Resources::default()
        })
    }

    /// Sets the amount of the named resource (`"CPU"` and `"GPU"` address the fixed fields).
    pub fn set(&mut self, name: &str, value: f64) -> Result<(), ResourceError> {
        let amount = Amount::from_f64(value)?;
        match name {
            "" => return Err(ResourceError::EmptyName),
            "CPU" => self.cpu = amount,
            "GPU" => self.gpu = amount,
            _ => match self.custom.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
                Ok(i) if amount == Amount::ZERO => {
                    self.custom.remove(i);
                }
                Ok(i) => self.custom[i].1 = amount,
                Err(_) if amount == Amount::ZERO => {}
                Err(i) => self.custom.insert(i, (name.to_owned(), amount)),
            },
        }
        Ok(())
    }

    /// The amount of the named resource (zero when absent).
    pub fn get(&self, name: &str) -> Amount {
        match name {
            "CPU" => self.cpu,
            "GPU" => self.gpu,
            _ => self
                .custom
                .binary_search_by(|(n, _)| n.as_str().cmp(name))
                .map(|i| self.custom[i].1)
                .unwrap_or_default(),
        }
    }

    /// Every (name, amount) pair with a non-zero amount, CPU and GPU first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Amount)> + '_ {
        [("CPU", self.cpu), ("GPU", self.gpu)]
            .into_iter()
            .chain(self.custom.iter().map(|(n, a)| (n.as_str(), *a)))
            .filter(|(_, a)| *a != Amount::ZERO)
    }

    /// Whether every resource of `self` is available in `available`.
    pub fn fits_in(&self, available: &Resources) -> bool {
        // The schedulers ask this for every node and task: CPU and GPU first, without names.
        self.cpu <= available.cpu
            && self.gpu <= available.gpu
            && self
                .custom
                .iter()
                .all(|(name, amount)| available.get(name) >= *amount)
    }

    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Resources) {
        self.cpu = Amount(self.cpu.0 + other.cpu.0);
        self.gpu = Amount(self.gpu.0 + other.gpu.0);
        for (name, amount) in &other.custom {
            self.update_custom(name, |have| have + amount.0);
        }
    }

    /// Subtracts `other` from `self`, saturating at zero.
    pub fn subtract(&mut self, other: &Resources) {
        self.cpu = Amount(self.cpu.0.saturating_sub(other.cpu.0));
        self.gpu = Amount(self.gpu.0.saturating_sub(other.gpu.0));
        for (name, amount) in &other.custom {
            self.update_custom(name, |have| have.saturating_sub(amount.0));
        }
    }

    /// Sets custom resource `name` to `change` of its amount (in units), keeping the list
    /// sorted and free of zero entries.
    fn update_custom(&mut self, name: &str, change: impl FnOnce(u64) -> u64) {
        match self.custom.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => {
                let units = change(self.custom[i].1.0);
                if units == 0 {
                    self.custom.remove(i);
                } else {
                    self.custom[i].1 = Amount(units);
                }
            }
            Err(i) => {
                let units = change(0);
                if units > 0 {
                    self.custom.insert(i, (name.to_owned(), Amount(units)));
                }
            }
        }
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (name, amount)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}: {amount}")?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// How a placement group's bundles are spread over the cluster's nodes.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub enum PlacementStrategy {
    /// As few nodes as possible; bundles that do not fit together go to other nodes.
    #[default]
    Pack,
    /// One node for every bundle, or the group waits.
    StrictPack,
    /// Distinct nodes where possible; bundles share nodes when there are not enough.
    Spread,
    /// Distinct nodes for every bundle, or the group waits.
    StrictSpread,
}

impl std::fmt::Display for PlacementStrategy {
    /// The strategy's name as Ray spells it (`STRICT_PACK`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PlacementStrategy::Pack => "PACK",
            PlacementStrategy::StrictPack => "STRICT_PACK",
            PlacementStrategy::Spread => "SPREAD",
            PlacementStrategy::StrictSpread => "STRICT_SPREAD",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractional_amounts_add_up_exactly() {
        let mut capacity = Resources::cpus(2.0).unwrap();
        capacity.set("GPU", 1.0).unwrap();
        let mut half_gpu = Resources::cpus(1.0).unwrap();
        half_gpu.set("GPU", 0.5).unwrap();
        assert!(half_gpu.fits_in(&capacity));
        capacity.subtract(&half_gpu);
        assert!(half_gpu.fits_in(&capacity));
        capacity.subtract(&half_gpu);
        assert!(!half_gpu.fits_in(&capacity));
        assert_eq!(capacity.to_string(), "{}");
    }

    #[test]
    fn custom_resources_are_sorted_and_displayed() {
        let mut r = Resources::cpus(1.5).unwrap();
        r.set("tpu", 1.0).unwrap();
        r.set("accel", 0.25).unwrap();
        assert_eq!(r.to_string(), "{CPU: 1.5, accel: 0.25, tpu: 1}");
        let mut other = Resources::cpus(1.5).unwrap();
        other.set("accel", 0.25).unwrap();
        other.set("tpu", 1.0).unwrap();
        assert_eq!(r, other);
        assert!(!r.fits_in(&Resources::cpus(8.0).unwrap()));
    }

    #[test]
    fn custom_amounts_add_and_subtract_by_name_and_vanish_at_zero() {
        let mut have = Resources::cpus(4.0).unwrap();
        have.set("tpu", 2.0).unwrap();
        let mut take = Resources::cpus(1.0).unwrap();
        take.set("tpu", 0.5).unwrap();
        take.set("disk", 3.0).unwrap();
        assert!(!take.fits_in(&have), "no disk there");
        have.add(&take);
        assert_eq!(have.to_string(), "{CPU: 5, disk: 3, tpu: 2.5}");
        assert!(take.fits_in(&have));
        have.subtract(&take);
        have.subtract(&take);
        assert_eq!(have.to_string(), "{CPU: 3, tpu: 1.5}");
        assert!(have.custom.iter().all(|(_, a)| *a > Amount::ZERO));
        have.subtract(&Resources::cpus(9.0).unwrap());
        assert_eq!(have.cpu, Amount::ZERO, "saturates at zero");
    }

    #[test]
    fn invalid_amounts_are_errors() {
        assert_eq!(Amount::from_f64(-1.0), Err(ResourceError::Invalid(-1.0)));
        assert!(Amount::from_f64(f64::NAN).is_err());
        assert_eq!(Amount::from_f64(1e-9), Err(ResourceError::TooSmall(1e-9)));
        assert_eq!(
            Resources::default().set("", 1.0),
            Err(ResourceError::EmptyName)
        );
    }
}
