//! Search spaces and the configurations drawn from them.

use std::fmt;

pub use crate::rng::Rng;

/// One hyperparameter's value.
#[derive(
    Debug,
    Clone,
    PartialEq,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(untagged)]
pub enum Param {
    /// A whole number.
    Int(i64),
    /// A real number.
    Float(f64),
    /// A word.
    Text(String),
}

impl Param {
    /// The value as a real number (whole numbers too).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Param::Int(v) => Some(*v as f64),
            Param::Float(v) => Some(*v),
            Param::Text(_) => None,
        }
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Param::Int(v) => write!(f, "{v}"),
            Param::Float(v) if v.abs() >= 1e-3 && v.abs() < 1e4 => write!(f, "{v:.4}"),
            Param::Float(v) => write!(f, "{v:.3e}"),
            Param::Text(v) => f.write_str(v),
        }
    }
}

impl From<i64> for Param {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}

impl From<f64> for Param {
    fn from(v: f64) -> Self {
        Param::Float(v)
    }
}

impl From<&str> for Param {
    fn from(v: &str) -> Self {
        Param::Text(v.to_string())
    }
}

/// One trial's hyperparameters, by name, in the search space's order. It crosses processes
/// (a trial's actor takes it), so it is plain archivable data.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Default,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Config {
    /// The values, by name.
    pub values: Vec<(String, Param)>,
}

impl Config {
    /// The value named `name`.
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The value named `name` as a real number.
    ///
    /// # Panics
    ///
    /// When the configuration has no numeric value of that name (a mistake in the program).
    pub fn f64(&self, name: &str) -> f64 {
        self.get(name)
            .and_then(Param::as_f64)
            .unwrap_or_else(|| panic!("the configuration has no number `{name}`: {self}"))
    }

    /// The value named `name` as a whole number (a real one is rounded).
    ///
    /// # Panics
    ///
    /// As [`Config::f64`].
    pub fn i64(&self, name: &str) -> i64 {
        match self.get(name) {
            Some(Param::Int(v)) => *v,
            _ => self.f64(name).round() as i64,
        }
    }

    /// The value named `name` as text.
    ///
    /// # Panics
    ///
    /// When the configuration has no value of that name.
    pub fn text(&self, name: &str) -> String {
        self.get(name)
            .map(ToString::to_string)
            .unwrap_or_else(|| panic!("the configuration has no value `{name}`: {self}"))
    }

    /// Sets `name` to `value` (added when new).
    pub fn set(&mut self, name: &str, value: Param) {
        match self.values.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value,
            None => self.values.push((name.to_string(), value)),
        }
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, value)) in self.values.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}={value}")?;
        }
        Ok(())
    }
}

/// Where one hyperparameter's values come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    /// One of these, at random.
    Choice(Vec<Param>),
    /// Each of these: the search runs every combination of the grid's values (times the
    /// number of samples).
    Grid(Vec<Param>),
    /// A real number in `[low, high)`, uniformly.
    Uniform {
        /// The least value.
        low: f64,
        /// The bound above.
        high: f64,
    },
    /// A real number in `[low, high)`, uniform in its logarithm (learning rates).
    LogUniform {
        /// The least value (positive).
        low: f64,
        /// The bound above.
        high: f64,
    },
    /// A whole number in `[low, high]`, uniformly.
    IntRange {
        /// The least value.
        low: i64,
        /// The greatest value.
        high: i64,
    },
}

impl Domain {
    /// One of `values`, at random.
    pub fn choice<P: Into<Param>>(values: impl IntoIterator<Item = P>) -> Self {
        Domain::Choice(values.into_iter().map(Into::into).collect())
    }

    /// Every one of `values` (a grid axis).
    pub fn grid<P: Into<Param>>(values: impl IntoIterator<Item = P>) -> Self {
        Domain::Grid(values.into_iter().map(Into::into).collect())
    }

    /// A real number in `[low, high)`.
    pub fn uniform(low: f64, high: f64) -> Self {
        Domain::Uniform { low, high }
    }

    /// A real number in `[low, high)`, uniform in its logarithm (both must be positive).
    pub fn log_uniform(low: f64, high: f64) -> Self {
        Domain::LogUniform { low, high }
    }

    /// A whole number in `[low, high]`.
    pub fn int_range(low: i64, high: i64) -> Self {
        Domain::IntRange { low, high }
    }

    /// Why the domain is unusable, if it is.
    fn check(&self, name: &str) -> Result<(), TuneError> {
        let bad = |reason: &str| {
            Err(TuneError::BadSpace {
                name: name.to_string(),
                reason: reason.to_string(),
            })
        };
        match self {
            Domain::Choice(v) | Domain::Grid(v) if v.is_empty() => bad("it lists no values"),
            Domain::Uniform { low, high }
                if low >= high || !low.is_finite() || !high.is_finite() =>
            {
                bad("it needs finite low < high")
            }
            Domain::LogUniform { low, high } if !(*low > 0.0 && low < high && high.is_finite()) => {
                bad("it needs 0 < low < high")
            }
            Domain::IntRange { low, high } if low > high => bad("it needs low <= high"),
            _ => Ok(()),
        }
    }

    /// A value drawn with `rng` (a grid's first value: grids are expanded, not drawn).
    pub(crate) fn sample(&self, rng: &mut Rng) -> Param {
        match self {
            Domain::Choice(v) => v[rng.below(v.len() as u64) as usize].clone(),
            Domain::Grid(v) => v[0].clone(),
            Domain::Uniform { low, high } => Param::Float(low + (high - low) * rng.unit()),
            Domain::LogUniform { low, high } => {
                Param::Float((low.ln() + (high.ln() - low.ln()) * rng.unit()).exp())
            }
            Domain::IntRange { low, high } => {
                let span = (high - low) as u64 + 1;
                Param::Int(low + rng.below(span) as i64)
            }
        }
    }

    /// `value` moved a little (Population Based Training's explore step): a number scaled by
    /// 0.8 or 1.2 and kept in range, a listed value replaced by a neighbour.
    pub(crate) fn perturb(&self, value: &Param, rng: &mut Rng) -> Param {
        let factor = if rng.below(2) == 0 { 0.8 } else { 1.2 };
        match (self, value) {
            (Domain::Choice(v) | Domain::Grid(v), _) => {
                let at = v.iter().position(|p| p == value).unwrap_or(0);
                let next = if rng.below(2) == 0 {
                    at.saturating_sub(1)
                } else {
                    (at + 1).min(v.len() - 1)
                };
                v[next].clone()
            }
            (Domain::Uniform { low, high } | Domain::LogUniform { low, high }, _) => {
                let x = value.as_f64().unwrap_or(*low) * factor;
                Param::Float(x.clamp(*low, *high))
            }
            (Domain::IntRange { low, high }, _) => {
                let x = value.as_f64().unwrap_or(*low as f64) * factor;
                let moved = (x.round() as i64).clamp(*low, *high);
                // Small integers must still move.
                let old = value.as_f64().unwrap_or(0.0) as i64;
                let moved = if moved == old {
                    (old + if factor > 1.0 { 1 } else { -1 }).clamp(*low, *high)
                } else {
                    moved
                };
                Param::Int(moved)
            }
        }
    }
}

/// The hyperparameters a search explores, by name.
#[derive(Debug, Clone, Default)]
pub struct Space {
    pub(crate) params: Vec<(String, Domain)>,
}

impl Space {
    /// An empty space.
    pub fn new() -> Self {
        Space::default()
    }

    /// Adds a hyperparameter.
    pub fn add(mut self, name: &str, domain: Domain) -> Self {
        self.params.push((name.to_string(), domain));
        self
    }

    /// The domain of `name`.
    pub(crate) fn domain(&self, name: &str) -> Option<&Domain> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, d)| d)
    }

    /// The configurations of a search: every combination of the grid axes, each `samples`
    /// times with the other hyperparameters drawn at random (seeded: the same seed gives the
    /// same configurations).
    pub fn configs(&self, samples: usize, rng: &mut Rng) -> Result<Vec<Config>, TuneError> {
        for (name, domain) in &self.params {
            domain.check(name)?;
        }
        let mut grid: Vec<Vec<(String, Param)>> = vec![Vec::new()];
        for (name, domain) in &self.params {
            if let Domain::Grid(values) = domain {
                grid = grid
                    .into_iter()
                    .flat_map(|point| {
                        values.iter().map(move |v| {
                            let mut point = point.clone();
                            point.push((name.clone(), v.clone()));
                            point
                        })
                    })
                    .collect();
            }
        }
        let mut configs = Vec::with_capacity(grid.len() * samples);
        for _ in 0..samples {
            for point in &grid {
                let values = self
                    .params
                    .iter()
                    .map(|(name, domain)| {
                        let value = match point.iter().find(|(n, _)| n == name) {
                            Some((_, v)) => v.clone(),
                            None => domain.sample(rng),
                        };
                        (name.clone(), value)
                    })
                    .collect();
                configs.push(Config { values });
            }
        }
        Ok(configs)
    }
}

/// What can go wrong in a search before any trial runs.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// A hyperparameter's domain cannot be sampled.
    #[error("hyperparameter `{name}` has an unusable domain: {reason}")]
    BadSpace {
        /// The hyperparameter.
        name: String,
        /// Why.
        reason: String,
    },
    /// The search's settings contradict each other.
    #[error("the search cannot run: {0}")]
    BadSettings(String),
    /// Writing the search's log or plot failed.
    #[error("cannot write {path}: {reason}")]
    Output {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_expand_and_the_rest_is_drawn_in_range_from_the_seed() {
        let space = Space::new()
            .add("lr", Domain::log_uniform(1e-4, 1e-1))
            .add("clip", Domain::choice([0.1, 0.2]))
            .add("epochs", Domain::int_range(3, 5))
            .add("batch", Domain::grid([32i64, 64]))
            .add("act", Domain::grid(["tanh", "relu"]));
        let configs = space.configs(3, &mut Rng::new(7)).unwrap();
        assert_eq!(configs.len(), 12, "2 x 2 grid points, 3 samples each");
        for c in &configs {
            assert!((1e-4..1e-1).contains(&c.f64("lr")));
            assert!([0.1, 0.2].contains(&c.f64("clip")));
            assert!((3..=5).contains(&c.i64("epochs")));
        }
        let points: std::collections::BTreeSet<(i64, String)> = configs
            .iter()
            .map(|c| (c.i64("batch"), c.text("act")))
            .collect();
        assert_eq!(points.len(), 4, "every grid point");
        assert_eq!(
            configs,
            space.configs(3, &mut Rng::new(7)).unwrap(),
            "seeded"
        );
        assert_ne!(configs, space.configs(3, &mut Rng::new(8)).unwrap());
    }

    #[test]
    fn unusable_domains_are_named() {
        let space = Space::new().add("lr", Domain::log_uniform(0.0, 1.0));
        let error = space.configs(1, &mut Rng::new(1)).unwrap_err().to_string();
        assert!(
            error.contains("`lr`") && error.contains("0 < low < high"),
            "{error}"
        );
    }

    #[test]
    fn perturbing_moves_values_and_keeps_them_in_range() {
        let mut rng = Rng::new(3);
        let ints = Domain::int_range(1, 4);
        for _ in 0..50 {
            let moved = ints.perturb(&Param::Int(1), &mut rng);
            assert!(matches!(moved, Param::Int(1..=2)), "{moved:?}");
        }
        let reals = Domain::uniform(0.0, 1.0);
        let moved = reals
            .perturb(&Param::Float(0.5), &mut rng)
            .as_f64()
            .unwrap();
        assert!(moved == 0.4 || moved == 0.6, "{moved}");
        let choice = Domain::choice([1i64, 2, 3]);
        let moved = choice.perturb(&Param::Int(2), &mut rng);
        assert!(moved == Param::Int(1) || moved == Param::Int(3));
    }
}
