//! What a search found: each trial's result, the table of them, the JSON log of every result
//! and a plot of every trial's metric against time.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::space::{Config, TuneError};
use super::{Metrics, Mode};

/// How a trial ended (or where it is).
#[derive(Debug, Clone, PartialEq)]
pub enum TrialStatus {
    /// Not started yet.
    Pending,
    /// Running.
    Running,
    /// Ran its iterations.
    Finished,
    /// Stopped early by the scheduler.
    Stopped,
    /// Reached the search's target.
    Solved,
    /// Still running when the time budget ran out.
    OutOfTime,
    /// Its actor failed (why).
    Failed(String),
}

impl fmt::Display for TrialStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrialStatus::Pending => "PENDING",
            TrialStatus::Running => "RUNNING",
            TrialStatus::Finished => "FINISHED",
            TrialStatus::Stopped => "STOPPED",
            TrialStatus::Solved => "SOLVED",
            TrialStatus::OutOfTime => "OUT_OF_TIME",
            TrialStatus::Failed(_) => "FAILED",
        })
    }
}

/// One trial of a search.
#[derive(Debug, Clone)]
pub struct TrialResult {
    /// Its hyperparameters (the latest, after PBT's exploits).
    pub config: Config,
    /// How it ended.
    pub status: TrialStatus,
    /// Iterations reported.
    pub iterations: u32,
    /// Every result: seconds since the search began, iteration, metric.
    pub history: Vec<(f64, u32, f64)>,
    /// The latest metric.
    pub last: Option<f64>,
    /// The best metric (by the search's mode).
    pub best: Option<f64>,
    /// When it reached the target, since the search began.
    pub solved_at: Option<Duration>,
    /// When it started, since the search began.
    pub started: Duration,
    /// PBT's exploits: at which iteration it took over from which trial.
    pub exploits: Vec<(u32, usize)>,
}

impl TrialResult {
    pub(crate) fn new(config: Config) -> Self {
        TrialResult {
            config,
            status: TrialStatus::Pending,
            iterations: 0,
            history: Vec::new(),
            last: None,
            best: None,
            solved_at: None,
            started: Duration::ZERO,
            exploits: Vec::new(),
        }
    }
}

/// The outcome of a search.
#[derive(Debug, Clone)]
pub struct Results {
    /// Every trial, in the order they were drawn.
    pub trials: Vec<TrialResult>,
    /// The metric.
    pub metric: String,
    /// Its direction.
    pub mode: Mode,
    /// The scheduler's name.
    pub scheduler: &'static str,
    /// How long the search took.
    pub elapsed: Duration,
}

impl Results {
    pub(crate) fn new(
        trials: Vec<TrialResult>,
        metric: String,
        mode: Mode,
        scheduler: &'static str,
        elapsed: Duration,
    ) -> Self {
        Results {
            trials,
            metric,
            mode,
            scheduler,
            elapsed,
        }
    }

    /// The trial with the best metric, if any reported.
    pub fn best(&self) -> Option<(usize, &TrialResult)> {
        let key = |v: f64| match self.mode {
            Mode::Max => v,
            Mode::Min => -v,
        };
        self.trials
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.best.map(|b| (i, t, key(b))))
            .max_by(|a, b| a.2.total_cmp(&b.2))
            .map(|(i, t, _)| (i, t))
    }

    /// The trial that reached the target first, and when.
    pub fn first_solved(&self) -> Option<(usize, Duration)> {
        self.trials
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.solved_at.map(|at| (i, at)))
            .min_by_key(|(_, at)| *at)
    }

    /// Iterations run over all trials (the search's budget spent).
    pub fn total_iterations(&self) -> u64 {
        self.trials.iter().map(|t| u64::from(t.iterations)).sum()
    }
}

impl fmt::Display for Results {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} trials, {}, {:.1} s, {} iterations",
            self.trials.len(),
            self.scheduler,
            self.elapsed.as_secs_f64(),
            self.total_iterations()
        )?;
        writeln!(
            f,
            "{:>5}  {:<11} {:>6} {:>12} {:>12}  config",
            "trial",
            "status",
            "iters",
            format!("last {}", short(&self.metric)),
            "best"
        )?;
        for (i, t) in self.trials.iter().enumerate() {
            let num = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.3}"));
            writeln!(
                f,
                "{i:>5}  {:<11} {:>6} {:>12} {:>12}  {}",
                t.status.to_string(),
                t.iterations,
                num(t.last),
                num(t.best),
                t.config
            )?;
        }
        match self.best() {
            Some((i, t)) => write!(
                f,
                "best: trial {i}, {} {:.3}: {}",
                self.metric,
                t.best.unwrap_or(f64::NAN),
                t.config
            )?,
            None => write!(f, "no trial reported {}", self.metric)?,
        }
        if let Some((i, at)) = self.first_solved() {
            write!(f, "\nfirst solved: trial {i} at {:.1} s", at.as_secs_f64())?;
        }
        Ok(())
    }
}

fn short(name: &str) -> &str {
    &name[..name.len().min(7)]
}

/// The search's files: a JSON line per result, and at the end a summary line and the plot.
pub(crate) struct Log {
    dir: Option<PathBuf>,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

fn output_error(path: &Path, e: impl fmt::Display) -> TuneError {
    TuneError::Output {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

impl Log {
    pub(crate) fn open(dir: Option<&Path>) -> Result<Self, TuneError> {
        let Some(dir) = dir else {
            return Ok(Log {
                dir: None,
                file: None,
            });
        };
        std::fs::create_dir_all(dir).map_err(|e| output_error(dir, e))?;
        let path = dir.join("results.jsonl");
        let file = std::fs::File::create(&path).map_err(|e| output_error(&path, e))?;
        Ok(Log {
            dir: Some(dir.to_path_buf()),
            file: Some(std::io::BufWriter::new(file)),
        })
    }

    pub(crate) fn result(
        &mut self,
        trial: usize,
        iteration: u32,
        at: Duration,
        metrics: &Metrics,
        config: &Config,
    ) -> Result<(), TuneError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let metrics: serde_json::Map<String, serde_json::Value> = metrics
            .values
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!(v)))
            .collect();
        let config: serde_json::Map<String, serde_json::Value> = config
            .values
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!(v)))
            .collect();
        let line = serde_json::json!({
            "trial": trial,
            "iteration": iteration,
            "time_s": at.as_secs_f64(),
            "metrics": metrics,
            "config": config,
        });
        writeln!(file, "{line}").map_err(|e| output_error(Path::new("results.jsonl"), e))
    }

    pub(crate) fn finish(&mut self, results: &Results) -> Result<(), TuneError> {
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        if let Some(file) = self.file.as_mut() {
            let summary = serde_json::json!({
                "summary": {
                    "scheduler": results.scheduler,
                    "metric": results.metric,
                    "elapsed_s": results.elapsed.as_secs_f64(),
                    "iterations": results.total_iterations(),
                    "best_trial": results.best().map(|(i, _)| i),
                    "first_solved": results.first_solved().map(|(i, at)| (i, at.as_secs_f64())),
                    "trials": results.trials.iter().map(|t| serde_json::json!({
                        "status": t.status.to_string(),
                        "iterations": t.iterations,
                        "best": t.best,
                        "exploits": t.exploits,
                    })).collect::<Vec<_>>(),
                }
            });
            writeln!(file, "{summary}")
                .and_then(|()| file.flush())
                .map_err(|e| output_error(&dir.join("results.jsonl"), e))?;
        }
        let path = dir.join(format!("{}.svg", results.metric));
        std::fs::write(&path, plot(results)).map_err(|e| output_error(&path, e))
    }
}

/// Every trial's metric against time, as an SVG picture (a line per trial, the best one bold).
pub fn plot(results: &Results) -> String {
    const W: f64 = 800.0;
    const H: f64 = 480.0;
    const PAD: f64 = 56.0;
    let points = results.trials.iter().flat_map(|t| t.history.iter());
    let (mut t_max, mut lo, mut hi) = (1e-9f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(t, _, v) in points {
        t_max = t_max.max(t);
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        hi = lo + 1.0;
    }
    let x = |t: f64| PAD + (W - 2.0 * PAD) * t / t_max;
    let y = |v: f64| H - PAD - (H - 2.0 * PAD) * (v - lo) / (hi - lo);
    let best = results.best().map(|(i, _)| i);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{PAD}\" y=\"24\" font-size=\"15\">{} per trial against time ({}, {} trials)</text>\n\
         <line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <line x1=\"{PAD}\" y1=\"{PAD}\" x2=\"{PAD}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <text x=\"{r}\" y=\"{lb}\" text-anchor=\"end\">{t_max:.1} s</text>\n\
         <text x=\"{PAD}\" y=\"{lb}\">0 s</text>\n\
         <text x=\"4\" y=\"{PAD}\">{hi:.1}</text>\n\
         <text x=\"4\" y=\"{b}\">{lo:.1}</text>\n",
        results.metric,
        results.scheduler,
        results.trials.len(),
        b = H - PAD,
        r = W - PAD,
        lb = H - PAD + 18.0,
    );
    for (i, trial) in results.trials.iter().enumerate() {
        if trial.history.is_empty() {
            continue;
        }
        let hue = (i * 137) % 360;
        let width = if Some(i) == best { 3.0 } else { 1.2 };
        let path: Vec<String> = trial
            .history
            .iter()
            .map(|&(t, _, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"hsl({hue},70%,45%)\" stroke-width=\"{width}\" points=\"{}\"><title>trial {i}: {}</title></polyline>\n",
            path.join(" "),
            trial.config
        ));
    }
    svg.push_str("</svg>\n");
    svg
}
