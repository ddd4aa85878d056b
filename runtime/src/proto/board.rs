//! The head's board of task events: what the drivers of the cluster report of their tasks
//! each second ([`JobEvents`]), kept for `prism list tasks`, `prism summary tasks`, the
//! dashboard and `/metrics`. Bounded: at most `capacity` task records over every job (the
//! oldest first recorded go first; the drivers' summaries still count them) and the summaries
//! of the latest [`MAX_JOBS`] jobs. Sans-IO: the head's daemon feeds it reports.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use prism_graph::TaskId;
use prism_transport::{JobEvents, JobSummary, JobTask, TaskInfo, TaskQuery};

/// How many jobs' summaries the board keeps (those reported last).
pub(crate) const MAX_JOBS: usize = 100;

/// The board (see the module's doc).
#[derive(Debug)]
pub(crate) struct TaskBoard {
    capacity: usize,
    /// The records, the first recorded first.
    ring: VecDeque<(Arc<str>, TaskInfo)>,
    /// Each record's number: its place in the order of recording since the board began.
    index: HashMap<(Arc<str>, TaskId), u64>,
    /// The number of the ring's oldest record.
    first: u64,
    /// Each job's last summaries, and the report the latest came with (for [`MAX_JOBS`]).
    summaries: BTreeMap<Arc<str>, (u64, Summaries)>,
    /// How many reports came.
    reports: u64,
}

impl TaskBoard {
    /// A board of at most `capacity` task records.
    pub(crate) fn new(capacity: usize) -> Self {
        TaskBoard {
            capacity,
            ring: VecDeque::new(),
            index: HashMap::new(),
            first: 0,
            summaries: BTreeMap::new(),
            reports: 0,
        }
    }

    /// Takes a driver's report.
    pub(crate) fn report(&mut self, events: JobEvents) {
        self.report_from(None, events);
    }

    /// Takes node `node`'s report of the tasks the job's workers there own: its records, and
    /// its counts, added to the driver's (each node's last replaces its previous).
    pub(crate) fn report_node(&mut self, node: &str, events: JobEvents) {
        self.report_from(Some(node), events);
    }

    /// Takes a report from the job's driver (`None`) or a node.
    fn report_from(&mut self, node: Option<&str>, events: JobEvents) {
        self.reports += 1;
        let job: Arc<str> = match self.summaries.get_key_value(events.summary.job.as_str()) {
            Some((job, _)) => job.clone(),
            None => events.summary.job.as_str().into(),
        };
        for task in events.tasks {
            self.record(&job, task);
        }
        let reports = self.reports;
        let (at, summaries) = self.summaries.entry(job).or_default();
        *at = reports;
        match node {
            None => summaries.driver = Some(events.summary),
            Some(node) => {
                summaries.nodes.insert(node.to_string(), events.summary);
            }
        }
        while self.summaries.len() > MAX_JOBS {
            let oldest = self
                .summaries
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(job, _)| job.clone());
            if let Some(job) = oldest {
                self.summaries.remove(&job);
            }
        }
    }

    fn record(&mut self, job: &Arc<str>, task: TaskInfo) {
        if self.capacity == 0 {
            return;
        }
        let key = (job.clone(), task.task_id);
        if let Some(&number) = self.index.get(&key)
            && let Some(slot) = self.ring.get_mut((number - self.first) as usize)
        {
            slot.1 = task;
            return;
        }
        while self.ring.len() >= self.capacity {
            if let Some((job, old)) = self.ring.pop_front() {
                self.index.remove(&(job, old.task_id));
            }
            self.first += 1;
        }
        self.index.insert(key, self.first + self.ring.len() as u64);
        self.ring.push_back((job.clone(), task));
    }

    /// The records `query` asks for (its `limit` newest of them), by job and id, and how
    /// many match.
    pub(crate) fn tasks(&self, query: &TaskQuery) -> (Vec<JobTask>, u64) {
        let matching = |(job, task): &&(Arc<str>, TaskInfo)| query.matches(job, task);
        let (mut matched, mut out) = (0, Vec::new());
        for found in self.ring.iter().rev().filter(matching) {
            matched += 1;
            if query.limit == 0 || out.len() < query.limit as usize {
                out.push(to_job_task(found));
            }
        }
        out.sort_by(|a, b| (&a.job, a.task.task_id).cmp(&(&b.job, b.task.task_id)));
        (out, matched)
    }

    /// Every job's last summary, by job: its driver's, with its nodes' counts added.
    pub(crate) fn summaries(&self) -> Vec<JobSummary> {
        let merged = |(job, (_, summaries)): (&Arc<str>, &(u64, Summaries))| {
            let mut all = summaries.driver.clone().unwrap_or_else(|| JobSummary {
                job: job.to_string(),
                tasks: Vec::new(),
                objects: Vec::new(),
                times: Vec::new(),
            });
            for node in summaries.nodes.values() {
                all.add(node);
            }
            all
        };
        self.summaries.iter().map(merged).collect()
    }

    /// How many task records it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }
}

/// A job's last summaries: its driver's, and each node's of the tasks the job's workers
/// there own.
#[derive(Debug, Default)]
struct Summaries {
    driver: Option<JobSummary>,
    nodes: BTreeMap<String, JobSummary>,
}

fn to_job_task((job, task): &(Arc<str>, TaskInfo)) -> JobTask {
    JobTask {
        job: job.to_string(),
        task: task.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_transport::{TaskCount, TaskPhase, TaskType};

    fn task(owner: u64, seq: u64, state: TaskPhase) -> TaskInfo {
        TaskInfo {
            task_id: TaskId::new(owner, seq),
            function: format!("f{}", seq % 2),
            kind: TaskType::NormalTask,
            state,
            attempt: 0,
            node: None,
            worker: None,
            parent: None,
            error: None,
            events: Vec::new(),
            runs: Vec::new(),
        }
    }

    fn report(job: &str, tasks: Vec<TaskInfo>) -> JobEvents {
        let counts = tasks
            .iter()
            .map(|t| TaskCount {
                function: t.function.clone(),
                kind: Some(t.kind),
                state: t.state,
                count: 1,
                dropped: 0,
            })
            .collect();
        JobEvents {
            tasks,
            summary: JobSummary {
                job: job.to_string(),
                tasks: counts,
                objects: Vec::new(),
                times: Vec::new(),
            },
        }
    }

    #[test]
    fn a_record_is_replaced_in_place_and_the_oldest_leave() {
        let mut board = TaskBoard::new(3);
        let pending = |seq| task(1, seq, TaskPhase::PendingNode);
        board.report(report("a", vec![pending(0), pending(1)]));
        // The same task id in another job is another task.
        board.report(report("b", vec![pending(0)]));
        board.report(report("a", vec![task(1, 0, TaskPhase::Finished)]));
        assert_eq!(board.len(), 3);
        let (all, _) = board.tasks(&TaskQuery::default());
        let states: Vec<(&str, u64, TaskPhase)> = all
            .iter()
            .map(|t| (t.job.as_str(), t.task.task_id.seq, t.task.state))
            .collect();
        assert_eq!(
            states,
            [
                ("a", 0, TaskPhase::Finished),
                ("a", 1, TaskPhase::PendingNode),
                ("b", 0, TaskPhase::PendingNode),
            ]
        );
        // A fourth task pushes out the first recorded (a's task 0), updated or not.
        board.report(report("b", vec![pending(7)]));
        assert_eq!(board.len(), 3);
        let query = TaskQuery {
            job: Some("a".into()),
            ..TaskQuery::default()
        };
        let a: Vec<u64> = (board.tasks(&query).0)
            .iter()
            .map(|t| t.task.task_id.seq)
            .collect();
        assert_eq!(a, [1]);
        // Summaries: the last of each job.
        let summaries = board.summaries();
        assert_eq!(summaries.len(), 2);
        assert_eq!(summaries[0].tasks[0].state, TaskPhase::Finished);
    }

    #[test]
    fn nodes_counts_add_to_the_driver_s_and_each_replaces_its_own_last() {
        let mut board = TaskBoard::new(100);
        let (done, running) = (TaskPhase::Finished, TaskPhase::Running);
        board.report(report("a", vec![task(0, 1, done)]));
        let alpha_first = vec![task(3, 1, done), task(3, 2, running)];
        board.report_node("alpha", report("a", alpha_first));
        board.report_node(
            "alpha",
            report("a", vec![task(3, 1, done), task(3, 2, done)]),
        );
        board.report_node("beta", report("a", vec![task(4, 1, done)]));
        let summaries = board.summaries();
        assert_eq!(summaries.len(), 1, "one job");
        let count = |function: &str, state| {
            (summaries[0].tasks.iter())
                .filter(|c| c.function == function && c.state == state)
                .map(|c| c.count)
                .sum::<u64>()
        };
        assert_eq!(count("f1", done), 3, "the driver's, alpha's and beta's");
        assert_eq!(
            count("f0", done),
            1,
            "alpha's last report replaced its first"
        );
        assert_eq!(count("f0", running), 0);
        assert_eq!(board.len(), 4, "every task's record");
    }

    #[test]
    fn queries_filter_and_keep_the_newest() {
        let mut board = TaskBoard::new(100);
        let tasks = (0..10)
            .map(|seq| {
                let state = match seq < 4 {
                    true => TaskPhase::Finished,
                    false => TaskPhase::Running,
                };
                task(2, seq, state)
            })
            .collect();
        board.report(report("j", tasks));
        let seqs = |query: TaskQuery| -> Vec<u64> {
            (board.tasks(&query).0)
                .iter()
                .map(|t| t.task.task_id.seq)
                .collect()
        };
        let running = TaskQuery {
            state: Some(TaskPhase::Running),
            limit: 2,
            ..TaskQuery::default()
        };
        assert_eq!(seqs(running.clone()), [8, 9]);
        assert_eq!(board.tasks(&running).1, 6, "six match, two are shown");
        let f0 = TaskQuery {
            function: Some("F0".into()),
            state: Some(TaskPhase::Finished),
            ..TaskQuery::default()
        };
        assert_eq!(seqs(f0), [0, 2]);
        let one = TaskQuery {
            task: Some(TaskId::new(2, 5)),
            ..TaskQuery::default()
        };
        assert_eq!(seqs(one), [5]);
        let none = TaskQuery {
            task: Some(TaskId::new(3, 5)),
            ..TaskQuery::default()
        };
        assert!(seqs(none).is_empty());
    }

    #[test]
    fn summaries_of_the_latest_jobs_only() {
        let mut board = TaskBoard::new(0);
        for job in 0..MAX_JOBS + 5 {
            board.report(report(&format!("job-{job:03}"), vec![]));
        }
        // Job 0 reports again: it is among the latest.
        board.report(report("job-000", vec![]));
        let jobs: Vec<String> = board.summaries().into_iter().map(|s| s.job).collect();
        assert_eq!(jobs.len(), MAX_JOBS);
        assert_eq!(jobs[0], "job-000");
        assert_eq!(jobs[1], "job-006");
        assert_eq!(board.len(), 0, "a board of 0 keeps no records");
    }
}
