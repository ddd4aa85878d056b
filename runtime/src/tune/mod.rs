//! Hyperparameter tuning on Prism (as Ray Tune): a search space, random and grid search, each
//! trial an actor with its own resources, at most `max_concurrent` at once, each reporting a
//! metric per training iteration; schedulers decide which trials go on: [`Fifo`], [`Asha`]
//! (asynchronous successive halving, early stopping) and [`Pbt`] (Population Based Training:
//! a lagging trial takes a better one's checkpoint, through the object store, and perturbed
//! hyperparameters). The search prints a progress line, writes a JSON log of every result and a
//! plot of every trial's metric against time, and returns a table of the trials with the best
//! configuration.
//!
//! A trial is an `#[actor]` whose constructor takes a [`Config`] and which implements
//! [`Trainable`] by naming three of its methods (`prism::trainable!` writes the impl):
//!
//! ```ignore
//! #[prism::actor]
//! impl Trainer {
//!     fn new(config: Config) -> Self { .. }
//!     fn train(&mut self) -> Metrics { .. }            // one iteration
//!     fn save(&self) -> Vec<u8> { .. }                 // a checkpoint (for PBT)
//!     fn load(&mut self, checkpoint: Vec<u8>, config: Config) { .. }
//! }
//!
//! prism::trainable!(Trainer, step = train, save = save, restore = load);
//!
//! let results = Tuner::new(space)
//!     .metric("mean_return", Mode::Max)
//!     .scheduler(Asha::new(100, 5, 3))
//!     .run(|config| Trainer::options().num_cpus(1.0).remote(config.clone()))?;
//! println!("{results}");
//! ```

mod report;
mod schedulers;
mod space;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use report::{Results, TrialResult, TrialStatus, plot};
pub use schedulers::{Asha, Decision, Fifo, Pbt, Scheduler, Standing};
pub use space::{Config, Domain, Param, Rng, Space, TuneError};

use crate::api::actor::Actor;
use crate::{ActorHandle, ObjectRef};

/// A trial's report of one iteration: named values, one of them the search's metric.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Metrics {
    /// The values, by name.
    pub values: Vec<(String, f64)>,
}

impl Metrics {
    /// No values yet.
    pub fn new() -> Self {
        Metrics::default()
    }

    /// With `name` = `value`.
    pub fn with(mut self, name: &str, value: f64) -> Self {
        self.values.push((name.to_string(), value));
        self
    }

    /// The value named `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// An actor class the tuner can train: which of its methods runs an iteration, saves a
/// checkpoint, and restores one with new hyperparameters.
pub trait Trainable: Actor {
    /// Runs one training iteration and reports it.
    fn step(handle: &ActorHandle<Self>) -> ObjectRef<Metrics>;
    /// Saves the trial's state.
    fn save(handle: &ActorHandle<Self>) -> ObjectRef<Vec<u8>>;
    /// Continues from `checkpoint` (another trial's, read from the object store where it
    /// lies) with hyperparameters `config`.
    fn restore(
        handle: &ActorHandle<Self>,
        checkpoint: ObjectRef<Vec<u8>>,
        config: Config,
    ) -> ObjectRef<()>;
}

/// Implements [`Trainable`] for an actor class by naming its methods: one training iteration
/// (`-> Metrics`), saving a checkpoint (`-> Vec<u8>`), and restoring one with new
/// hyperparameters (`(Vec<u8>, Config)`):
/// `prism::trainable!(Trainer, step = train, save = save, restore = load);`
#[macro_export]
macro_rules! trainable {
    ($class:ty, step = $step:ident, save = $save:ident, restore = $restore:ident $(,)?) => {
        impl $crate::tune::Trainable for $class {
            fn step(
                handle: &$crate::ActorHandle<Self>,
            ) -> $crate::ObjectRef<$crate::tune::Metrics> {
                handle.$step()
            }
            fn save(handle: &$crate::ActorHandle<Self>) -> $crate::ObjectRef<::std::vec::Vec<u8>> {
                handle.$save()
            }
            fn restore(
                handle: &$crate::ActorHandle<Self>,
                checkpoint: $crate::ObjectRef<::std::vec::Vec<u8>>,
                config: $crate::tune::Config,
            ) -> $crate::ObjectRef<()> {
                handle.$restore(checkpoint, config)
            }
        }
    };
}

/// Whether the metric is better higher or lower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Higher is better (a return).
    Max,
    /// Lower is better (a loss).
    Min,
}

/// A search: its space, metric, budget, scheduler and outputs.
pub struct Tuner {
    space: Space,
    metric: String,
    mode: Mode,
    samples: usize,
    max_concurrent: usize,
    max_iterations: u32,
    time_budget: Option<Duration>,
    /// A trial is solved when this metric (the search's when `None`) reaches this value.
    stop: Option<(Option<String>, f64)>,
    scheduler: Box<dyn Scheduler>,
    seed: u64,
    log_dir: Option<PathBuf>,
    progress: bool,
}

impl std::fmt::Debug for Tuner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tuner({} samples, {} at once, {})",
            self.samples,
            self.max_concurrent,
            self.scheduler.name()
        )
    }
}

impl Tuner {
    /// A search of `space`: 1 sample, 1 trial at a time, 100 iterations each, FIFO, seed 0;
    /// the metric must be named with [`Tuner::metric`].
    pub fn new(space: Space) -> Self {
        Tuner {
            space,
            metric: String::new(),
            mode: Mode::Max,
            samples: 1,
            max_concurrent: 1,
            max_iterations: 100,
            time_budget: None,
            stop: None,
            scheduler: Box::new(Fifo),
            seed: 0,
            log_dir: None,
            progress: true,
        }
    }

    /// The metric to optimise (a name in each trial's [`Metrics`]) and its direction.
    pub fn metric(mut self, name: &str, mode: Mode) -> Self {
        self.metric = name.to_string();
        self.mode = mode;
        self
    }

    /// How many configurations to draw per grid point (random search).
    pub fn samples(mut self, n: usize) -> Self {
        self.samples = n.max(1);
        self
    }

    /// At most this many trials at once.
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = n.max(1);
        self
    }

    /// A trial stops after this many iterations.
    pub fn max_iterations(mut self, n: u32) -> Self {
        self.max_iterations = n.max(1);
        self
    }

    /// The search stops starting trials and ends those running after this long.
    pub fn time_budget(mut self, budget: Duration) -> Self {
        self.time_budget = Some(budget);
        self
    }

    /// A trial whose metric reaches `value` (by the mode) is done: solved.
    pub fn stop_at(mut self, value: f64) -> Self {
        self.stop = Some((None, value));
        self
    }

    /// A trial whose reported `name` reaches `value` (by the search's mode) is done: solved.
    /// The scheduler still ranks trials by the search's metric (say, ranked by the latest
    /// iteration's return, solved by the mean of the last 100 episodes).
    pub fn stop_when(mut self, name: &str, value: f64) -> Self {
        self.stop = Some((Some(name.to_string()), value));
        self
    }

    /// Who decides which trials go on.
    pub fn scheduler(mut self, scheduler: impl Scheduler + 'static) -> Self {
        self.scheduler = Box::new(scheduler);
        self
    }

    /// The seed of the configurations drawn and of the scheduler's choices.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Writes `results.jsonl` (one line per result) and `METRIC.svg` (every trial's metric
    /// against time) into `dir`.
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(dir.into());
        self
    }

    /// Whether to print a progress line to stderr every few seconds (default: yes).
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Runs the search: `start` creates a trial's actor for a configuration (with the
    /// resources it should hold). Returns when every trial ended or the time budget ran out.
    pub fn run<A: Trainable>(
        mut self,
        mut start: impl FnMut(&Config) -> ActorHandle<A>,
    ) -> Result<Results, TuneError> {
        if self.metric.is_empty() {
            return Err(TuneError::BadSettings(
                "name the metric to optimise with Tuner::metric".into(),
            ));
        }
        let mut rng = Rng::new(self.seed);
        let configs = self.space.configs(self.samples, &mut rng)?;
        let began = Instant::now();
        let mut log = report::Log::open(self.log_dir.as_deref())?;
        let mut trials: Vec<Trial<A>> = configs.into_iter().map(Trial::new).collect();
        let mut next = 0;
        let mut last_progress = Instant::now();
        loop {
            let out_of_time = self.time_budget.is_some_and(|b| began.elapsed() >= b);
            let running = trials.iter().filter(|t| t.handle.is_some()).count();
            let free = self.max_concurrent.saturating_sub(running);
            for _ in 0..free {
                if out_of_time || next >= trials.len() {
                    break;
                }
                let trial = &mut trials[next];
                let handle = start(&trial.result.config);
                trial.pending = Some(A::step(&handle));
                trial.handle = Some(handle);
                trial.result.status = TrialStatus::Running;
                trial.started = Some(began.elapsed());
                next += 1;
            }
            let pending: Vec<ObjectRef<Metrics>> =
                trials.iter().filter_map(|t| t.pending.clone()).collect();
            if pending.is_empty() {
                break;
            }
            if out_of_time {
                for trial in trials.iter_mut().filter(|t| t.handle.is_some()) {
                    trial.end(TrialStatus::OutOfTime);
                }
                break;
            }
            let (ready, _) = crate::wait_blocking(pending, 1, Some(Duration::from_secs(1)))
                .map_err(|e| TuneError::BadSettings(format!("waiting for trials failed: {e}")))?;
            for done in ready {
                let Some(index) = trials
                    .iter()
                    .position(|t| t.pending.as_ref().is_some_and(|p| p.id() == done.id()))
                else {
                    continue;
                };
                self.on_result(index, done, &mut trials, began, &mut rng, &mut log)?;
            }
            if self.progress && last_progress.elapsed() >= Duration::from_secs(2) {
                last_progress = Instant::now();
                eprintln!("{}", self.progress_line(&trials, began));
            }
        }
        let results = Results::new(
            trials.into_iter().map(|t| t.result).collect(),
            self.metric.clone(),
            self.mode,
            self.scheduler.name(),
            began.elapsed(),
        );
        log.finish(&results)?;
        Ok(results)
    }

    /// Trial `index`'s step `done` ended: record it and carry out the scheduler's decision.
    fn on_result<A: Trainable>(
        &mut self,
        index: usize,
        done: ObjectRef<Metrics>,
        trials: &mut [Trial<A>],
        began: Instant,
        rng: &mut Rng,
        log: &mut report::Log,
    ) -> Result<(), TuneError> {
        trials[index].pending = None;
        // Its restores ran before the step that just reported (calls run in order).
        for restored in std::mem::take(&mut trials[index].restores) {
            if let Err(e) = restored.get_blocking() {
                let reason = format!("restoring another trial's checkpoint failed: {e}");
                trials[index].end(TrialStatus::Failed(reason));
                return Ok(());
            }
        }
        let metrics = match done.get_blocking() {
            Ok(metrics) => metrics,
            Err(e) => {
                trials[index].end(TrialStatus::Failed(e.to_string()));
                return Ok(());
            }
        };
        let Some(value) = metrics.get(&self.metric) else {
            let reason = format!("its report has no `{}`: {:?}", self.metric, metrics.values);
            trials[index].end(TrialStatus::Failed(reason));
            return Ok(());
        };
        let at = began.elapsed();
        let trial = &mut trials[index];
        trial.result.iterations += 1;
        let iteration = trial.result.iterations;
        trial
            .result
            .history
            .push((at.as_secs_f64(), iteration, value));
        trial.result.last = Some(value);
        let better = match (trial.result.best, self.mode) {
            (None, _) => true,
            (Some(best), Mode::Max) => value > best,
            (Some(best), Mode::Min) => value < best,
        };
        if better {
            trial.result.best = Some(value);
        }
        log.result(index, iteration, at, &metrics, &trial.result.config)?;
        let score = self.score(value);
        let stop = match &self.stop {
            Some((Some(name), target)) => metrics.get(name).map(|v| (v, *target)),
            Some((None, target)) => Some((value, *target)),
            None => None,
        };
        if stop.is_some_and(|(v, target)| self.score(v) >= self.score(target)) {
            trial.result.solved_at = Some(at);
            trial.end(TrialStatus::Solved);
            return Ok(());
        }
        if iteration >= self.max_iterations {
            trial.end(TrialStatus::Finished);
            return Ok(());
        }
        let standings: Vec<Standing> = trials
            .iter()
            .map(|t| Standing {
                iteration: t.result.iterations,
                score: t.result.last.map(|v| self.score(v)),
                live: t.handle.is_some(),
                config: t.result.config.clone(),
            })
            .collect();
        let decision =
            self.scheduler
                .on_result(index, iteration, score, &standings, &self.space, rng);
        match decision {
            Decision::Continue => {}
            Decision::Stop => {
                trials[index].end(TrialStatus::Stopped);
                return Ok(());
            }
            Decision::Exploit { from, config } => {
                let Some(source) = trials[from].handle.as_ref() else {
                    return Err(TuneError::BadSettings(format!(
                        "the scheduler chose trial {from}, which no longer runs"
                    )));
                };
                let checkpoint = A::save(source);
                let trial = &mut trials[index];
                let handle = trial.handle.as_ref().expect("a trial that reported runs");
                // Calls from one caller run in order: the restore happens before the next step.
                let restored = A::restore(handle, checkpoint, config.clone());
                trial.restores.push(restored);
                trial.result.exploits.push((iteration, from));
                trial.result.config = config;
            }
        }
        let trial = &mut trials[index];
        let handle = trial.handle.as_ref().expect("a trial that reported runs");
        trial.pending = Some(A::step(handle));
        Ok(())
    }

    /// `value` as a score, higher better.
    fn score(&self, value: f64) -> f64 {
        match self.mode {
            Mode::Max => value,
            Mode::Min => -value,
        }
    }

    fn progress_line<A: Actor>(&self, trials: &[Trial<A>], began: Instant) -> String {
        let count =
            |f: fn(&TrialStatus) -> bool| trials.iter().filter(|t| f(&t.result.status)).count();
        let best = trials
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.result.best.map(|b| (i, b)))
            .max_by(|a, b| self.score(a.1).total_cmp(&self.score(b.1)));
        let best = best.map_or_else(String::new, |(i, b)| {
            format!("; best {} {b:.3} (trial {i})", self.metric)
        });
        format!(
            "[tune {:.0} s, {}] {} running, {} pending, {} finished, {} stopped early, {} solved, {} failed{best}",
            began.elapsed().as_secs_f64(),
            self.scheduler.name(),
            count(|s| matches!(s, TrialStatus::Running)),
            count(|s| matches!(s, TrialStatus::Pending)),
            count(|s| matches!(s, TrialStatus::Finished | TrialStatus::OutOfTime)),
            count(|s| matches!(s, TrialStatus::Stopped)),
            count(|s| matches!(s, TrialStatus::Solved)),
            count(|s| matches!(s, TrialStatus::Failed(_))),
        )
    }
}

/// One trial while the search runs.
struct Trial<A: Actor> {
    result: TrialResult,
    handle: Option<ActorHandle<A>>,
    /// Its iteration in flight.
    pending: Option<ObjectRef<Metrics>>,
    /// Restores sent before its iteration in flight: checked when that iteration reports.
    restores: Vec<ObjectRef<()>>,
    started: Option<Duration>,
}

impl<A: Actor> Trial<A> {
    fn new(config: Config) -> Self {
        Trial {
            result: TrialResult::new(config),
            handle: None,
            pending: None,
            restores: Vec::new(),
            started: None,
        }
    }

    /// The trial ends with `status`: its actor stops (its last handle goes).
    fn end(&mut self, status: TrialStatus) {
        self.result.status = status;
        self.pending = None;
        self.handle = None;
        self.restores.clear();
        if let Some(started) = self.started {
            self.result.started = started;
        }
    }
}
