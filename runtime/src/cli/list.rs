//! `prism list jobs|actors|placement-groups|nodes`: what the head knows, as a table or as JSON
//! records, filtered by column (`--filter STATE=ALIVE`) and cut to `--limit` rows; `prism list
//! tasks` and `prism summary tasks`: what the running drivers of this host tell of their tasks.

use clap::{Args, ValueEnum};
use prism_transport::quic;
use prism_transport::{ActorState, FromControl, GroupState, JobState, JobStatus, ToControl};
use prism_transport::{TaskPhase, TaskQuery};
use serde_json::Value;

use super::tasks::{DriverArgs, ask_drivers};
use super::{CliLink, ClientArgs, connect_cli, node_table};
use crate::api::state::{fold_counts, fold_objects};
use crate::daemon::ask;
use crate::dashboard::NodeJson;
use crate::proto::control::utc;

/// What `prism list` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum Listed {
    /// Every job the head knows: running, finished and failed (the latest 100 ended).
    Jobs,
    /// Every job's actors, dead ones too (without a head, or with `--pid`: those of the
    /// programs running on this host).
    Actors,
    /// Every job's placement groups, removed ones too.
    #[value(alias = "groups")]
    PlacementGroups,
    /// The cluster's nodes.
    Nodes,
    /// The tasks and actor calls of the cluster's jobs, as their drivers report them to the
    /// head (without a head, or with `--pid`: those of the drivers running on this host).
    Tasks,
    /// The objects the drivers running on this host own.
    Objects,
}

/// How `prism list` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum Format {
    /// Aligned columns.
    Table,
    /// The head's records, as a JSON array.
    Json,
}

#[derive(Debug, Clone, Args)]
pub(super) struct ListArgs {
    /// What to list.
    what: Listed,
    /// Only rows whose column KEY (as the table names it, any case) is VALUE (any case), as
    /// `--filter state=alive`; several must all hold.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_filter)]
    filter: Vec<(String, String)>,
    /// At most this many rows (the first ones).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// How to print.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    drivers: DriverArgs,
}

/// What `prism summary` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum Summarized {
    /// Tasks by function and state (every job's, from the head; without a head, or with
    /// `--pid`: the drivers' running on this host).
    Tasks,
    /// Objects by function: how many, their bytes, their states (from the head or the
    /// drivers, as for tasks).
    Objects,
    /// Actors by class and state (every job's, from the head; without a head, or with
    /// `--pid`: the drivers' running on this host).
    Actors,
}

#[derive(Debug, Clone, Args)]
pub(super) struct SummaryArgs {
    /// What to count.
    what: Summarized,
    /// How to print.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    drivers: DriverArgs,
}

fn parse_filter(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_uppercase(), value.to_lowercase())),
        _ => Err(format!("a filter is KEY=VALUE, not {text:?}")),
    }
}

/// Rows under named columns, each row beside the record it shows.
struct Table {
    columns: &'static [&'static str],
    rows: Vec<(Vec<String>, Value)>,
}

/// Asks the head (or, for tasks, the drivers) and prints what `args` asks for.
pub(super) async fn list(args: &ListArgs) -> Result<(), String> {
    let from_head_tasks = args.what == Listed::Tasks && use_head(&args.client, &args.drivers);
    let (mut table, matched) = match args.what {
        Listed::Tasks if from_head_tasks => head_tasks(args).await?,
        _ => (local_or_head(args).await?, None),
    };
    let mut keep = Vec::new();
    for (key, _) in &args.filter {
        let column = table.columns.iter().position(|c| c == key).ok_or_else(|| {
            format!(
                "no column {key} to filter on (the columns: {})",
                table.columns.join(", ")
            )
        })?;
        keep.push(column);
    }
    table.rows.retain(|(row, _)| {
        keep.iter()
            .zip(&args.filter)
            .all(|(&column, (_, value))| row[column].to_lowercase() == *value)
    });
    let total = matched.unwrap_or(table.rows.len());
    table.rows.truncate(args.limit);
    show(&table, args.format, total)
}

/// Whether to ask the head rather than the drivers of this host: a head is known and no
/// driver is named.
pub(super) fn use_head(client: &ClientArgs, drivers: &DriverArgs) -> bool {
    drivers.pid.is_none() && crate::session::head_known(client.address.as_deref())
}

/// How many tasks to fetch from the head when a filter is applied here (the head filters
/// on state, function and job itself).
const HEAD_TASKS: u32 = 20_000;

/// The tasks the head's board keeps that `args` asks for, and how many match (when the
/// head applied every filter).
async fn head_tasks(args: &ListArgs) -> Result<(Table, Option<usize>), String> {
    let mut query = TaskQuery::default();
    let mut all_at_head = true;
    for (key, value) in &args.filter {
        match key.as_str() {
            "STATE" => {
                let state = TaskPhase::from_name(value).ok_or_else(|| {
                    format!("no task state {value} (the states: {})", TaskPhase::names())
                })?;
                query.state = Some(state);
            }
            "FUNCTION" => query.function = Some(value.clone()),
            "JOB" => query.job = Some(value.clone()),
            _ => all_at_head = false,
        }
    }
    query.limit = match all_at_head {
        true => u32::try_from(args.limit).unwrap_or(u32::MAX),
        false => HEAD_TASKS,
    };
    let (tasks, matched) = match head_answer(&args.client, ToControl::Tasks(query)).await? {
        FromControl::Tasks { tasks, matched } => (tasks, matched),
        other => return Err(format!("unexpected answer to a list of tasks: {other:?}")),
    };
    let records = tasks.iter().map(record).collect();
    let table = records_table(records, &TASK_COLUMNS_HEAD, &TASK_FIELDS_HEAD);
    Ok((table, all_at_head.then_some(matched as usize)))
}

/// Asks the head `request` and closes the connection.
pub(super) async fn head_answer(
    client: &ClientArgs,
    request: ToControl,
) -> Result<FromControl, String> {
    let CliLink {
        endpoint,
        connection,
        ..
    } = connect_cli(client, "list").await?;
    let answer = ask(&connection, &request).await.map_err(|e| e.to_string());
    connection.close(quic::codes::DONE, b"asked");
    endpoint.wait_idle().await;
    match answer? {
        FromControl::Error(e) => Err(format!("the head refused: {e}")),
        answer => Ok(answer),
    }
}

/// What the drivers of this host or the head know of `args.what`.
async fn local_or_head(args: &ListArgs) -> Result<Table, String> {
    Ok(match args.what {
        Listed::Tasks => tasks(&ask_drivers(&args.drivers, "tasks")?),
        Listed::Objects => objects(&ask_drivers(&args.drivers, "objects")?),
        // Without a head (a program that runs its own cluster), or for one driver: the
        // drivers running here answer for their actors.
        Listed::Actors
            if args.drivers.pid.is_some()
                || !crate::session::head_known(args.client.address.as_deref()) =>
        {
            driver_actors(&ask_drivers(&args.drivers, "actors")?)
        }
        _ => from_head(args).await?,
    })
}

/// What the head knows of `args.what`.
async fn from_head(args: &ListArgs) -> Result<Table, String> {
    let CliLink {
        endpoint,
        connection,
        ..
    } = connect_cli(&args.client, "list").await?;
    let table = match args.what {
        Listed::Nodes => node_table(&connection).await.map(nodes),
        what => match ask(&connection, &ToControl::Jobs).await {
            Ok(FromControl::Jobs(jobs)) => Ok(match what {
                Listed::Jobs => jobs_table(&jobs),
                Listed::Actors => actors(&jobs),
                _ => groups(&jobs),
            }),
            Ok(other) => Err(format!("unexpected answer to a list of jobs: {other:?}")),
            Err(e) => Err(e.to_string()),
        },
    };
    connection.close(quic::codes::DONE, b"list done");
    endpoint.wait_idle().await;
    table
}

/// `prism summary tasks|objects|actors`: counted by function (or class) and state, every
/// job's (from the head) or each driver's of this host.
pub(super) async fn summary(args: &SummaryArgs) -> Result<(), String> {
    let head = use_head(&args.client, &args.drivers);
    let columns: &'static [&'static str] = match (args.what, head) {
        (Summarized::Tasks, false) => &["FUNCTION", "TYPE", "TOTAL", "STATES", "DRIVER"],
        (Summarized::Tasks, true) => &["FUNCTION", "TYPE", "TOTAL", "STATES", "JOB"],
        (Summarized::Objects, false) => &["FUNCTION", "COUNT", "BYTES", "STATES", "DRIVER"],
        (Summarized::Objects, true) => &["FUNCTION", "COUNT", "BYTES", "STATES", "JOB"],
        (Summarized::Actors, false) => &["CLASS", "TOTAL", "STATES", "DRIVER"],
        (Summarized::Actors, true) => &["CLASS", "TOTAL", "STATES", "JOB"],
    };
    // Each answer beside who gave it: a job (from the head) or a driver's pid.
    let answers: Vec<(Value, Value)> = if head && args.what == Summarized::Actors {
        let jobs = match head_answer(&args.client, ToControl::Jobs).await? {
            FromControl::Jobs(jobs) => jobs,
            other => return Err(format!("unexpected answer to a list of jobs: {other:?}")),
        };
        let answers = jobs.into_iter().map(|job| {
            let actors = job
                .actors
                .iter()
                .map(|a| (a.class.clone(), a.state.name_and_reason().0));
            (Value::from(job.job), fold_actors(actors))
        });
        answers.collect()
    } else if head {
        let summaries = match head_answer(&args.client, ToControl::Summaries).await? {
            FromControl::Summaries(summaries) => summaries,
            other => return Err(format!("unexpected answer to a summary: {other:?}")),
        };
        let answers = summaries.into_iter().map(|job| {
            let records = match args.what {
                Summarized::Tasks => record(&fold_counts(job.tasks)),
                _ => record(&fold_objects(job.objects)),
            };
            (Value::from(job.job), records)
        });
        answers.collect()
    } else {
        let request = match args.what {
            Summarized::Tasks => "summary tasks",
            Summarized::Objects => "summary objects",
            Summarized::Actors => "actors",
        };
        let answers = ask_drivers(&args.drivers, request)?.into_iter();
        let answers = answers.map(|(pid, answer)| {
            let answer = match args.what {
                Summarized::Actors => {
                    let actors = answer.as_array().into_iter().flatten();
                    fold_actors(
                        actors.map(|a| (text(&a["class"]), a["state"].as_str().unwrap_or("?"))),
                    )
                }
                _ => answer,
            };
            (Value::from(pid), answer)
        });
        answers.collect()
    };
    let by = if head { "job" } else { "driver" };
    let mut rows = Vec::new();
    for (who, summaries) in &answers {
        for summary in summaries.as_array().into_iter().flatten() {
            let states = summary["states"].as_object().cloned().unwrap_or_default();
            let total: u64 = states.values().filter_map(Value::as_u64).sum();
            let listed: Vec<String> = states.iter().map(|(s, n)| format!("{s} {n}")).collect();
            let mut shown = summary.clone();
            shown[by] = who.clone();
            let row = match args.what {
                Summarized::Tasks => vec![
                    text(&summary["function"]),
                    text(&summary["type"]),
                    total.to_string(),
                ],
                Summarized::Objects => vec![
                    text(&summary["function"]),
                    text(&summary["count"]),
                    text(&summary["bytes"]),
                ],
                Summarized::Actors => vec![text(&summary["class"]), total.to_string()],
            };
            let row = row
                .into_iter()
                .chain([listed.join(", "), text(who)])
                .collect();
            rows.push((row, shown));
        }
    }
    let table = Table { columns, rows };
    let total = table.rows.len();
    show(&table, args.format, total)
}

/// Actors (class and state name) counted by class, as summary records:
/// `[{"class": C, "states": {STATE: n}}]`.
fn fold_actors<'a>(actors: impl Iterator<Item = (String, &'a str)>) -> Value {
    let mut by_class: std::collections::BTreeMap<String, serde_json::Map<String, Value>> =
        Default::default();
    for (class, state) in actors {
        let states = by_class.entry(class).or_default();
        let n = states.get(state).and_then(Value::as_u64).unwrap_or(0);
        states.insert(state.to_string(), Value::from(n + 1));
    }
    let records = by_class
        .into_iter()
        .map(|(class, states)| serde_json::json!({ "class": class, "states": states }));
    Value::Array(records.collect())
}

/// What `prism get` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum Got {
    /// A task or actor call, with its state changes and runs.
    Task,
}

#[derive(Debug, Clone, Args)]
pub(super) struct GetArgs {
    /// What to show.
    what: Got,
    /// Its id, as `prism list tasks` prints it.
    id: String,
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    drivers: DriverArgs,
}

/// `prism get task ID`: the task's whole record, as JSON (from the head, else from the
/// drivers of this host; the same id in several jobs: each).
pub(super) async fn get(args: &GetArgs) -> Result<(), String> {
    let Got::Task = args.what;
    let id: prism_graph::TaskId = args.id.parse().map_err(|e| format!("{e}"))?;
    let found: Vec<Value> = if use_head(&args.client, &args.drivers) {
        let query = TaskQuery {
            task: Some(id),
            ..TaskQuery::default()
        };
        match head_answer(&args.client, ToControl::Tasks(query)).await? {
            FromControl::Tasks { tasks, .. } => tasks.iter().map(record).collect(),
            other => return Err(format!("unexpected answer to a task: {other:?}")),
        }
    } else {
        let answers = ask_drivers(&args.drivers, &format!("task {id}"))?;
        let found = answers.into_iter().filter_map(|(pid, task)| {
            let mut shown = task.is_object().then_some(task)?;
            shown["driver"] = Value::from(pid);
            Some(shown)
        });
        found.collect()
    };
    let shown = match found.len() {
        0 => {
            return Err(format!(
                "no task {} in the task events (the newest ones are kept)",
                args.id
            ));
        }
        1 => serde_json::to_string_pretty(&found[0]),
        _ => serde_json::to_string_pretty(&found),
    };
    println!("{}", shown.map_err(|e| format!("cannot write JSON: {e}"))?);
    Ok(())
}

/// A task's columns and fields, as the drivers list them and as the head does.
const TASK_COLUMNS: [&str; 8] = [
    "TASK_ID", "FUNCTION", "STATE", "TYPE", "ATTEMPT", "NODE", "DRIVER", "ERROR",
];
const TASK_FIELDS: [&str; 8] = [
    "task_id", "function", "state", "type", "attempt", "node", "driver", "error",
];
const TASK_COLUMNS_HEAD: [&str; 8] = [
    "TASK_ID", "FUNCTION", "STATE", "TYPE", "ATTEMPT", "NODE", "JOB", "ERROR",
];
const TASK_FIELDS_HEAD: [&str; 8] = [
    "task_id", "function", "state", "type", "attempt", "node", "job", "error",
];

/// The drivers' tasks, oldest first within each driver.
fn tasks(answers: &[(u32, Value)]) -> Table {
    records_table(driver_records(answers), &TASK_COLUMNS, &TASK_FIELDS)
}

/// The drivers' objects, by id within each driver.
fn objects(answers: &[(u32, Value)]) -> Table {
    let columns = &[
        "OBJECT_ID",
        "FUNCTION",
        "STATE",
        "SIZE_BYTES",
        "REFERENCES",
        "DRIVER",
        "ERROR",
    ];
    let fields = [
        "object_id",
        "function",
        "state",
        "size_bytes",
        "references",
        "driver",
        "error",
    ];
    records_table(driver_records(answers), columns, &fields)
}

/// The columns of an actors' table, whose last but one names where each actor's record came
/// from (`by`).
const fn actor_columns(by: &'static str) -> [&'static str; 9] {
    [
        "ACTOR",
        "CLASS",
        "NAME",
        "NAMESPACE",
        "STATE",
        "NODE",
        "RESTARTS",
        by,
        "REASON",
    ]
}

/// The actors' columns as the drivers answer them, and as the head's jobs do.
const ACTOR_COLUMNS_BY_DRIVER: [&str; 9] = actor_columns("DRIVER");
const ACTOR_COLUMNS_BY_JOB: [&str; 9] = actor_columns("JOB");

/// The drivers' actors, by id within each driver.
fn driver_actors(answers: &[(u32, Value)]) -> Table {
    let columns = &ACTOR_COLUMNS_BY_DRIVER;
    let fields = [
        "actor_id",
        "class",
        "name",
        "namespace",
        "state",
        "node",
        "restarts",
        "driver",
        "reason",
    ];
    records_table(driver_records(answers), columns, &fields)
}

/// The records the drivers answered, each with its driver's pid (`driver`).
fn driver_records(answers: &[(u32, Value)]) -> Vec<Value> {
    let records = answers.iter().flat_map(|(pid, records)| {
        records.as_array().into_iter().flatten().map(move |record| {
            let mut shown = record.clone();
            shown["driver"] = Value::from(*pid);
            shown
        })
    });
    records.collect()
}

/// `records`, a row each under `columns`, each cell the record's field of the same place in
/// `fields` (`error`: its first line).
fn records_table(records: Vec<Value>, columns: &'static [&'static str], fields: &[&str]) -> Table {
    let rows = records.into_iter().map(|record| {
        let cell = |field: &str| match field {
            "error" => text(&record["error"])
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
            _ => text(&record[field]),
        };
        let row = fields.iter().map(|f| cell(f)).collect();
        (row, record)
    });
    Table {
        columns,
        rows: rows.collect(),
    }
}

/// A JSON value as a table cell: a string as it is, nothing as `-`.
fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(s) if s.is_empty() => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints `table` (`total`: its rows before `--limit`).
fn show(table: &Table, format: Format, total: usize) -> Result<(), String> {
    match format {
        Format::Json => {
            let records: Vec<&Value> = table.rows.iter().map(|(_, record)| record).collect();
            let text = serde_json::to_string_pretty(&records)
                .map_err(|e| format!("cannot write JSON: {e}"))?;
            println!("{text}");
        }
        Format::Table => {
            print!("{}", render(table));
            if total > table.rows.len() {
                println!("({} of {total} rows shown: --limit)", table.rows.len());
            }
        }
    }
    Ok(())
}

/// The table as aligned text (the last column unpadded).
fn render(table: &Table) -> String {
    let mut widths: Vec<usize> = table.columns.iter().map(|c| c.len()).collect();
    for (row, _) in &table.rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            match i == last {
                true => out.push_str(cell),
                false => out.push_str(&format!("{cell:<w$}  ", w = widths[i])),
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(table.columns.to_vec());
    for (row, _) in &table.rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn record<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn jobs_table(jobs: &[JobStatus]) -> Table {
    let columns = &[
        "JOB", "STATE", "DRIVER", "PID", "STARTED", "ENDED", "ACTORS", "GROUPS", "ENTRY", "REASON",
    ];
    let rows = jobs.iter().map(|job| {
        let live = job.actors.iter();
        let live = live.filter(|a| !matches!(a.state, ActorState::Dead(_)));
        let placed = job.groups.iter().filter(|g| g.state != GroupState::Removed);
        let (state, reason) = match &job.state {
            JobState::Running => ("RUNNING", ""),
            JobState::Finished => ("FINISHED", ""),
            JobState::Failed(reason) => ("FAILED", reason.as_str()),
        };
        let row = vec![
            job.job.clone(),
            state.to_string(),
            job.info.driver.clone(),
            job.info.pid.to_string(),
            utc(job.info.started_ms),
            if job.ended_ms == 0 {
                "-".to_string()
            } else {
                utc(job.ended_ms)
            },
            format!("{}/{}", live.count(), job.actors.len()),
            format!("{}/{}", placed.count(), job.groups.len()),
            job.info.entry.clone(),
            reason.to_string(),
        ];
        (row, record(job))
    });
    Table {
        columns,
        rows: rows.collect(),
    }
}

fn actors(jobs: &[JobStatus]) -> Table {
    let columns = &ACTOR_COLUMNS_BY_JOB;
    let rows = jobs.iter().flat_map(|job| {
        job.actors.iter().map(|actor| {
            let (state, reason) = actor.state.name_and_reason();
            let reason = reason.unwrap_or("");
            let row = vec![
                actor.id.to_string(),
                actor.class.clone(),
                actor.name.clone().unwrap_or_else(|| "-".into()),
                or_dash(&actor.namespace),
                state.to_string(),
                or_dash(&actor.node),
                actor.restarts.to_string(),
                job.job.clone(),
                reason.to_string(),
            ];
            let mut shown = record(actor);
            shown["job"] = Value::String(job.job.clone());
            (row, shown)
        })
    });
    Table {
        columns,
        rows: rows.collect(),
    }
}

fn groups(jobs: &[JobStatus]) -> Table {
    let columns = &["GROUP", "STATE", "STRATEGY", "JOB", "BUNDLES"];
    let rows = jobs.iter().flat_map(|job| {
        job.groups.iter().map(|group| {
            let state = match group.state {
                GroupState::Pending => "PENDING",
                GroupState::Created => "CREATED",
                GroupState::Removed => "REMOVED",
            };
            let bundles = group.bundles.iter().enumerate();
            let bundles = bundles.map(|(i, b)| match group.nodes.get(i) {
                Some(node) => format!("{b} on {node}"),
                None => b.clone(),
            });
            let row = vec![
                format!("{:x}", group.id),
                state.to_string(),
                group.strategy.clone(),
                job.job.clone(),
                bundles.collect::<Vec<_>>().join(", "),
            ];
            let mut shown = record(group);
            shown["job"] = Value::String(job.job.clone());
            (row, shown)
        })
    });
    Table {
        columns,
        rows: rows.collect(),
    }
}

fn nodes(nodes: Vec<prism_transport::NodeStatus>) -> Table {
    let columns = &["NODE", "NAME", "ADDRESS", "STATE", "RESOURCES", "PULLED"];
    let rows = nodes.into_iter().map(|n| {
        let state = match (n.alive, n.draining) {
            (true, true) => "DRAINING",
            (true, false) => "ALIVE",
            (false, _) => "DEAD",
        };
        let row = vec![
            n.id.to_string(),
            n.name.clone(),
            n.addr.clone(),
            state.to_string(),
            crate::proto::control::usage_line(&n, str::to_string),
            crate::proto::control::pulled_line(&n.pulled),
        ];
        (row, record(&NodeJson::from(n)))
    });
    Table {
        columns,
        rows: rows.collect(),
    }
}

fn or_dash(text: &str) -> String {
    if text.is_empty() { "-" } else { text }.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns() {
        let table = Table {
            columns: &["A", "LONGER", "LAST"],
            rows: vec![
                (vec!["xyz".into(), "1".into(), "tail".into()], Value::Null),
                (vec!["w".into(), "22".into(), "".into()], Value::Null),
            ],
        };
        assert_eq!(
            render(&table),
            "A    LONGER  LAST\nxyz  1       tail\nw    22\n"
        );
        assert!(parse_filter("state=Alive") == Ok(("STATE".into(), "alive".into())));
        assert!(parse_filter("=x").is_err() && parse_filter("state").is_err());
    }
}
