//! Draws a timeline that `prism::timeline` wrote (Chrome trace JSON) as an SVG picture: a row
//! per worker, a bar per run coloured by function, its argument fetch and result store darker
//! inside it. For a look without Perfetto, and for the picture in `docs/`.
//!
//! ```bash
//! cargo run --release --example es -- --env cartpole --timeline target/es-timeline.json
//! cargo run --release -p prism-benches --bin prism-timeline -- target/es-timeline.json docs/es-timeline.svg
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::Value;

/// Renders a Prism timeline (Chrome trace JSON) as SVG.
#[derive(Debug, Parser)]
struct Args {
    /// The trace to draw.
    trace: std::path::PathBuf,
    /// The SVG to write.
    svg: std::path::PathBuf,
    /// Draw only this many milliseconds from the first run (0: all).
    #[arg(long, default_value_t = 0.0)]
    window_ms: f64,
    /// The picture's width in pixels.
    #[arg(long, default_value_t = 1200)]
    width: u32,
}

/// One slice of a lane.
struct Slice {
    name: String,
    ts: f64,
    dur: f64,
    /// A whole run (else a part of one: argument fetch, result store).
    run: bool,
}

const COLOURS: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f",
];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.trace)
        .with_context(|| format!("cannot read {}", args.trace.display()))?;
    let trace: Value = serde_json::from_str(&text).context("the trace is not JSON")?;
    let Some(events) = trace["traceEvents"].as_array() else {
        bail!("{} has no traceEvents", args.trace.display());
    };
    let mut names: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut lanes: BTreeMap<(u64, u64), Vec<Slice>> = BTreeMap::new();
    for e in events {
        let lane = (
            e["pid"].as_u64().unwrap_or(0),
            e["tid"].as_u64().unwrap_or(0),
        );
        match e["ph"].as_str() {
            Some("M") if e["name"] == "thread_name" => {
                let name = e["args"]["name"].as_str().unwrap_or("worker");
                names.insert(lane, name.to_string());
            }
            Some("X") => lanes.entry(lane).or_default().push(Slice {
                name: e["name"].as_str().unwrap_or("?").to_string(),
                ts: e["ts"].as_f64().unwrap_or(0.0),
                dur: e["dur"].as_f64().unwrap_or(0.0),
                run: e["args"]["task_id"].is_string(),
            }),
            _ => {}
        }
    }
    let start = lanes
        .values()
        .flatten()
        .map(|s| s.ts)
        .fold(f64::INFINITY, f64::min);
    let end = lanes
        .values()
        .flatten()
        .map(|s| s.ts + s.dur)
        .fold(0.0, f64::max);
    if !start.is_finite() {
        bail!("the trace has no runs");
    }
    let end = match args.window_ms {
        w if w > 0.0 => (start + w * 1000.0).min(end),
        _ => end,
    };
    let mut colours: BTreeMap<String, &str> = BTreeMap::new();
    for slice in lanes.values().flatten().filter(|s| s.run) {
        let next = COLOURS[colours.len() % COLOURS.len()];
        colours.entry(slice.name.clone()).or_insert(next);
    }

    let (label, row, top) = (190.0, 22.0, 30.0);
    let width = f64::from(args.width);
    let scale = (width - label - 10.0) / (end - start).max(1.0);
    let legend = 18.0 * colours.len() as f64;
    let height = top + row * lanes.len() as f64 + 30.0 + legend;
    let mut svg = String::new();
    writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    )?;
    writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="18" font-size="13">Prism timeline: {} workers, {:.1} ms</text>"#,
        lanes.len(),
        (end - start) / 1000.0
    )?;
    for (i, (lane, slices)) in lanes.iter().enumerate() {
        let y = top + row * i as f64;
        let name = names
            .get(lane)
            .cloned()
            .unwrap_or_else(|| format!("worker {}", lane.1));
        writeln!(
            svg,
            r#"<text x="10" y="{}">node {} {}</text>"#,
            y + 14.0,
            lane.0,
            xml(&name)
        )?;
        for s in slices.iter().filter(|s| s.ts < end) {
            let x = label + (s.ts - start) * scale;
            let w = ((s.ts + s.dur).min(end) - s.ts) * scale;
            let (fill, opacity, inset) = match s.run {
                true => (colours.get(&s.name).copied().unwrap_or("#888"), 1.0, 2.0),
                false => ("#000", 0.35, 6.0),
            };
            writeln!(
                svg,
                r#"<rect x="{x:.2}" y="{:.1}" width="{:.2}" height="{:.1}" fill="{fill}" fill-opacity="{opacity}"><title>{}</title></rect>"#,
                y + inset,
                w.max(0.5),
                row - 2.0 * inset,
                xml(&s.name)
            )?;
        }
    }
    let axis = top + row * lanes.len() as f64 + 14.0;
    writeln!(
        svg,
        r#"<text x="{label}" y="{axis}">0 ms</text><text x="{}" y="{axis}" text-anchor="end">{:.1} ms</text>"#,
        width - 10.0,
        (end - start) / 1000.0
    )?;
    for (i, (name, colour)) in colours.iter().enumerate() {
        let y = axis + 10.0 + 18.0 * i as f64;
        writeln!(
            svg,
            r#"<rect x="10" y="{y}" width="12" height="12" fill="{colour}"/><text x="28" y="{}">{}</text>"#,
            y + 10.0,
            xml(name)
        )?;
    }
    writeln!(svg, "</svg>")?;
    std::fs::write(&args.svg, svg)
        .with_context(|| format!("cannot write {}", args.svg.display()))?;
    println!("wrote {}", args.svg.display());
    Ok(())
}

/// `text` with XML's special characters escaped.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
