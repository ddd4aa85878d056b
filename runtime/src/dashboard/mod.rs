//! The head's dashboard: a small HTTP server (axum) over the control store.
//!
//! Pages (HTML, see [`pages`]): `/` an overview, `/jobs`, `/tasks` (filtered by `state`,
//! `function`, `job`; `limit`), `/task?job=J&id=ID`, `/actors` (`job`), `/objects`, `/nodes`,
//! `/groups`. JSON: `GET /api/nodes` the node table; `/api/jobs` every job with its actors
//! and placement groups; `/api/tasks` the task records the drivers reported (the same
//! filters; `id` for one task); `/api/summary` every job's counts of tasks and objects by
//! function and state, and its histograms. `GET /metrics`: Prometheus text (nodes, resources,
//! pulls, tasks by job, function and state, scheduling and run-time histograms, objects).
//!
//! Every route requires the cluster's join token: as `Authorization: Bearer <token>`, or
//! (for a browser) in the `prism_token` cookie that `?token=<token>` on any page sets
//! (HttpOnly, SameSite=Strict, for 8 hours) before sending the browser on without it. A request without it
//! gets 401 and learns nothing. `/metrics` also takes the head's read-only metrics token
//! (`metrics-token` in its session directory), so a scrape configuration holds nothing that
//! could join the cluster. The server listens on loopback; the head refuses any other address
//! unless told `--insecure-dashboard`, since HTTP carries the token in the clear.

mod pages;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use prism_transport::{
    FunctionTimes, HISTOGRAM_BOUNDS_US, Histogram, NodeStatus, TaskPhase, TaskQuery,
};

use crate::proto::control::ControlStore;

/// What the dashboard's handlers share.
#[derive(Clone)]
struct Shared {
    control: Arc<parking_lot::Mutex<ControlStore>>,
    token: Arc<str>,
    metrics_token: Arc<str>,
}

/// The cookie a browser holds the token in, and for how long (a working day: the browser
/// keeps it across restarts, then asks for the token again).
const COOKIE: &str = "prism_token";
const COOKIE_AGE_S: u32 = 8 * 3600;

/// How many tasks a page or `/api/tasks` shows unless told (`limit`).
const TASKS_SHOWN: u32 = 100;

/// Serves the dashboard on `listener` until the process ends: every route for the join
/// `token`, `/metrics` for the `metrics_token` too.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    control: Arc<parking_lot::Mutex<ControlStore>>,
    token: String,
    metrics_token: String,
) -> std::io::Result<()> {
    let shared = Shared {
        control,
        token: token.into(),
        metrics_token: metrics_token.into(),
    };
    let app = Router::new()
        .route("/", get(|s: State<Shared>| page(s, "/", pages::overview)))
        .route(
            "/jobs",
            get(|s: State<Shared>| page(s, "/jobs", pages::jobs)),
        )
        .route("/tasks", get(tasks_page))
        .route("/task", get(task_page))
        .route("/actors", get(actors_page))
        .route(
            "/objects",
            get(|s: State<Shared>| page(s, "/objects", pages::objects)),
        )
        .route(
            "/nodes",
            get(|s: State<Shared>| page(s, "/nodes", pages::nodes)),
        )
        .route(
            "/groups",
            get(|s: State<Shared>| page(s, "/groups", pages::groups)),
        )
        .route("/api/nodes", get(nodes_json))
        .route("/api/jobs", get(jobs_json))
        .route("/api/tasks", get(tasks_json))
        .route("/api/summary", get(summary_json))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(shared.clone(), authorize))
        .with_state(shared);
    axum::serve(listener, app).await
}

/// Lets a request through only with the cluster's token (compared in constant time), from
/// the `Authorization` header or the cookie; `?token=` with the right token sets the cookie
/// and sends the browser on to the same page without it.
async fn authorize(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='));
    let is_token = |offered: &str| constant_time_eq(offered.as_bytes(), shared.token.as_bytes());
    let path = request.uri().path().to_string();
    if let Some(offered) = query_param(request.uri().query(), "token") {
        if !is_token(&offered) {
            return unauthorized();
        }
        let cookie = format!(
            "{COOKIE}={offered}; Path=/; Max-Age={COOKIE_AGE_S}; HttpOnly; SameSite=Strict"
        );
        let rest = request.uri().query().map(without_token).unwrap_or_default();
        let to = match rest.is_empty() {
            true => path,
            false => format!("{path}?{rest}"),
        };
        return ([(header::SET_COOKIE, cookie)], Redirect::to(&to)).into_response();
    }
    let offered = bearer.or(cookie).unwrap_or("");
    let metrics =
        path == "/metrics" && constant_time_eq(offered.as_bytes(), shared.metrics_token.as_bytes());
    if !metrics && !is_token(offered) {
        return unauthorized();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
             connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "the cluster's join token is required (Authorization: Bearer <token>, or ?token=<token> \
         in a browser)\n",
    )
        .into_response()
}

/// The value of `name` in a URL's `query`, decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let pairs = serde_urlencoded::from_str::<Vec<(String, String)>>(query?).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// `query` without its `token`.
fn without_token(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| !pair.starts_with("token=") && *pair != "token")
        .collect::<Vec<_>>()
        .join("&")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn snapshot(shared: &Shared) -> Vec<NodeStatus> {
    shared.control.lock().status(Instant::now())
}

/// What the pages show: the node table, the jobs and the drivers' summaries, read at once.
struct Seen {
    nodes: Vec<NodeStatus>,
    jobs: Vec<prism_transport::JobStatus>,
    summaries: Vec<prism_transport::JobSummary>,
}

impl Seen {
    fn read(shared: &Shared) -> Seen {
        let mut control = shared.control.lock();
        Seen {
            nodes: control.status(Instant::now()),
            jobs: control.jobs(),
            summaries: control.summaries(),
        }
    }

    fn view(&self) -> pages::Seen<'_> {
        pages::Seen {
            nodes: &self.nodes,
            jobs: &self.jobs,
            summaries: &self.summaries,
        }
    }
}

/// The query of `/tasks`, `/task` and `/api/tasks`.
#[derive(Debug, Default, serde::Deserialize)]
struct TaskParams {
    job: Option<String>,
    state: Option<String>,
    function: Option<String>,
    id: Option<String>,
    limit: Option<u32>,
}

/// A query the dashboard cannot answer (400), and why.
#[derive(Debug, thiserror::Error)]
enum BadQuery {
    #[error("no task state {0} (the states: {states})", states = TaskPhase::names())]
    State(String),
    #[error(transparent)]
    Id(#[from] prism_graph::ParseTaskIdError),
}

impl IntoResponse for BadQuery {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, format!("{self}\n")).into_response()
    }
}

impl TaskParams {
    /// The board query these ask for; a bad state or id is named.
    fn query(&self) -> Result<TaskQuery, BadQuery> {
        let state = match self.state.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(name) => {
                Some(TaskPhase::from_name(name).ok_or_else(|| BadQuery::State(name.into()))?)
            }
        };
        let task = match self.id.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(id) => Some(id.parse::<prism_graph::TaskId>()?),
        };
        let given = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Ok(TaskQuery {
            job: given(&self.job),
            state,
            function: given(&self.function),
            task,
            limit: self.limit.unwrap_or(TASKS_SHOWN),
        })
    }
}

/// The page at `path`, its content by `render`.
async fn page(
    State(shared): State<Shared>,
    path: &'static str,
    render: fn(&pages::Seen<'_>) -> String,
) -> Html<String> {
    let seen = Seen::read(&shared);
    Html(pages::layout(path, &render(&seen.view())))
}

async fn tasks_page(
    State(shared): State<Shared>,
    Query(params): Query<TaskParams>,
) -> Result<Html<String>, BadQuery> {
    let query = params.query()?;
    let seen = Seen::read(&shared);
    let (tasks, matched) = shared.control.lock().tasks(&query);
    let main = pages::tasks(&seen.view(), &query, &tasks, matched);
    Ok(Html(pages::layout("/tasks", &main)))
}

async fn task_page(
    State(shared): State<Shared>,
    Query(params): Query<TaskParams>,
) -> Result<Html<String>, BadQuery> {
    let query = params.query()?;
    let (found, _) = shared.control.lock().tasks(&query);
    let found = found.first().filter(|_| query.task.is_some());
    Ok(Html(pages::layout("/task", &pages::task(found))))
}

async fn actors_page(
    State(shared): State<Shared>,
    Query(params): Query<TaskParams>,
) -> Html<String> {
    let seen = Seen::read(&shared);
    let main = pages::actors(
        &seen.view(),
        params.job.as_deref().filter(|j| !j.is_empty()),
    );
    Html(pages::layout("/actors", &main))
}

/// The task records the query asks for, as `prism list tasks --format json` prints them.
async fn tasks_json(
    State(shared): State<Shared>,
    Query(params): Query<TaskParams>,
) -> Result<impl IntoResponse, BadQuery> {
    let query = params.query()?;
    let (tasks, matched) = shared.control.lock().tasks(&query);
    Ok(axum::Json(
        serde_json::json!({ "matched": matched, "tasks": tasks }),
    ))
}

/// Every job's counts of tasks and objects and its histograms.
async fn summary_json(State(shared): State<Shared>) -> impl IntoResponse {
    axum::Json(shared.control.lock().summaries())
}

/// One node as the JSON views show it (`/api/nodes`, `prism list nodes --format json`).
#[derive(serde::Serialize)]
pub(crate) struct NodeJson {
    id: u32,
    name: String,
    address: String,
    alive: bool,
    draining: bool,
    last_seen_ms: u64,
    total: std::collections::BTreeMap<String, f64>,
    available: std::collections::BTreeMap<String, f64>,
    pulled_objects: u64,
    pulled_bytes: u64,
    workers: u32,
    store_bytes: u64,
    spilled_bytes: u64,
    relayed_frames: u64,
}

impl From<NodeStatus> for NodeJson {
    fn from(n: NodeStatus) -> Self {
        NodeJson {
            id: n.id,
            name: n.name,
            address: n.addr,
            alive: n.alive,
            draining: n.draining,
            last_seen_ms: n.last_seen_ms,
            total: n.total.into_iter().collect(),
            available: n.available.into_iter().collect(),
            pulled_objects: n.pulled.objects,
            pulled_bytes: n.pulled.bytes,
            workers: n.usage.workers,
            store_bytes: n.usage.store_bytes,
            spilled_bytes: n.usage.spilled_bytes,
            relayed_frames: n.usage.relayed,
        }
    }
}

async fn nodes_json(State(shared): State<Shared>) -> impl IntoResponse {
    let nodes: Vec<NodeJson> = snapshot(&shared).into_iter().map(NodeJson::from).collect();
    axum::Json(nodes)
}

/// Every job the head knows, with its actors and placement groups (as `prism list jobs
/// --format json` prints them).
async fn jobs_json(State(shared): State<Shared>) -> impl IntoResponse {
    axum::Json(shared.control.lock().jobs())
}

async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
    let nodes = snapshot(&shared);
    let alive = nodes.iter().filter(|n| n.alive).count();
    let mut out = String::new();
    out.push_str("# HELP prism_nodes Nodes known to the control store, by state.\n");
    out.push_str("# TYPE prism_nodes gauge\n");
    out.push_str(&format!("prism_nodes{{state=\"alive\"}} {alive}\n"));
    out.push_str(&format!(
        "prism_nodes{{state=\"dead\"}} {}\n",
        nodes.len() - alive
    ));
    for (metric, help) in [
        ("prism_resource_total", "A live node's resources."),
        (
            "prism_resource_available",
            "What is free of a live node's resources.",
        ),
    ] {
        out.push_str(&format!("# HELP {metric} {help}\n# TYPE {metric} gauge\n"));
        for n in nodes.iter().filter(|n| n.alive) {
            let values = if metric.ends_with("total") {
                &n.total
            } else {
                &n.available
            };
            for (resource, amount) in values {
                out.push_str(&format!(
                    "{metric}{{node=\"{}\",resource=\"{}\"}} {amount}\n",
                    escape_label(&n.name),
                    escape_label(resource)
                ));
            }
        }
    }
    for (metric, help, value) in [
        (
            "prism_objects_pulled_total",
            "Objects a node pulled from other hosts.",
            (|n: &NodeStatus| n.pulled.objects) as fn(&NodeStatus) -> u64,
        ),
        (
            "prism_bytes_pulled_total",
            "Bytes of objects a node pulled from other hosts.",
            |n: &NodeStatus| n.pulled.bytes,
        ),
    ] {
        out.push_str(&format!(
            "# HELP {metric} {help}\n# TYPE {metric} counter\n"
        ));
        for n in &nodes {
            out.push_str(&format!(
                "{metric}{{node=\"{}\"}} {}\n",
                escape_label(&n.name),
                value(n)
            ));
        }
    }
    for (metric, help, value) in [
        (
            "prism_workers",
            "Worker processes of the jobs a node hosts.",
            (|n: &NodeStatus| n.usage.workers.into()) as fn(&NodeStatus) -> u64,
        ),
        (
            "prism_object_store_bytes",
            "Bytes of objects in a node's shared-memory stores.",
            |n: &NodeStatus| n.usage.store_bytes,
        ),
        (
            "prism_object_spilled_bytes",
            "Bytes of objects spilled to a node's disk.",
            |n: &NodeStatus| n.usage.spilled_bytes,
        ),
    ] {
        out.push_str(&format!("# HELP {metric} {help}\n# TYPE {metric} gauge\n"));
        for n in nodes.iter().filter(|n| n.alive) {
            let node = escape_label(&n.name);
            out.push_str(&format!("{metric}{{node=\"{node}\"}} {}\n", value(n)));
        }
    }
    job_metrics(&mut out, &shared.control.lock().summaries());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

/// The jobs' task counts, histograms and objects, as their drivers last reported them.
fn job_metrics(out: &mut String, summaries: &[prism_transport::JobSummary]) {
    use std::fmt::Write;
    let labels = |job: &str, function: &str| {
        format!(
            "job=\"{}\",function=\"{}\"",
            escape_label(job),
            escape_label(function)
        )
    };
    out.push_str("# HELP prism_tasks A job's tasks by function and state.\n");
    out.push_str("# TYPE prism_tasks gauge\n");
    for s in summaries {
        for c in &s.tasks {
            let labels = labels(&s.job, &c.function);
            let _ = writeln!(
                out,
                "prism_tasks{{{labels},state=\"{}\"}} {}",
                c.state, c.count
            );
        }
    }
    for (metric, help, pick) in [
        (
            "prism_task_schedule_seconds",
            "From a task ready to run to sent to a worker.",
            (|t: &FunctionTimes| &t.schedule) as fn(&FunctionTimes) -> &Histogram,
        ),
        (
            "prism_task_run_seconds",
            "A task's run in its function, as its worker measured it.",
            |t: &FunctionTimes| &t.run,
        ),
    ] {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} histogram");
        for s in summaries {
            for times in &s.times {
                let histogram = pick(times);
                let labels = labels(&s.job, &times.function);
                let mut below = 0;
                for (i, bound) in HISTOGRAM_BOUNDS_US.iter().enumerate() {
                    below += histogram.buckets.get(i).copied().unwrap_or(0);
                    let le = *bound as f64 / 1e6;
                    let _ = writeln!(out, "{metric}_bucket{{{labels},le=\"{le}\"}} {below}");
                }
                let count = histogram.count();
                let _ = writeln!(out, "{metric}_bucket{{{labels},le=\"+Inf\"}} {count}");
                let sum = histogram.sum_us as f64 / 1e6;
                let _ = writeln!(out, "{metric}_sum{{{labels}}} {sum}");
                let _ = writeln!(out, "{metric}_count{{{labels}}} {count}");
            }
        }
    }
    for (metric, help, bytes) in [
        (
            "prism_objects",
            "A job's objects by function and state.",
            false,
        ),
        (
            "prism_object_bytes",
            "The bytes of a job's objects by function and state.",
            true,
        ),
    ] {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
        for s in summaries {
            for o in &s.objects {
                let labels = labels(&s.job, &o.function);
                let value = if bytes { o.bytes } else { o.count };
                let state = escape_label(&o.state);
                let _ = writeln!(out, "{metric}{{{labels},state=\"{state}\"}} {value}");
            }
        }
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
