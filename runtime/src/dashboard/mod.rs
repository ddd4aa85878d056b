//! The head's dashboard: a small HTTP server (axum) over the control store.
//!
//! - `GET /` a page with the node table;
//! - `GET /api/nodes` the node table as JSON;
//! - `GET /api/jobs` every job the head knows, with its actors and placement groups, as JSON;
//! - `GET /metrics` Prometheus text: nodes alive and dead, resources total and available.
//!
//! Every route requires the cluster's join token as `Authorization: Bearer <token>`; a request
//! without it gets 401 and learns nothing. `/metrics` also takes the head's read-only metrics
//! token (`metrics-token` in its session directory), so a scrape configuration holds nothing
//! that could join the cluster. The server listens on loopback; the head refuses any other
//! address unless told `--insecure-dashboard`, since HTTP carries the token in the clear.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use prism_transport::NodeStatus;

use crate::proto::control::ControlStore;

/// What the dashboard's handlers share.
#[derive(Clone)]
struct Shared {
    control: Arc<parking_lot::Mutex<ControlStore>>,
    token: Arc<str>,
    metrics_token: Arc<str>,
}

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
        .route("/", get(page))
        .route("/api/nodes", get(nodes_json))
        .route("/api/jobs", get(jobs_json))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(shared.clone(), authorize))
        .with_state(shared);
    axum::serve(listener, app).await
}

/// Lets a request through only with the cluster's token (compared in constant time).
async fn authorize(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let offered = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let metrics = request.uri().path() == "/metrics"
        && constant_time_eq(offered.as_bytes(), shared.metrics_token.as_bytes());
    if !metrics && !constant_time_eq(offered.as_bytes(), shared.token.as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "the cluster's join token is required (Authorization: Bearer <token>)\n",
        )
            .into_response();
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn snapshot(shared: &Shared) -> Vec<NodeStatus> {
    shared.control.lock().status(Instant::now())
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
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_html(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn page(State(shared): State<Shared>) -> Html<String> {
    let nodes = snapshot(&shared);
    let mut rows = String::new();
    for n in &nodes {
        let resources = crate::proto::control::usage_line(n, escape_html);
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            n.id,
            escape_html(&n.name),
            escape_html(&n.addr),
            if n.alive { "alive" } else { "dead" },
            resources,
            crate::proto::control::pulled_line(&n.pulled)
        ));
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Prism cluster</title></head>\
         <body><h1>Prism cluster</h1><p>{} of {} nodes alive</p>\
         <table border=\"1\"><tr><th>node</th><th>name</th><th>address</th><th>state</th>\
         <th>resources (used/total)</th><th>pulled</th></tr>\n{rows}</table></body></html>\n",
        nodes.iter().filter(|n| n.alive).count(),
        nodes.len()
    ))
}
