//! `prism list jobs|actors|groups`: the head's directory of jobs, their actors and placement
//! groups, as a table or (`--json`) as the head's records.

use clap::{Args, ValueEnum};
use prism_transport::quic;
use prism_transport::{ActorState, FromControl, GroupState, JobState, JobStatus, ToControl};

use super::{ClientArgs, connect_cli};
use crate::daemon::ask;

/// What `prism list` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum Listed {
    /// Every job the head knows: running, finished and failed (the latest 100 ended).
    Jobs,
    /// Every job's actors, dead ones too.
    Actors,
    /// Every job's placement groups, removed ones too.
    Groups,
}

#[derive(Debug, Clone, Args)]
pub(super) struct ListArgs {
    /// What to list.
    what: Listed,
    /// Only this job's.
    #[arg(long)]
    job: Option<String>,
    /// Print the head's records as JSON (every field, for scripts) instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Asks the head for its jobs and prints what `args` asks for.
pub(super) async fn list(args: &ListArgs) -> Result<(), String> {
    let (_, endpoint, connection) = connect_cli(&args.client, "list").await?;
    let answer = ask(&connection, &ToControl::Jobs).await;
    connection.close(quic::codes::DONE, b"list done");
    endpoint.wait_idle().await;
    let mut jobs = match answer.map_err(|e| e.to_string())? {
        FromControl::Jobs(jobs) => jobs,
        other => return Err(format!("unexpected answer to a list of jobs: {other:?}")),
    };
    if let Some(job) = &args.job {
        jobs.retain(|j| &j.job == job);
    }
    let out = match (args.json, args.what) {
        (true, Listed::Jobs) => to_json(&jobs)?,
        (true, Listed::Actors) => {
            to_json(&jobs.iter().flat_map(|j| &j.actors).collect::<Vec<_>>())?
        }
        (true, Listed::Groups) => {
            to_json(&jobs.iter().flat_map(|j| &j.groups).collect::<Vec<_>>())?
        }
        (false, Listed::Jobs) => render_jobs(&jobs),
        (false, Listed::Actors) => render_actors(&jobs),
        (false, Listed::Groups) => render_groups(&jobs),
    };
    println!("{out}");
    Ok(())
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_string_pretty(value).map_err(|e| format!("cannot write JSON: {e}"))
}

fn render_jobs(jobs: &[JobStatus]) -> String {
    let mut out = format!(
        "{:<36} {:<9} {:<15} {:<8} {:<19} {:<19} {:<7} {:<6} ENTRY",
        "JOB", "STATE", "DRIVER", "PID", "STARTED (UTC)", "ENDED (UTC)", "ACTORS", "GROUPS"
    );
    for job in jobs {
        let live = job
            .actors
            .iter()
            .filter(|a| !matches!(a.state, ActorState::Dead(_)))
            .count();
        let placed = job
            .groups
            .iter()
            .filter(|g| g.state != GroupState::Removed)
            .count();
        let (state, why) = match &job.state {
            JobState::Running => ("RUNNING", String::new()),
            JobState::Finished => ("FINISHED", String::new()),
            JobState::Failed(reason) => ("FAILED", format!(" ({reason})")),
        };
        let ended = match job.ended_ms {
            0 => "-".to_string(),
            ms => utc(ms),
        };
        out.push_str(&format!(
            "\n{:<36} {:<9} {:<15} {:<8} {:<19} {:<19} {:<7} {:<6} {}{why}",
            job.job,
            state,
            job.info.driver,
            job.info.pid,
            utc(job.info.started_ms),
            ended,
            format!("{live}/{}", job.actors.len()),
            format!("{placed}/{}", job.groups.len()),
            job.info.entry,
        ));
    }
    out
}

fn render_actors(jobs: &[JobStatus]) -> String {
    let mut out = format!(
        "{:<14} {:<20} {:<16} {:<10} {:<16} {:<8} {:<36} REASON",
        "ACTOR", "CLASS", "NAME", "STATE", "NODE", "RESTARTS", "JOB"
    );
    for job in jobs {
        for actor in &job.actors {
            let (state, reason) = match &actor.state {
                ActorState::Starting => ("STARTING", ""),
                ActorState::Alive => ("ALIVE", ""),
                ActorState::Restarting => ("RESTARTING", ""),
                ActorState::Dead(reason) => ("DEAD", reason.as_str()),
            };
            out.push_str(&format!(
                "\n{:<14} {:<20} {:<16} {:<10} {:<16} {:<8} {:<36} {reason}",
                actor.id.to_string(),
                actor.class,
                actor.name.as_deref().unwrap_or("-"),
                state,
                if actor.node.is_empty() {
                    "-"
                } else {
                    &actor.node
                },
                actor.restarts,
                job.job,
            ));
        }
    }
    out
}

fn render_groups(jobs: &[JobStatus]) -> String {
    let mut out = format!(
        "{:<6} {:<9} {:<14} {:<36} BUNDLES (NODE)",
        "GROUP", "STATE", "STRATEGY", "JOB"
    );
    for job in jobs {
        for group in &job.groups {
            let state = match group.state {
                GroupState::Pending => "PENDING",
                GroupState::Created => "CREATED",
                GroupState::Removed => "REMOVED",
            };
            let bundles: Vec<String> = group
                .bundles
                .iter()
                .enumerate()
                .map(|(i, b)| match group.nodes.get(i) {
                    Some(node) => format!("{b} ({node})"),
                    None => b.clone(),
                })
                .collect();
            out.push_str(&format!(
                "\n{:<6} {:<9} {:<14} {:<36} {}",
                format!("{:x}", group.id),
                state,
                group.strategy,
                job.job,
                bundles.join(", ")
            ));
        }
    }
    out
}

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date, counting in 400-year eras from 0000-03-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_796_301_296_000), "2026-12-03 12:34:56");
    }
}
