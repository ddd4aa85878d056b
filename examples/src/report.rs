//! What the RL examples show and leave behind: a progress bar while they learn, then a JSON
//! log and a learning curve (PNG and SVG, drawn with plotters).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;

/// The flags the RL examples share.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// The environment.
    #[arg(long, value_enum, default_value = "cartpole")]
    pub env: crate::envs::EnvName,
    /// Workers, one CPU each (default: every CPU of the node).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Hidden layer widths, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub hidden: Option<Vec<usize>>,
    /// Seed of everything random.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The most iterations.
    #[arg(long)]
    pub max_iters: Option<usize>,
    /// Mean return that counts as solved (default: the environment's threshold); training
    /// stops once it is reached.
    #[arg(long)]
    pub target: Option<f64>,
    /// Keep training after the target is reached.
    #[arg(long)]
    pub no_stop: bool,
    /// Where the log and the curves go (default: target/ALGO-ENV).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl CommonArgs {
    /// The number of workers: the flag, or every CPU of the cluster.
    pub fn workers(&self) -> prism::Result<usize> {
        Ok(self.workers.unwrap_or(cluster_cpus()?).max(1))
    }

    /// The output folder for `algo`.
    pub fn out_dir(&self, algo: &str) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            PathBuf::from(format!("target/{algo}-{:?}", self.env).to_lowercase())
        })
    }
}

/// The cluster's CPUs (whole ones).
pub fn cluster_cpus() -> prism::Result<usize> {
    Ok(prism::cluster_resources()?
        .get("CPU")
        .copied()
        .unwrap_or(1.0) as usize)
}

/// One iteration of training.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IterationLog {
    /// Iteration number, from 1.
    pub iter: usize,
    /// Seconds since training started.
    pub time_s: f64,
    /// Mean return of the current policy (its unperturbed or sampled episodes).
    pub mean_return: f64,
    /// Mean return of the episodes trained on (perturbed, for ES).
    pub mean_train_return: f64,
    /// Episodes run in the iteration.
    pub episodes: usize,
    /// Environment steps since training started.
    pub steps: u64,
}

/// A progress bar with the iteration, the mean return and environment steps per second; on a
/// terminal it redraws in place, otherwise it prints a line a second.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    plain: bool,
    last_print: Instant,
    last: (f64, u64),
}

impl Progress {
    /// A bar for at most `iters` iterations.
    pub fn new(iters: usize) -> Self {
        let plain = !std::io::stderr().is_terminal();
        let bar = if plain {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new(iters as u64);
            bar.set_style(
                ProgressStyle::with_template("{elapsed_precise} [{bar:30}] iter {pos}/{len} {msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        };
        Progress {
            bar,
            plain,
            last_print: Instant::now(),
            last: (0.0, 0),
        }
    }

    /// Shows `entry`.
    pub fn update(&mut self, entry: &IterationLog) {
        let (t0, s0) = self.last;
        let rate = (entry.steps - s0) as f64 / (entry.time_s - t0).max(1e-9);
        self.last = (entry.time_s, entry.steps);
        let message = format!(
            "return {:8.1}  train {:8.1}  {}",
            entry.mean_return,
            entry.mean_train_return,
            steps_per_s(rate)
        );
        if self.plain {
            if self.last_print.elapsed() >= Duration::from_secs(1) || entry.iter == 1 {
                self.last_print = Instant::now();
                eprintln!("[{:7.2} s] iter {:4} {message}", entry.time_s, entry.iter);
            }
        } else {
            self.bar.set_position(entry.iter as u64);
            self.bar.set_message(message);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// "1.23 M steps/s" and the like.
pub fn steps_per_s(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2} M steps/s", rate / 1e6)
    } else {
        format!("{:.1} k steps/s", rate / 1e3)
    }
}

/// Writes `log.json` (the summary and every iteration) and, when a font is found, the learning
/// curve as `curve.png` and `curve.svg` into `dir`; returns the files written.
pub fn write_outputs(
    dir: &Path,
    title: &str,
    target: Option<f64>,
    log: &[IterationLog],
    summary: &impl serde::Serialize,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let json = dir.join("log.json");
    let body = serde_json::json!({ "summary": summary, "iterations": log });
    std::fs::write(&json, serde_json::to_string_pretty(&body)?)?;
    let mut written = vec![json];
    if !log.is_empty() {
        if load_font() {
            let png = dir.join("curve.png");
            draw(
                BitMapBackend::new(&png, (900, 540)).into_drawing_area(),
                title,
                target,
                log,
            )?;
            let svg = dir.join("curve.svg");
            draw(
                SVGBackend::new(&svg, (900, 540)).into_drawing_area(),
                title,
                target,
                log,
            )?;
            written.extend([png, svg]);
        } else {
            tracing::warn!(
                "no TrueType font found (set PRISM_FONT to a .ttf file): the learning curve was not drawn"
            );
        }
    }
    Ok(written)
}

/// Registers a sans-serif TrueType font with plotters once; false if none was found.
fn load_font() -> bool {
    static LOADED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LOADED.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = std::env::var_os("PRISM_FONT")
            .map(PathBuf::from)
            .into_iter()
            .collect();
        candidates.extend(
            [
                "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/TTF/DejaVuSans.ttf",
                "/usr/share/fonts/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
                "/System/Library/Fonts/Supplemental/Arial.ttf",
            ]
            .map(PathBuf::from),
        );
        candidates.iter().any(|path| {
            std::fs::read(path).is_ok_and(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    })
}

fn draw<DB: DrawingBackend>(
    area: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    target: Option<f64>,
    log: &[IterationLog],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE).map_err(plot_error)?;
    let x_max = log.last().map_or(1.0, |e| e.time_s).max(1e-3);
    let values = log
        .iter()
        .flat_map(|e| [e.mean_return, e.mean_train_return])
        .chain(target);
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let pad = ((hi - lo) * 0.05).max(1.0);
    let mut chart = ChartBuilder::on(&area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, (lo - pad)..(hi + pad))
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("wall time (s)")
        .y_desc("mean episode return")
        .draw()
        .map_err(plot_error)?;
    chart
        .draw_series(LineSeries::new(
            log.iter().map(|e| (e.time_s, e.mean_train_return)),
            RGBColor(150, 170, 220).stroke_width(1),
        ))
        .map_err(plot_error)?
        .label("training episodes")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RGBColor(150, 170, 220)));
    chart
        .draw_series(LineSeries::new(
            log.iter().map(|e| (e.time_s, e.mean_return)),
            BLUE.stroke_width(2),
        ))
        .map_err(plot_error)?
        .label("policy")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
    if let Some(t) = target {
        chart
            .draw_series(LineSeries::new([(0.0, t), (x_max, t)], RED.stroke_width(1)))
            .map_err(plot_error)?
            .label("target")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    area.present().map_err(plot_error)?;
    Ok(())
}

fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the learning curve: {e}")
}
