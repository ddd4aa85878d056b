//! The cluster's directory of jobs, their actors and placement groups: what the driver tells
//! the head ([`Publisher`], one update in flight at a time, each holding only what changed
//! since the last one the head took) and what the head keeps of it ([`Directory`], saved with
//! the node table so that a restarted head still knows every job). Sans-IO, like the rest of
//! `proto`: the shells send the updates, save the snapshots and say what time it is.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::proto::names::Holder;
use prism_graph::ActorId;
use prism_transport::{
    ActorState, ActorStatus, FromControl, GroupState, GroupStatus, JobInfo, JobState, JobStatus,
    JobUpdate,
};

/// How long the head waits for a running job's driver (it speaks each second) before it
/// counts the job failed.
pub(crate) const JOB_TIMEOUT: Duration = Duration::from_secs(5);

/// How many ended jobs the head keeps (the oldest ended go first).
const ENDED_JOBS: usize = 100;

/// How many dead actors and removed groups the head keeps per job (the oldest go first).
const ENDED_PER_JOB: usize = 1000;

/// The most actors and groups one update carries (about 100 bytes each); more go in the
/// following updates.
const CHUNK: usize = 1000;

/// The most bytes of text (classes, names, reasons, bundles) one update carries, well under
/// the head's limit on a request (1 MiB): long names make smaller chunks.
const CHUNK_TEXT: usize = 256 << 10;

/// The most ids of ended actors or groups one update carries.
const GONE_CHUNK: usize = 10_000;

/// The driver's side: what the head was last told, and the next update.
#[derive(Debug)]
pub(crate) struct Publisher {
    job: String,
    info: JobInfo,
    seq: u64,
    /// What the head has of the job, as it confirmed (`None`: the next update begins a whole
    /// listing).
    confirmed: Option<Told>,
    /// What it will have once it takes the update in flight, if one is.
    sending: Option<Told>,
}

#[derive(Debug, Clone, Default)]
struct Told {
    actors: BTreeMap<ActorId, ActorStatus>,
    groups: BTreeMap<u64, GroupStatus>,
}

impl Publisher {
    /// A publisher for job `job` whose driver is `info`; its first update is whole.
    pub(crate) fn new(job: String, info: JobInfo) -> Self {
        Publisher {
            job,
            info,
            seq: 0,
            confirmed: None,
            sending: None,
        }
    }

    /// The next update towards `actors` and `groups` (the job's whole directory now), sent at
    /// `at_ms` (wall clock): what changed since the head's copy, at most [`CHUNK`] entries
    /// (the rest follows in the next updates; `complete` says when nothing is left). `None`
    /// while the last update is unanswered, unless the job `ended` (the last update, numbered
    /// after any in flight and carrying the driver's identity, so that it stands alone).
    pub(crate) fn update(
        &mut self,
        actors: Vec<ActorStatus>,
        groups: Vec<GroupStatus>,
        at_ms: u64,
        ended: bool,
    ) -> Option<JobUpdate> {
        if self.sending.is_some() && !ended {
            return None;
        }
        let now = Told {
            actors: actors.into_iter().map(|a| (a.id, a)).collect(),
            groups: groups.into_iter().map(|g| (g.id, g)).collect(),
        };
        // From what the head confirmed: the last update may overtake one in flight.
        let full = self.confirmed.is_none();
        let mut told = self.confirmed.clone().unwrap_or_default();
        let mut new_actors = changed(&told.actors, &now.actors);
        let mut new_groups = changed(&told.groups, &now.groups);
        let mut actors_gone = gone(&told.actors, &now.actors);
        let mut groups_gone = gone(&told.groups, &now.groups);
        let pending = new_actors.len() + new_groups.len();
        let actor_text = |a: &ActorStatus| {
            let reason = match &a.state {
                ActorState::Dead(reason) => reason.len(),
                _ => 0,
            };
            let reach = (a.reach.as_ref())
                .map_or(0, |r| r.at.len() + r.direct.as_ref().map_or(0, String::len));
            a.class.len() + a.name.as_ref().map_or(0, String::len) + a.node.len() + reason + reach
        };
        let group_text = |g: &GroupStatus| {
            let listed = g.bundles.iter().chain(&g.nodes);
            g.strategy.len() + listed.map(String::len).sum::<usize>()
        };
        let mut text = 0;
        let fits = |len: usize, text: &mut usize| {
            *text += len;
            *text <= CHUNK_TEXT
        };
        let actors_fit = new_actors
            .iter()
            .take(CHUNK)
            .take_while(|a| fits(actor_text(a), &mut text))
            .count()
            .max(1);
        new_actors.truncate(actors_fit);
        let groups_fit = new_groups
            .iter()
            .take(CHUNK - new_actors.len())
            .take_while(|g| fits(group_text(g), &mut text))
            .count();
        new_groups.truncate(groups_fit);
        let complete = new_actors.len() + new_groups.len() == pending
            && actors_gone.len() <= GONE_CHUNK
            && groups_gone.len() <= GONE_CHUNK;
        actors_gone.truncate(GONE_CHUNK);
        groups_gone.truncate(GONE_CHUNK);
        for actor in &new_actors {
            told.actors.insert(actor.id, actor.clone());
        }
        for group in &new_groups {
            told.groups.insert(group.id, group.clone());
        }
        for id in &actors_gone {
            told.actors.remove(id);
        }
        for id in &groups_gone {
            told.groups.remove(id);
        }
        self.seq += 1;
        self.sending = Some(told);
        Some(JobUpdate {
            job: self.job.clone(),
            seq: self.seq,
            at_ms,
            full,
            complete,
            info: (full || ended).then(|| self.info.clone()),
            actors: new_actors,
            actors_gone,
            groups: new_groups,
            groups_gone,
            ended,
        })
    }

    /// The head answered update `seq`: `taken`, or not (no answer in time, an error): then
    /// the next update begins a whole listing. An answer to an update that is no longer the
    /// latest is ignored.
    pub(crate) fn answered(&mut self, seq: u64, taken: bool) {
        if seq != self.seq {
            return;
        }
        let Some(sent) = self.sending.take() else {
            return;
        };
        self.confirmed = taken.then_some(sent);
    }

    /// Whether an update was sent and not answered yet.
    pub(crate) fn in_flight(&self) -> bool {
        self.sending.is_some()
    }
}

/// The entries of `now` that `told` lacks or has otherwise.
fn changed<K: Ord, T: Clone + PartialEq>(told: &BTreeMap<K, T>, now: &BTreeMap<K, T>) -> Vec<T> {
    now.iter()
        .filter(|(id, entry)| told.get(id) != Some(entry))
        .map(|(_, entry)| entry.clone())
        .collect()
}

/// The ids `told` has and `now` lacks.
fn gone<K: Ord + Copy, T>(told: &BTreeMap<K, T>, now: &BTreeMap<K, T>) -> Vec<K> {
    told.keys()
        .filter(|id| !now.contains_key(id))
        .copied()
        .collect()
}

/// One job as the head keeps it.
#[derive(Debug, Clone)]
struct JobRecord {
    info: JobInfo,
    state: JobState,
    ended_ms: u64,
    heard_ms: u64,
    actors: BTreeMap<ActorId, ActorStatus>,
    groups: BTreeMap<u64, GroupStatus>,
    /// The last update taken.
    seq: u64,
    /// The actors and groups a whole listing named so far, while one is under way (see
    /// [`JobUpdate::complete`]).
    listing: Option<(BTreeSet<ActorId>, BTreeSet<u64>)>,
    /// When the driver was last heard from (the head's clock).
    heard: Instant,
}

/// What a restarted head keeps of a job.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SavedJob {
    status: JobStatus,
    seq: u64,
}

/// The head's side: every job it knows, running and ended.
#[derive(Debug)]
pub(crate) struct Directory {
    jobs: BTreeMap<String, JobRecord>,
    timeout: Duration,
    changed: bool,
    /// Counts the changes (see [`Directory::version`]).
    version: u64,
}

impl Directory {
    /// An empty directory counting a job failed after `timeout` without a word.
    pub(crate) fn new(timeout: Duration) -> Self {
        Directory {
            jobs: BTreeMap::new(),
            timeout,
            changed: false,
            version: 0,
        }
    }

    /// Whether it knows job `job` (running or ended).
    pub(crate) fn knows(&self, job: &str) -> bool {
        self.jobs.contains_key(job)
    }

    /// Job `job`'s actor `actor` as the directory has it (dead once its job ended or failed).
    pub(crate) fn actor(&self, job: &str, actor: ActorId) -> Option<ActorStatus> {
        self.jobs.get(job)?.actors.get(&actor).cloned()
    }

    /// How many times the directory changed: a watcher of an actor looks again after each.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Whether job `job`'s actor `actor` still holds a name it claimed: its job runs and the
    /// actor is not known dead (one not listed yet counts alive: a claim comes before its
    /// actor's first listing).
    pub(crate) fn holder(&self, job: &str, actor: ActorId) -> Holder {
        let Some(record) = self.jobs.get(job) else {
            return Holder::Unknown;
        };
        let dead =
            (record.actors.get(&actor)).is_some_and(|a| matches!(a.state, ActorState::Dead(_)));
        if record.state != JobState::Running || dead {
            Holder::Gone
        } else {
            Holder::Live
        }
    }

    /// The directory a head saved: each running job given one timeout from `now` to be heard
    /// from again.
    pub(crate) fn recover(timeout: Duration, saved: Vec<SavedJob>, now: Instant) -> Self {
        let mut directory = Self::new(timeout);
        for SavedJob { status, seq } in saved {
            let record = JobRecord {
                info: status.info,
                state: status.state,
                ended_ms: status.ended_ms,
                heard_ms: status.heard_ms,
                actors: status.actors.into_iter().map(|a| (a.id, a)).collect(),
                groups: status.groups.into_iter().map(|g| (g.id, g)).collect(),
                seq,
                heard: now,
                listing: None,
            };
            directory.jobs.insert(status.job, record);
        }
        directory
    }

    /// What to save.
    pub(crate) fn snapshot(&self) -> Vec<SavedJob> {
        self.jobs
            .iter()
            .map(|(job, record)| SavedJob {
                status: status_of(job, record),
                seq: record.seq,
            })
            .collect()
    }

    /// Whether anything worth saving changed since the last call.
    pub(crate) fn changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Every job, in the order of their names.
    pub(crate) fn jobs(&self) -> Vec<JobStatus> {
        self.jobs
            .iter()
            .map(|(job, record)| status_of(job, record))
            .collect()
    }

    /// Takes a driver's update at `now`: [`FromControl::Ack`], or an error that makes the
    /// driver send its whole directory (the head does not know the job, or counted it failed).
    pub(crate) fn apply(&mut self, update: JobUpdate, now: Instant) -> FromControl {
        let record = match (self.jobs.get_mut(&update.job), &update.info) {
            (Some(record), _) if update.seq <= record.seq => {
                // Overtaken by a later update (the last one of a driver that stopped).
                return FromControl::Ack;
            }
            (Some(record), _) if update.full || !matches!(record.state, JobState::Failed(_)) => {
                record
            }
            (Some(_), _) => {
                return FromControl::Error(format!(
                    "job {} was counted failed: send its whole directory",
                    update.job
                ));
            }
            (None, Some(info)) => self.jobs.entry(update.job.clone()).or_insert(JobRecord {
                info: info.clone(),
                state: JobState::Running,
                ended_ms: 0,
                heard_ms: update.at_ms,
                actors: BTreeMap::new(),
                groups: BTreeMap::new(),
                seq: 0,
                heard: now,
                listing: None,
            }),
            (None, None) => {
                return FromControl::Error(format!(
                    "job {} is not known here: send its whole directory",
                    update.job
                ));
            }
        };
        let changes = update.full
            || update.ended
            || !update.actors.is_empty()
            || !update.actors_gone.is_empty()
            || !update.groups.is_empty()
            || !update.groups_gone.is_empty();
        if update.full {
            if let Some(info) = &update.info {
                record.info = info.clone();
            }
            record.state = JobState::Running;
            record.ended_ms = 0;
            record.listing = Some(Default::default());
        }
        record.seq = update.seq;
        record.heard = now;
        record.heard_ms = update.at_ms;
        if let Some((actors, groups)) = &mut record.listing {
            actors.extend(update.actors.iter().map(|a| a.id));
            groups.extend(update.groups.iter().map(|g| g.id));
        }
        for actor in update.actors {
            record.actors.insert(actor.id, actor);
        }
        end_actors(record, &update.actors_gone, "its driver released it");
        for group in update.groups {
            record.groups.insert(group.id, group);
        }
        end_groups(record, &update.groups_gone);
        // A whole listing is over: what it did not name, the driver no longer keeps.
        if update.complete
            && let Some((actors, groups)) = record.listing.take()
        {
            let gone = record.actors.keys().filter(|id| !actors.contains(id));
            let gone: Vec<ActorId> = gone.copied().collect();
            end_actors(record, &gone, "its driver released it");
            let gone = record.groups.keys().filter(|id| !groups.contains(id));
            let gone: Vec<u64> = gone.copied().collect();
            end_groups(record, &gone);
        }
        if update.ended {
            record.state = JobState::Finished;
            record.ended_ms = update.at_ms;
            record.listing = None;
            let all: Vec<ActorId> = record.actors.keys().copied().collect();
            end_actors(record, &all, "its job ended");
            let all: Vec<u64> = record.groups.keys().copied().collect();
            end_groups(record, &all);
            tracing::info!(job = update.job, "job finished");
        }
        trim(record);
        if changes {
            self.changed = true;
            self.version += 1;
            self.trim_ended();
        }
        FromControl::Ack
    }

    /// Counts the running jobs whose drivers were not heard from within the timeout failed:
    /// their actors died with them (their nodes stop a job's workers once its driver is gone).
    pub(crate) fn tick(&mut self, now: Instant) {
        let timeout = self.timeout;
        for (job, record) in &mut self.jobs {
            let silent = now.saturating_duration_since(record.heard) > timeout;
            if record.state != JobState::Running || !silent {
                continue;
            }
            let reason = format!(
                "its driver was not heard from for {} s",
                timeout.as_secs_f64()
            );
            tracing::warn!(job, "job failed: {reason}");
            record.state = JobState::Failed(reason);
            record.ended_ms = record.heard_ms;
            let all: Vec<ActorId> = record.actors.keys().copied().collect();
            end_actors(record, &all, "its job's driver was lost");
            let all: Vec<u64> = record.groups.keys().copied().collect();
            end_groups(record, &all);
            self.changed = true;
            self.version += 1;
        }
        self.trim_ended();
    }

    /// Forgets the oldest ended jobs beyond [`ENDED_JOBS`].
    fn trim_ended(&mut self) {
        let mut ended: Vec<(u64, String)> = self
            .jobs
            .iter()
            .filter(|(_, r)| r.state != JobState::Running)
            .map(|(job, r)| (r.ended_ms, job.clone()))
            .collect();
        if ended.len() <= ENDED_JOBS {
            return;
        }
        ended.sort_unstable();
        for (_, job) in &ended[..ended.len() - ENDED_JOBS] {
            self.jobs.remove(job);
        }
    }
}

/// Marks the actors `ids` of `record` dead for `reason` (those not dead already).
fn end_actors(record: &mut JobRecord, ids: &[ActorId], reason: &str) {
    for id in ids {
        if let Some(actor) = record.actors.get_mut(id)
            && !matches!(actor.state, ActorState::Dead(_))
        {
            actor.state = ActorState::Dead(reason.to_string());
            actor.node.clear();
        }
    }
}

/// Marks the groups `ids` of `record` removed.
fn end_groups(record: &mut JobRecord, ids: &[u64]) {
    for id in ids {
        if let Some(group) = record.groups.get_mut(id) {
            group.state = GroupState::Removed;
            group.nodes.clear();
        }
    }
}

/// Forgets the oldest dead actors and removed groups of `record` beyond [`ENDED_PER_JOB`].
fn trim(record: &mut JobRecord) {
    let dead: Vec<ActorId> = record
        .actors
        .iter()
        .filter(|(_, a)| matches!(a.state, ActorState::Dead(_)))
        .map(|(id, _)| *id)
        .collect();
    for id in dead.iter().take(dead.len().saturating_sub(ENDED_PER_JOB)) {
        record.actors.remove(id);
    }
    let removed: Vec<u64> = record
        .groups
        .iter()
        .filter(|(_, g)| g.state == GroupState::Removed)
        .map(|(id, _)| *id)
        .collect();
    for id in removed
        .iter()
        .take(removed.len().saturating_sub(ENDED_PER_JOB))
    {
        record.groups.remove(id);
    }
}

fn status_of(job: &str, record: &JobRecord) -> JobStatus {
    JobStatus {
        job: job.to_string(),
        info: record.info.clone(),
        state: record.state.clone(),
        ended_ms: record.ended_ms,
        heard_ms: record.heard_ms,
        actors: record.actors.values().cloned().collect(),
        groups: record.groups.values().cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_graph::TaskId;

    fn info() -> JobInfo {
        JobInfo {
            driver: "127.0.0.1".into(),
            pid: 42,
            entry: "es --workers 4".into(),
            started_ms: 1_000,
        }
    }

    fn actor(id: u64, state: ActorState) -> ActorStatus {
        ActorStatus {
            id: ActorId(TaskId::new(0, id)),
            class: "Counter".into(),
            name: (id == 1).then(|| "first".to_string()),
            namespace: if id == 1 { "svc".into() } else { String::new() },
            state,
            node: "n1".into(),
            restarts: 0,
            reach: None,
            max_task_retries: 0,
        }
    }

    fn group(id: u64, state: GroupState) -> GroupStatus {
        GroupStatus {
            id,
            strategy: "PACK".into(),
            bundles: vec!["{CPU: 1}".into()],
            nodes: vec!["n1".into()],
            state,
        }
    }

    /// Sends the publisher's next update to the directory and tells it the answer.
    fn send(
        publisher: &mut Publisher,
        directory: &mut Directory,
        actors: Vec<ActorStatus>,
        groups: Vec<GroupStatus>,
        now: Instant,
    ) -> Option<JobUpdate> {
        let update = publisher.update(actors, groups, 2_000, false)?;
        let answer = directory.apply(update.clone(), now);
        publisher.answered(update.seq, answer == FromControl::Ack);
        Some(update)
    }

    #[test]
    fn updates_carry_only_what_changed_and_the_head_keeps_history() {
        let now = Instant::now();
        let mut publisher = Publisher::new("job".into(), info());
        let mut directory = Directory::new(JOB_TIMEOUT);
        let a = vec![actor(1, ActorState::Starting), actor(2, ActorState::Alive)];
        let first = send(&mut publisher, &mut directory, a.clone(), vec![], now).unwrap();
        assert!(first.full && first.complete && first.info.is_some() && first.actors.len() == 2);
        assert!(directory.changed());
        // Nothing changed: an empty update (the driver's heartbeat), nothing to save.
        let quiet = send(&mut publisher, &mut directory, a.clone(), vec![], now).unwrap();
        assert!(!quiet.full && quiet.actors.is_empty() && quiet.actors_gone.is_empty());
        assert!(!directory.changed());
        // Actor 1 comes alive, actor 2 is released, a group is made.
        let b = vec![actor(1, ActorState::Alive)];
        let g = vec![group(1, GroupState::Created)];
        let third = send(&mut publisher, &mut directory, b.clone(), g.clone(), now).unwrap();
        assert_eq!(third.actors, b);
        assert_eq!(third.actors_gone, vec![ActorId(TaskId::new(0, 2))]);
        assert_eq!(third.groups, g);
        let jobs = directory.jobs();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].actors[0].state, ActorState::Alive);
        assert_eq!(
            jobs[0].actors[1].state,
            ActorState::Dead("its driver released it".into())
        );
        assert_eq!(jobs[0].groups[0].state, GroupState::Created);
        assert_eq!(jobs[0].state, JobState::Running);
    }

    #[test]
    fn one_update_in_flight_and_a_lost_answer_makes_the_next_whole() {
        let now = Instant::now();
        let mut publisher = Publisher::new("job".into(), info());
        let a = vec![actor(1, ActorState::Alive)];
        let first = publisher.update(a.clone(), vec![], 1, false).unwrap();
        assert!(first.full);
        assert!(publisher.update(a.clone(), vec![], 2, false).is_none());
        publisher.answered(first.seq + 1, false);
        assert!(
            publisher.in_flight(),
            "an answer to another update changes nothing"
        );
        publisher.answered(first.seq, false);
        let again = publisher.update(a.clone(), vec![], 3, false).unwrap();
        assert!(again.full && again.seq > first.seq);
        // A head that does not know the job asks for all of it.
        let mut directory = Directory::new(JOB_TIMEOUT);
        publisher.answered(again.seq, true);
        publisher.answered(again.seq, false);
        assert!(
            !publisher.in_flight(),
            "a late second answer changes nothing"
        );
        let delta = publisher.update(a, vec![], 4, false).unwrap();
        assert!(!delta.full);
        assert!(matches!(
            directory.apply(delta, now),
            FromControl::Error(e) if e.contains("not known")
        ));
    }

    #[test]
    fn the_last_update_overtakes_one_in_flight() {
        let now = Instant::now();
        let mut publisher = Publisher::new("job".into(), info());
        let mut directory = Directory::new(JOB_TIMEOUT);
        send(&mut publisher, &mut directory, vec![], vec![], now);
        let late = publisher
            .update(vec![actor(1, ActorState::Alive)], vec![], 5, false)
            .unwrap();
        let last = publisher
            .update(vec![actor(1, ActorState::Alive)], vec![], 6, true)
            .unwrap();
        // Counted from what the head confirmed, so the actor the late update carries is in it.
        assert!(last.ended && last.info.is_some() && last.seq > late.seq);
        assert_eq!(last.actors, late.actors);
        assert_eq!(directory.apply(last, now), FromControl::Ack);
        // The delta sent before arrives after the last word: ignored.
        assert_eq!(directory.apply(late, now), FromControl::Ack);
        let job = &directory.jobs()[0];
        assert_eq!(job.state, JobState::Finished);
        assert_eq!(job.ended_ms, 6);
        assert_eq!(
            job.actors[0].state,
            ActorState::Dead("its job ended".into())
        );
    }

    #[test]
    fn a_silent_job_fails_and_is_revived_only_by_a_whole_update() {
        let now = Instant::now();
        let mut publisher = Publisher::new("job".into(), info());
        let mut directory = Directory::new(JOB_TIMEOUT);
        let a = vec![actor(1, ActorState::Alive)];
        send(&mut publisher, &mut directory, a.clone(), vec![], now);
        directory.tick(now + JOB_TIMEOUT);
        assert_eq!(directory.jobs()[0].state, JobState::Running);
        directory.tick(now + JOB_TIMEOUT + Duration::from_millis(1));
        let job = &directory.jobs()[0];
        assert!(matches!(&job.state, JobState::Failed(r) if r.contains("not heard")));
        assert!(matches!(job.actors[0].state, ActorState::Dead(_)));
        // The driver was only cut off: its delta is refused, its whole directory taken.
        let later = now + 2 * JOB_TIMEOUT;
        let delta = send(&mut publisher, &mut directory, a.clone(), vec![], later).unwrap();
        assert!(!delta.full);
        let whole = send(&mut publisher, &mut directory, a, vec![], later).unwrap();
        assert!(whole.full);
        let job = &directory.jobs()[0];
        assert_eq!(job.state, JobState::Running);
        assert_eq!(job.actors[0].state, ActorState::Alive);
    }

    #[test]
    fn a_recovered_directory_is_the_saved_one_and_takes_deltas() {
        let now = Instant::now();
        let mut publisher = Publisher::new("job".into(), info());
        let mut directory = Directory::new(JOB_TIMEOUT);
        let a = vec![actor(1, ActorState::Alive)];
        let g = vec![group(3, GroupState::Created)];
        send(&mut publisher, &mut directory, a, g, now);
        let json = serde_json::to_string(&directory.snapshot()).unwrap();
        let saved: Vec<SavedJob> = serde_json::from_str(&json).unwrap();
        let mut recovered = Directory::recover(JOB_TIMEOUT, saved, now);
        assert_eq!(recovered.jobs(), directory.jobs());
        let b = vec![actor(1, ActorState::Restarting)];
        let delta = send(&mut publisher, &mut recovered, b, vec![], now).unwrap();
        assert!(!delta.full && delta.groups_gone == vec![3]);
        let job = &recovered.jobs()[0];
        assert_eq!(job.actors[0].state, ActorState::Restarting);
        assert_eq!(job.groups[0].state, GroupState::Removed);
    }

    #[test]
    fn a_large_directory_goes_in_chunks_and_a_whole_listing_ends_what_it_left_out() {
        let now = Instant::now();
        let mut publisher = Publisher::new("job".into(), info());
        let mut directory = Directory::new(JOB_TIMEOUT);
        let alive = |ids: std::ops::Range<u64>| -> Vec<ActorStatus> {
            ids.map(|id| actor(id, ActorState::Alive)).collect()
        };
        let updates: Vec<JobUpdate> = (0..3)
            .map(|_| send(&mut publisher, &mut directory, alive(0..2500), vec![], now).unwrap())
            .collect();
        let sizes: Vec<usize> = updates.iter().map(|u| u.actors.len()).collect();
        assert_eq!(sizes, vec![CHUNK, CHUNK, 500]);
        assert!(updates[0].full && !updates[1].full);
        assert_eq!(
            updates.iter().map(|u| u.complete).collect::<Vec<_>>(),
            vec![false, false, true]
        );
        assert_eq!(directory.jobs()[0].actors.len(), 2500);
        // The head's answer is lost: the driver lists everything again, while it released
        // actors 0-99 and made 2500-2599; the head ends what the new listing left out only
        // once the listing is complete.
        let update = publisher
            .update(alive(100..2600), vec![], 3, false)
            .unwrap();
        publisher.answered(update.seq, false);
        let mut listing = Vec::new();
        loop {
            let update = send(
                &mut publisher,
                &mut directory,
                alive(100..2600),
                vec![],
                now,
            );
            let update = update.unwrap();
            let done = update.complete;
            listing.push(update);
            let dead = directory.jobs()[0]
                .actors
                .iter()
                .filter(|a| matches!(a.state, ActorState::Dead(_)))
                .count();
            assert_eq!(dead, if done { 100 } else { 0 }, "ended only at the end");
            if done {
                break;
            }
        }
        assert!(listing[0].full && listing.len() == 3);
        assert_eq!(directory.jobs()[0].actors.len(), 2600);
    }

    #[test]
    fn long_names_make_smaller_chunks() {
        let mut publisher = Publisher::new("job".into(), info());
        let named = |id: u64| ActorStatus {
            name: Some(format!("{id}-{}", "x".repeat(10_000))),
            ..actor(id, ActorState::Alive)
        };
        let update = publisher
            .update((0..100).map(named).collect(), vec![], 1, false)
            .unwrap();
        // About 10 kB each: 26 fit in 256 KiB.
        assert_eq!(update.actors.len(), 26);
        assert!(!update.complete);
    }

    #[test]
    fn ended_jobs_and_dead_actors_are_bounded() {
        let now = Instant::now();
        let mut directory = Directory::new(JOB_TIMEOUT);
        for i in 0..ENDED_JOBS + 5 {
            let mut publisher = Publisher::new(format!("job-{i:03}"), info());
            let dead = (0..3).map(|id| actor(id, ActorState::Dead("x".into())));
            let update = publisher
                .update(dead.collect(), vec![], i as u64, true)
                .unwrap();
            assert_eq!(directory.apply(update, now), FromControl::Ack);
        }
        let jobs = directory.jobs();
        assert_eq!(jobs.len(), ENDED_JOBS);
        assert_eq!(jobs[0].job, "job-005");
        let mut publisher = Publisher::new("many".into(), info());
        let many: Vec<ActorStatus> = (0..ENDED_PER_JOB as u64 + 10)
            .map(|id| actor(id, ActorState::Dead("x".into())))
            .collect();
        let first = send(&mut publisher, &mut directory, many.clone(), vec![], now).unwrap();
        let rest = send(&mut publisher, &mut directory, many, vec![], now).unwrap();
        assert!(!first.complete && rest.complete && rest.actors.len() == 10);
        let job = directory
            .jobs()
            .into_iter()
            .find(|j| j.job == "many")
            .unwrap();
        assert_eq!(job.actors.len(), ENDED_PER_JOB);
        assert_eq!(job.actors[0].id, ActorId(TaskId::new(0, 10)));
    }
}
