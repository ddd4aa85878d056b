//! `prism::tune` on a 2-CPU local cluster, with a trainable whose every step is known: a climber
//! that moves `rate` of the way to 10 each iteration (its metric: minus the distance left), so
//! good rates are found fast, bad ones are stopped early, and PBT's takeovers carry state.

mod common;

use common::{Case, ensure, temp_path};
use libtest_mimic::Failed;
use prism::tune::{Asha, Config, Domain, Fifo, Metrics, Mode, Pbt, Space, TrialStatus, Tuner};
use prism::{ActorHandle, actor};

#[actor]
struct Climber {
    position: f64,
    rate: f64,
    /// Fails its iteration this many steps in (0: never).
    fail_at: i64,
    /// Each iteration takes this long.
    delay_ms: i64,
    steps: i64,
}

#[actor]
impl Climber {
    fn new(config: Config) -> Self {
        Climber {
            position: 0.0,
            rate: config.f64("rate"),
            fail_at: config.get("fail_at").map_or(0, |_| config.i64("fail_at")),
            delay_ms: config.get("delay_ms").map_or(0, |_| config.i64("delay_ms")),
            steps: 0,
        }
    }

    fn train(&mut self) -> Metrics {
        self.steps += 1;
        std::thread::sleep(std::time::Duration::from_millis(self.delay_ms as u64));
        assert!(
            self.steps != self.fail_at,
            "the climber fell at step {}",
            self.steps
        );
        self.position += self.rate * (10.0 - self.position);
        Metrics::new()
            .with("score", -(10.0 - self.position).abs())
            .with("position", self.position)
    }

    fn save(&self) -> Vec<u8> {
        self.position.to_le_bytes().to_vec()
    }

    fn load(&mut self, checkpoint: Vec<u8>, config: Config) {
        let bytes: [u8; 8] = checkpoint.try_into().expect("8 bytes");
        self.position = f64::from_le_bytes(bytes);
        self.rate = config.f64("rate");
    }
}

prism::trainable!(Climber, step = train, save = save, restore = load);

fn start(config: &Config) -> ActorHandle<Climber> {
    Climber::options().num_cpus(1.0).remote(config.clone())
}

fn grid_and_random_search_find_the_best_rate_and_write_their_log() -> Result<(), Failed> {
    let dir = temp_path("tune-fifo");
    let space = Space::new()
        .add("rate", Domain::grid([0.05, 0.2, 0.5]))
        .add("noise", Domain::uniform(0.0, 1.0));
    let results = Tuner::new(space)
        .metric("score", Mode::Max)
        .samples(2)
        .max_concurrent(2)
        .max_iterations(5)
        .scheduler(Fifo)
        .seed(3)
        .log_dir(&dir)
        .progress(false)
        .run(start)?;
    ensure(results.trials.len() == 6, "3 grid points x 2 samples")?;
    ensure(
        results
            .trials
            .iter()
            .all(|t| t.status == TrialStatus::Finished && t.iterations == 5),
        format!("every trial ran its 5 iterations:\n{results}"),
    )?;
    let (_, best) = results.best().ok_or("a best trial")?;
    ensure(
        best.config.f64("rate") == 0.5,
        format!("rate 0.5 wins:\n{results}"),
    )?;
    let table = results.to_string();
    ensure(
        table.contains("best: trial") && table.contains("rate=0.5000"),
        table.clone(),
    )?;
    let log = std::fs::read_to_string(format!("{dir}/results.jsonl"))?;
    ensure(log.lines().count() == 31, "30 results and a summary")?;
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap_or(""))?;
    ensure(
        first["metrics"]["score"].is_number() && first["config"]["rate"].is_number(),
        first.to_string(),
    )?;
    let svg = std::fs::read_to_string(format!("{dir}/score.svg"))?;
    ensure(svg.matches("<polyline").count() == 6, "a line per trial")?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn asha_stops_slow_climbers_early() -> Result<(), Failed> {
    // One trial at a time: the scores reach each rung in the order the trials were sampled,
    // so what ASHA stops does not depend on the machine's pace (with two at a time, a loaded
    // machine once let trials reach rungs before their peers and go on: 194 iterations).
    let space = Space::new().add("rate", Domain::log_uniform(0.001, 0.6));
    let run = |scheduler: Option<Asha>| {
        let tuner = Tuner::new(space.clone())
            .metric("score", Mode::Max)
            .samples(12)
            .max_concurrent(1)
            .max_iterations(27)
            .seed(11)
            .progress(false);
        match scheduler {
            Some(asha) => tuner.scheduler(asha).run(start),
            None => tuner.run(start),
        }
    };
    let asha = run(Some(Asha::new(27, 1, 3)))?;
    let fifo = run(None)?;
    let stopped = asha
        .trials
        .iter()
        .filter(|t| t.status == TrialStatus::Stopped)
        .count();
    ensure(
        stopped >= 4,
        format!("ASHA stopped {stopped} trials:\n{asha}"),
    )?;
    ensure(
        asha.total_iterations() * 2 < fifo.total_iterations(),
        format!(
            "ASHA spent {} iterations, FIFO {}",
            asha.total_iterations(),
            fifo.total_iterations()
        ),
    )?;
    let (_, best) = asha.best().ok_or("a best trial")?;
    let (_, fifo_best) = fifo.best().ok_or("a best trial")?;
    ensure(
        best.config == fifo_best.config,
        format!("both find the same best rate:\n{asha}\n{fifo}"),
    )
}

fn pbt_moves_laggards_onto_leaders_with_their_state() -> Result<(), Failed> {
    // Rate 0.01 is the worst at any iteration (below 1.2 after 12 steps; the others pass 3
    // at their first): PBT must move it onto a leader, whatever the trials' pace. Iterations
    // of 40 ms keep the leaders running while it reaches its exploit points, even when its
    // actor starts a few hundred milliseconds after theirs (a loaded machine).
    let space = Space::new()
        .add("rate", Domain::grid([0.01, 0.3, 0.4, 0.5]))
        .add("delay_ms", Domain::grid([40i64]));
    let results = Tuner::new(space)
        .metric("score", Mode::Max)
        .max_concurrent(4)
        .max_iterations(12)
        .scheduler(Pbt::new(3))
        .seed(5)
        .progress(false)
        .run(start)?;
    let exploits: usize = results.trials.iter().map(|t| t.exploits.len()).sum();
    ensure(
        exploits >= 1,
        format!("no trial exploited another:\n{results}"),
    )?;
    // A laggard that took over a leader's position jumps ahead at its next step, far beyond
    // what its own slow rate moves it (at most 0.3 per step for rate 0.01 from 0-10).
    let jumped = results.trials.iter().any(|t| {
        t.exploits.iter().any(|&(at, _)| {
            let score_at = |i: u32| t.history.iter().find(|h| h.1 == i).map(|h| h.2);
            matches!((score_at(at), score_at(at + 1)), (Some(b), Some(a)) if a - b > 1.0)
        })
    });
    ensure(
        jumped,
        format!("a takeover carried the leader's state:\n{results}"),
    )?;
    ensure(
        results
            .trials
            .iter()
            .all(|t| t.status == TrialStatus::Finished),
        format!("every trial ran to the end:\n{results}"),
    )
}

fn failures_and_targets_end_single_trials() -> Result<(), Failed> {
    let space = Space::new()
        .add("rate", Domain::grid([0.5, 0.9]))
        .add("fail_at", Domain::grid([0i64, 2]));
    let results = Tuner::new(space)
        .metric("score", Mode::Max)
        .max_concurrent(2)
        .max_iterations(20)
        .stop_when("position", 9.99)
        .progress(false)
        .run(start)?;
    for t in &results.trials {
        let fails = t.config.i64("fail_at") == 2;
        match &t.status {
            TrialStatus::Failed(why) if fails => {
                ensure(why.contains("the climber fell at step 2"), why.clone())?
            }
            TrialStatus::Solved if !fails => ensure(t.solved_at.is_some(), "solved when")?,
            other => return Err(format!("{}: {other:?}\n{results}", t.config).into()),
        }
    }
    results.first_solved().ok_or("a solved trial")?;
    let solved_in = |rate: f64| {
        results
            .trials
            .iter()
            .find(|t| t.config.f64("rate") == rate && t.solved_at.is_some())
            .map(|t| t.iterations)
    };
    ensure(
        solved_in(0.9) == Some(3) && solved_in(0.5) == Some(10),
        format!("rate 0.9 solves in 3 iterations, 0.5 in 10:\n{results}"),
    )?;
    // The same target on the search's own metric.
    let by_score = Tuner::new(Space::new().add("rate", Domain::grid([0.9])))
        .metric("score", Mode::Max)
        .max_iterations(20)
        .stop_at(-0.01)
        .progress(false)
        .run(start)?;
    ensure(
        by_score.trials[0].status == TrialStatus::Solved && by_score.trials[0].iterations == 3,
        by_score.to_string(),
    )?;
    let missing = Tuner::new(Space::new().add("rate", Domain::grid([0.5])))
        .progress(false)
        .run(start)
        .err()
        .ok_or("a search without a metric fails")?;
    ensure(
        missing.to_string().contains("Tuner::metric"),
        missing.to_string(),
    )
}

fn main() {
    let config = prism::Config::new().num_cpus(4.0);
    let cases: &[Case] = &[
        (
            "grid_and_random_search_find_the_best_rate_and_write_their_log",
            grid_and_random_search_find_the_best_rate_and_write_their_log,
        ),
        (
            "asha_stops_slow_climbers_early",
            asha_stops_slow_climbers_early,
        ),
        (
            "pbt_moves_laggards_onto_leaders_with_their_state",
            pbt_moves_laggards_onto_leaders_with_their_state,
        ),
        (
            "failures_and_targets_end_single_trials",
            failures_and_targets_end_single_trials,
        ),
    ];
    common::run_with_threads(config, cases, Some(1));
}
