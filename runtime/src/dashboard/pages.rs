//! The dashboard's pages: HTML made on the head from the control store, one per kind of
//! thing (jobs, tasks, actors, objects, nodes, placement groups) plus an overview, each
//! linking to the others. A page reloads its `<main>` every two seconds while it is shown,
//! so its counts stay live; it works without scripts too (as a still picture).

use std::collections::BTreeMap;
use std::fmt::Write;

use prism_transport::{
    ActorState, GroupState, JobState, JobStatus, JobSummary, JobTask, NodeStatus, TaskPhase,
    TaskQuery,
};

use crate::proto::control::{pulled_line, usage_line, utc};

/// The pages, in the order of the navigation bar: path and title.
const PAGES: [(&str, &str); 7] = [
    ("/", "Overview"),
    ("/jobs", "Jobs"),
    ("/tasks", "Tasks"),
    ("/actors", "Actors"),
    ("/objects", "Objects"),
    ("/nodes", "Nodes"),
    ("/groups", "Placement groups"),
];

/// `text` safe inside HTML text and attribute values.
pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// `text` as one component of a URL's query.
fn query_value(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
    out
}

/// A link to `path` with `params` (those with a value), its text escaped.
fn link(path: &str, params: &[(&str, &str)], text: &str) -> String {
    let query: Vec<String> = params
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", query_value(v)))
        .collect();
    let href = match query.is_empty() {
        true => path.to_string(),
        false => format!("{path}?{}", query.join("&")),
    };
    format!("<a href=\"{}\">{}</a>", escape(&href), escape(text))
}

/// A whole page: the navigation bar (`path` marked) and `main`.
pub(super) fn layout(path: &str, main: &str) -> String {
    let title = PAGES
        .iter()
        .find(|(p, _)| *p == path)
        .map_or("Prism", |(_, t)| t);
    let mut nav = String::new();
    for (p, t) in PAGES {
        let current = if p == path {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{p}\"{current}>{t}</a>");
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title} · Prism</title><style>{STYLE}</style></head><body>\
         <header><b>Prism</b><nav>{nav}</nav></header>\
         <main data-page=\"{path}\">{main}</main><script>{SCRIPT}</script></body></html>\n"
    )
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:0;color:#222}\
header{background:#1f2937;color:#fff;padding:8px 16px;display:flex;gap:24px;align-items:center}\
nav a{color:#cbd5e1;margin-right:14px;text-decoration:none}nav a[aria-current]{color:#fff;\
border-bottom:2px solid #60a5fa}main{padding:12px 16px}table{border-collapse:collapse;\
margin:8px 0 16px}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;\
vertical-align:top;white-space:nowrap}td:last-child{white-space:normal}th{background:#f3f4f6}.counts span{display:inline-block;margin:0 12px 8px 0;\
padding:4px 10px;border-radius:4px;background:#eef2ff}.FAILED,.DEAD{color:#b91c1c}\
.FINISHED,.ALIVE{color:#15803d}td.num{text-align:right}";

/// Reloads `<main>` every two seconds while the page is shown (the counts stay live).
const SCRIPT: &str = "setInterval(async()=>{if(document.hidden)return;try{\
const r=await fetch(location.href,{credentials:'same-origin'});if(!r.ok)return;\
const d=new DOMParser().parseFromString(await r.text(),'text/html');\
const m=d.querySelector('main');if(m)document.querySelector('main').replaceWith(m);\
}catch(e){}},2000);";

/// A table of `rows` (cells already HTML) under `columns`.
fn table(columns: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<table><tr>");
    for c in columns {
        let _ = write!(out, "<th>{c}</th>");
    }
    out.push_str("</tr>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}

/// A state, marked for its colour.
fn state(name: &str) -> String {
    format!("<span class=\"{0}\">{0}</span>", escape(name))
}

/// Every job's tasks by state, summed.
fn task_states(summaries: &[JobSummary]) -> BTreeMap<TaskPhase, u64> {
    let mut states = BTreeMap::new();
    for count in summaries.iter().flat_map(|s| &s.tasks) {
        *states.entry(count.state).or_default() += count.count;
    }
    states
}

/// What the head knows, for a page.
pub(super) struct Seen<'a> {
    pub(super) nodes: &'a [NodeStatus],
    pub(super) jobs: &'a [JobStatus],
    pub(super) summaries: &'a [JobSummary],
}

/// The overview: counts of everything, each linking to its page.
pub(super) fn overview(seen: &Seen<'_>) -> String {
    let alive = seen.nodes.iter().filter(|n| n.alive).count();
    let running = seen
        .jobs
        .iter()
        .filter(|j| j.state == JobState::Running)
        .count();
    let actors = seen.jobs.iter().flat_map(|j| &j.actors);
    let live_actors = actors
        .clone()
        .filter(|a| a.state == ActorState::Alive)
        .count();
    let groups = seen.jobs.iter().flat_map(|j| &j.groups);
    let live_groups = groups
        .clone()
        .filter(|g| g.state != GroupState::Removed)
        .count();
    let objects: u64 = seen
        .summaries
        .iter()
        .flat_map(|s| &s.objects)
        .map(|o| o.count)
        .sum();
    let mut main = String::from("<h1>Cluster</h1><div class=\"counts\">");
    let tiles = [
        (
            "/nodes",
            format!("{alive} of {} nodes alive", seen.nodes.len()),
        ),
        (
            "/jobs",
            format!("{running} of {} jobs running", seen.jobs.len()),
        ),
        (
            "/actors",
            format!("{live_actors} of {} actors alive", actors.count()),
        ),
        ("/objects", format!("{objects} objects")),
        (
            "/groups",
            format!("{live_groups} of {} placement groups", groups.count()),
        ),
    ];
    for (path, text) in tiles {
        let _ = write!(main, "<span>{}</span>", link(path, &[], &text));
    }
    main.push_str("</div><h2>Tasks by state</h2><div class=\"counts\">");
    for (phase, count) in task_states(seen.summaries) {
        let text = format!("{phase} {count}");
        let _ = write!(
            main,
            "<span>{}</span>",
            link("/tasks", &[("state", phase.name())], &text)
        );
    }
    main.push_str("</div>");
    main
}

/// Every job, with its task counts and links to its tasks and actors.
pub(super) fn jobs(seen: &Seen<'_>) -> String {
    let rows: Vec<Vec<String>> = seen
        .jobs
        .iter()
        .map(|job| {
            let (name, reason) = match &job.state {
                JobState::Running => ("RUNNING", ""),
                JobState::Finished => ("FINISHED", ""),
                JobState::Failed(reason) => ("FAILED", reason.as_str()),
            };
            let summary = seen.summaries.iter().find(|s| s.job == job.job);
            let tasks: u64 = summary.map_or(0, |s| s.tasks.iter().map(|c| c.count).sum());
            let ended = match job.ended_ms {
                0 => "-".to_string(),
                ms => utc(ms),
            };
            vec![
                escape(&job.job),
                state(name),
                escape(&format!("{} (pid {})", job.info.driver, job.info.pid)),
                utc(job.info.started_ms),
                ended,
                link("/tasks", &[("job", &job.job)], &tasks.to_string()),
                link(
                    "/actors",
                    &[("job", &job.job)],
                    &job.actors.len().to_string(),
                ),
                escape(&job.info.entry),
                escape(reason),
            ]
        })
        .collect();
    format!(
        "<h1>Jobs</h1>{}",
        table(
            &[
                "Job", "State", "Driver", "Started", "Ended", "Tasks", "Actors", "Entry", "Reason"
            ],
            &rows
        )
    )
}

/// The tasks page: counts by state (each a filter), by function, and the newest tasks that
/// `query` asks for (`matched` of them match).
pub(super) fn tasks(seen: &Seen<'_>, query: &TaskQuery, tasks: &[JobTask], matched: u64) -> String {
    let job = query.job.as_deref().unwrap_or("");
    let function = query.function.as_deref().unwrap_or("");
    let summaries: Vec<JobSummary> = seen
        .summaries
        .iter()
        .filter(|s| job.is_empty() || s.job == job)
        .cloned()
        .collect();
    let mut main = String::from("<h1>Tasks</h1>");
    if !job.is_empty() || !function.is_empty() {
        let _ = write!(
            main,
            "<p>Of job <b>{}</b>, function <b>{}</b> ({})</p>",
            escape(if job.is_empty() { "any" } else { job }),
            escape(if function.is_empty() { "any" } else { function }),
            link("/tasks", &[], "every task")
        );
    }
    main.push_str("<div class=\"counts\">");
    for (phase, count) in task_states(&summaries) {
        let text = format!("{phase} {count}");
        let params = [
            ("job", job),
            ("function", function),
            ("state", phase.name()),
        ];
        let _ = write!(main, "<span>{}</span>", link("/tasks", &params, &text));
    }
    main.push_str("</div><h2>By function</h2>");
    let mut by_function: BTreeMap<(&str, &str), BTreeMap<TaskPhase, u64>> = BTreeMap::new();
    for s in &summaries {
        for c in &s.tasks {
            let states = by_function
                .entry((s.job.as_str(), c.function.as_str()))
                .or_default();
            *states.entry(c.state).or_default() += c.count;
        }
    }
    let rows: Vec<Vec<String>> = by_function
        .iter()
        .filter(|((_, f), _)| function.is_empty() || f.eq_ignore_ascii_case(function))
        .map(|((job, function), states)| {
            let total: u64 = states.values().sum();
            let listed: Vec<String> = states
                .iter()
                .map(|(phase, n)| {
                    let params = [
                        ("job", *job),
                        ("function", *function),
                        ("state", phase.name()),
                    ];
                    link("/tasks", &params, &format!("{phase} {n}"))
                })
                .collect();
            vec![
                link("/tasks", &[("job", job), ("function", function)], function),
                escape(job),
                format!("{total}"),
                listed.join(", "),
            ]
        })
        .collect();
    main.push_str(&table(&["Function", "Job", "Total", "States"], &rows));
    let state_text = query.state.map_or("any state", TaskPhase::name);
    let _ = write!(
        main,
        "<h2>Tasks in {state_text}: {} of {matched} shown (the newest)</h2>",
        tasks.len()
    );
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let id = t.task.task_id.to_string();
            let run: u64 = t.task.runs.iter().map(|r| r.run_us).sum();
            vec![
                link("/task", &[("job", &t.job), ("id", &id)], &id),
                escape(&t.task.function),
                state(t.task.state.name()),
                t.task.attempt.to_string(),
                escape(t.task.node.as_deref().unwrap_or("-")),
                escape(&t.job),
                if t.task.runs.is_empty() {
                    "-".to_string()
                } else {
                    format!("{:.3} ms", run as f64 / 1000.0)
                },
                escape(
                    t.task
                        .error
                        .as_deref()
                        .and_then(|e| e.lines().next())
                        .unwrap_or(""),
                ),
            ]
        })
        .collect();
    main.push_str(&table(
        &[
            "Task", "Function", "State", "Attempt", "Node", "Job", "Ran", "Error",
        ],
        &rows,
    ));
    main
}

/// One task's record: its states with their times and its runs.
pub(super) fn task(found: Option<&JobTask>) -> String {
    let Some(t) = found else {
        return "<h1>Task</h1><p>The head keeps no such task (it keeps the newest ones).</p>"
            .to_string();
    };
    let task = &t.task;
    let parent = task.parent.map_or("-".to_string(), |p| {
        let id = p.to_string();
        link("/task", &[("job", &t.job), ("id", &id)], &id)
    });
    let mut main = format!(
        "<h1>Task {}</h1>{}",
        escape(&task.task_id.to_string()),
        table(
            &[
                "Function", "Job", "State", "Attempt", "Node", "Parent", "Error"
            ],
            &[vec![
                escape(&task.function),
                link("/tasks", &[("job", &t.job)], &t.job),
                state(task.state.name()),
                task.attempt.to_string(),
                escape(task.node.as_deref().unwrap_or("-")),
                parent,
                format!("<pre>{}</pre>", escape(task.error.as_deref().unwrap_or(""))),
            ]]
        )
    );
    let events: Vec<Vec<String>> = task
        .events
        .iter()
        .map(|e| {
            vec![
                state(e.state.name()),
                e.attempt.to_string(),
                format!("{}.{:06}", utc(e.at_us / 1000), e.at_us % 1_000_000),
            ]
        })
        .collect();
    main.push_str("<h2>States</h2>");
    main.push_str(&table(&["State", "Attempt", "At (UTC)"], &events));
    let runs: Vec<Vec<String>> = task
        .runs
        .iter()
        .map(|r| {
            vec![
                escape(&r.node),
                r.pid.map_or("-".to_string(), |p| p.to_string()),
                format!("{} us", r.args_us),
                format!("{} us", r.run_us),
                format!("{} us", r.store_us),
            ]
        })
        .collect();
    main.push_str("<h2>Runs</h2>");
    main.push_str(&table(
        &["Node", "Pid", "Arguments", "Function", "Results"],
        &runs,
    ));
    main
}

/// Every job's actors (of `job` only, if given).
pub(super) fn actors(seen: &Seen<'_>, job: Option<&str>) -> String {
    let mut rows = Vec::new();
    for j in seen
        .jobs
        .iter()
        .filter(|j| job.is_none_or(|job| j.job == job))
    {
        for a in &j.actors {
            let (name, reason) = a.state.name_and_reason();
            rows.push(vec![
                escape(&a.id.to_string()),
                escape(&a.class),
                escape(a.name.as_deref().unwrap_or("-")),
                escape(if a.namespace.is_empty() {
                    "-"
                } else {
                    &a.namespace
                }),
                state(name),
                escape(if a.node.is_empty() { "-" } else { &a.node }),
                a.restarts.to_string(),
                link("/jobs", &[], &j.job),
                escape(reason.unwrap_or("")),
            ]);
        }
    }
    format!(
        "<h1>Actors</h1>{}",
        table(
            &[
                "Actor",
                "Class",
                "Name",
                "Namespace",
                "State",
                "Node",
                "Restarts",
                "Job",
                "Reason"
            ],
            &rows
        )
    )
}

/// Every job's objects, counted by function and state.
pub(super) fn objects(seen: &Seen<'_>) -> String {
    let mut rows = Vec::new();
    for s in seen.summaries {
        for o in &s.objects {
            rows.push(vec![
                escape(&o.function),
                state(&o.state),
                format!("{}", o.count),
                format!("{}", o.bytes),
                link("/tasks", &[("job", &s.job)], &s.job),
            ]);
        }
    }
    format!(
        "<h1>Objects</h1><p>The objects each job's driver owns, as it last reported them.</p>{}",
        table(&["Function", "State", "Count", "Bytes", "Job"], &rows)
    )
}

/// The node table.
pub(super) fn nodes(seen: &Seen<'_>) -> String {
    let rows: Vec<Vec<String>> = seen
        .nodes
        .iter()
        .map(|n| {
            let name = match (n.alive, n.draining) {
                (true, true) => "DRAINING",
                (true, false) => "ALIVE",
                (false, _) => "DEAD",
            };
            vec![
                n.id.to_string(),
                escape(&n.name),
                escape(&n.addr),
                state(name),
                usage_line(n, escape),
                n.usage.workers.to_string(),
                format!(
                    "{:.1} MiB",
                    n.usage.store_bytes as f64 / f64::from(1u32 << 20)
                ),
                format!(
                    "{:.1} MiB",
                    n.usage.spilled_bytes as f64 / f64::from(1u32 << 20)
                ),
                pulled_line(&n.pulled),
            ]
        })
        .collect();
    format!(
        "<h1>Nodes</h1><p>{} of {} nodes alive</p>{}",
        seen.nodes.iter().filter(|n| n.alive).count(),
        seen.nodes.len(),
        table(
            &[
                "Node",
                "Name",
                "Address",
                "State",
                "Resources (used/total)",
                "Workers",
                "Store",
                "Spilled",
                "Pulled"
            ],
            &rows
        )
    )
}

/// Every job's placement groups.
pub(super) fn groups(seen: &Seen<'_>) -> String {
    let mut rows = Vec::new();
    for j in seen.jobs {
        for g in &j.groups {
            let name = match g.state {
                GroupState::Pending => "PENDING",
                GroupState::Created => "CREATED",
                GroupState::Removed => "REMOVED",
            };
            let bundles: Vec<String> = g
                .bundles
                .iter()
                .enumerate()
                .map(|(i, b)| match g.nodes.get(i) {
                    Some(node) => format!("{b} on {node}"),
                    None => b.clone(),
                })
                .collect();
            rows.push(vec![
                format!("{:x}", g.id),
                state(name),
                escape(&g.strategy),
                link("/jobs", &[], &j.job),
                escape(&bundles.join(", ")),
            ]);
        }
    }
    format!(
        "<h1>Placement groups</h1>{}",
        table(&["Group", "State", "Strategy", "Job", "Bundles"], &rows)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_escape_their_query_and_text() {
        assert_eq!(
            link("/tasks", &[("job", "a b&c"), ("state", "")], "<x>"),
            "<a href=\"/tasks?job=a%20b%26c\">&lt;x&gt;</a>"
        );
        let page = layout("/tasks", "<p>hi</p>");
        assert!(page.contains("<title>Tasks · Prism</title>"));
        assert!(page.contains("<a href=\"/tasks\" aria-current=\"page\">Tasks</a>"));
        assert!(page.contains("<main data-page=\"/tasks\"><p>hi</p></main>"));
    }
}
