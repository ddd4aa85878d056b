//! Trial schedulers: after each result they say whether a trial goes on, stops early, or (in
//! Population Based Training) takes a better trial's state and perturbed hyperparameters.
//! Plain logic without IO, stepped by the tuner (and by the unit tests below).

use std::collections::BTreeMap;

use super::space::{Config, Rng, Space};

/// What a scheduler decided for a trial after its latest result.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Run its next iteration.
    Continue,
    /// Stop it now (early stopping).
    Stop,
    /// Continue from trial `from`'s checkpoint with `config` (exploit and explore).
    Exploit {
        /// The better trial whose state it takes.
        from: usize,
        /// Its new hyperparameters.
        config: Config,
    },
}

/// A trial as schedulers see it.
#[derive(Debug, Clone)]
pub struct Standing {
    /// Iterations it has reported.
    pub iteration: u32,
    /// Its latest score (higher is better), if any.
    pub score: Option<f64>,
    /// Whether it still runs.
    pub live: bool,
    /// Its hyperparameters now.
    pub config: Config,
}

/// Decides the fate of trials from their results.
pub trait Scheduler: Send {
    /// Its name, for the progress display and the log.
    fn name(&self) -> &'static str;

    /// Trial `trial` reported `score` (higher is better) at `iteration`; `standings` holds
    /// every trial (this one's entry already updated).
    fn on_result(
        &mut self,
        trial: usize,
        iteration: u32,
        score: f64,
        standings: &[Standing],
        space: &Space,
        rng: &mut Rng,
    ) -> Decision;
}

/// Runs every trial to the end (the tuner's iteration limit or stop condition).
#[derive(Debug, Default, Clone)]
pub struct Fifo;

impl Scheduler for Fifo {
    fn name(&self) -> &'static str {
        "FIFO"
    }

    fn on_result(
        &mut self,
        _: usize,
        _: u32,
        _: f64,
        _: &[Standing],
        _: &Space,
        _: &mut Rng,
    ) -> Decision {
        Decision::Continue
    }
}

/// Asynchronous successive halving (Li et al., "A System for Massively Parallel Hyperparameter
/// Tuning", 2020): at each rung (`grace_period`, then times `reduction_factor`, below `max_t`)
/// a trial goes on only if its score is in the top `1 / reduction_factor` of the scores other
/// trials had at that rung; none waits for the others. Trials stop at `max_t` iterations.
#[derive(Debug, Clone)]
pub struct Asha {
    max_t: u32,
    rungs: Vec<u32>,
    reduction_factor: f64,
    /// The scores recorded at each rung.
    recorded: BTreeMap<u32, Vec<f64>>,
}

impl Asha {
    /// Rungs at `grace_period * reduction_factor^k` below `max_t`.
    pub fn new(max_t: u32, grace_period: u32, reduction_factor: u32) -> Self {
        let (grace, factor) = (grace_period.max(1), reduction_factor.max(2));
        let mut rungs = Vec::new();
        let mut rung = grace;
        while rung < max_t {
            rungs.push(rung);
            rung = rung.saturating_mul(factor);
        }
        Asha {
            max_t,
            rungs,
            reduction_factor: f64::from(factor),
            recorded: BTreeMap::new(),
        }
    }

    /// The iterations at which trials are compared.
    pub fn rungs(&self) -> &[u32] {
        &self.rungs
    }
}

/// The `q` quantile (0..=1) of `values`, interpolated linearly (numpy's default).
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = q * (sorted.len() - 1) as f64;
    let (low, high) = (at.floor() as usize, at.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (at - low as f64)
}

impl Scheduler for Asha {
    fn name(&self) -> &'static str {
        "ASHA"
    }

    fn on_result(
        &mut self,
        _: usize,
        iteration: u32,
        score: f64,
        _: &[Standing],
        _: &Space,
        _: &mut Rng,
    ) -> Decision {
        if iteration >= self.max_t {
            return Decision::Stop;
        }
        if !self.rungs.contains(&iteration) {
            return Decision::Continue;
        }
        let recorded = self.recorded.entry(iteration).or_default();
        let cutoff =
            (!recorded.is_empty()).then(|| quantile(recorded, 1.0 - 1.0 / self.reduction_factor));
        recorded.push(score);
        match cutoff {
            Some(cutoff) if score < cutoff => Decision::Stop,
            _ => Decision::Continue,
        }
    }
}

/// Population Based Training (Jaderberg et al., 2017): every `interval` iterations a trial in
/// the bottom `quantile` of the live trials takes the state (checkpoint) of one in the top
/// `quantile` and that trial's hyperparameters, each resampled with probability
/// `resample_probability` or else perturbed (numbers times 0.8 or 1.2, listed values moved to
/// a neighbour).
#[derive(Debug, Clone)]
pub struct Pbt {
    interval: u32,
    quantile: f64,
    resample_probability: f64,
}

impl Pbt {
    /// Exploit and explore every `interval` iterations (quantile 0.25, resampling 0.25, as
    /// Ray's defaults).
    pub fn new(interval: u32) -> Self {
        Pbt {
            interval: interval.max(1),
            quantile: 0.25,
            resample_probability: 0.25,
        }
    }

    /// The fraction of trials at the bottom that take over from the top (0 < q <= 0.5).
    pub fn quantile(mut self, q: f64) -> Self {
        self.quantile = q.clamp(0.01, 0.5);
        self
    }

    /// How often a hyperparameter is drawn anew rather than perturbed.
    pub fn resample_probability(mut self, p: f64) -> Self {
        self.resample_probability = p.clamp(0.0, 1.0);
        self
    }

    fn explore(&self, config: &Config, space: &Space, rng: &mut Rng) -> Config {
        let mut next = config.clone();
        for (name, value) in &config.values {
            let Some(domain) = space.domain(name) else {
                continue;
            };
            let moved = if rng.unit() < self.resample_probability {
                domain.sample(rng)
            } else {
                domain.perturb(value, rng)
            };
            next.set(name, moved);
        }
        next
    }
}

impl Scheduler for Pbt {
    fn name(&self) -> &'static str {
        "PBT"
    }

    fn on_result(
        &mut self,
        trial: usize,
        iteration: u32,
        _: f64,
        standings: &[Standing],
        space: &Space,
        rng: &mut Rng,
    ) -> Decision {
        if !iteration.is_multiple_of(self.interval) {
            return Decision::Continue;
        }
        let mut ranked: Vec<(usize, f64)> = standings
            .iter()
            .enumerate()
            .filter(|(_, s)| s.live)
            .filter_map(|(i, s)| s.score.map(|score| (i, score)))
            .collect();
        if ranked.len() < 2 {
            return Decision::Continue;
        }
        ranked.sort_by(|a, b| a.1.total_cmp(&b.1));
        let k = ((ranked.len() as f64 * self.quantile).floor() as usize).max(1);
        let bottom = &ranked[..k];
        let top = &ranked[ranked.len() - k..];
        if !bottom.iter().any(|(i, _)| *i == trial) || top.iter().any(|(i, _)| *i == trial) {
            return Decision::Continue;
        }
        let from = top[rng.below(top.len() as u64) as usize].0;
        let config = self.explore(&standings[from].config, space, rng);
        Decision::Exploit { from, config }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::space::{Domain, Param};

    fn standing(score: f64) -> Standing {
        Standing {
            iteration: 4,
            score: Some(score),
            live: true,
            config: Config {
                values: vec![("lr".into(), Param::Float(score))],
            },
        }
    }

    #[test]
    fn asha_stops_what_falls_below_the_top_of_a_rung_and_everything_at_max_t() {
        let mut asha = Asha::new(30, 2, 3);
        assert_eq!(asha.rungs(), [2, 6, 18]);
        let (space, mut rng) = (Space::new(), Rng::new(1));
        let mut report =
            |score: f64, iteration: u32| asha.on_result(0, iteration, score, &[], &space, &mut rng);
        assert_eq!(report(10.0, 1), Decision::Continue, "not a rung");
        assert_eq!(
            report(10.0, 2),
            Decision::Continue,
            "the first at a rung goes on"
        );
        assert_eq!(report(5.0, 2), Decision::Stop, "below the top third");
        assert_eq!(report(12.0, 2), Decision::Continue, "above it");
        assert_eq!(report(1.0, 6), Decision::Continue, "first at the next rung");
        assert_eq!(report(99.0, 30), Decision::Stop, "max_t reached");
    }

    #[test]
    fn pbt_moves_the_bottom_onto_the_top_with_perturbed_values() {
        let mut pbt = Pbt::new(4).resample_probability(0.0);
        let space = Space::new().add("lr", Domain::uniform(0.0, 100.0));
        let standings: Vec<Standing> = [1.0, 50.0, 20.0, 80.0].map(standing).to_vec();
        let mut rng = Rng::new(5);
        assert_eq!(
            pbt.on_result(0, 3, 1.0, &standings, &space, &mut rng),
            Decision::Continue,
            "between exploit points"
        );
        match pbt.on_result(0, 4, 1.0, &standings, &space, &mut rng) {
            Decision::Exploit { from, config } => {
                assert_eq!(from, 3, "the best of four is the top quarter");
                let lr = config.f64("lr");
                assert!(
                    (lr - 64.0).abs() < 1e-9 || (lr - 96.0).abs() < 1e-9,
                    "80 perturbed: {lr}"
                );
            }
            other => panic!("the worst trial must exploit: {other:?}"),
        }
        assert_eq!(
            pbt.on_result(3, 4, 80.0, &standings, &space, &mut rng),
            Decision::Continue,
            "the best keeps its own"
        );
        assert_eq!(
            pbt.on_result(2, 4, 20.0, &standings, &space, &mut rng),
            Decision::Continue,
            "the middle keeps its own"
        );
    }
}
