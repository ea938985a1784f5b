//! The local task status machine. Two levels:
//!
//! * the pure rules in `updates.rs`, for every pair of statuses;
//! * sequences of worker, Server and admin events applied through the Manager SDK to the
//!   real SQLite store (in a temporary directory): claims, worker updates with valid and
//!   invalid statuses, may-i-run, returns, sign-offs, the active-task timeout, the
//!   Server's cancel list, admin cancel and re-queue of the job, and the standalone
//!   consumer.
//!
//! Asserted after every event: a claim only hands out a task that is schedulable or
//! already this worker's, and the task is then that worker's alone (another worker's
//! updates are refused); a refused or invalid update changes nothing; an `active` task
//! always has a worker; and a task in a final status (`completed`, `failed`, `canceled`)
//! leaves it only through an explicit re-queue — the one exception being v2's rule that
//! the task's own worker may still report a different final status
//! (`completed` → `failed`), never out of `canceled`.
//!
//! Retries, blocklists and worker tags are in effect (standalone mode, low limits so that
//! they happen; random worker tags, a random job tag, tags added and removed, workers
//! forgotten): a claim never hands a task to a worker in its failure record, blocklisted
//! for its job and type, or without its job's tag; once the maintenance check has run and
//! the consumer has taken its updates, no task waits in `queued`, `claimed-by-manager` or
//! `soft-failed` for ever because no known worker could ever take it (docs/jobs.md, "No
//! worker left": a worker's status does not matter, forgetting it does); and no job is
//! marked stranded while every one of its tasks could still be taken by some worker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flamenco_core::clock::ManualClock;
use flamenco_core::config::Config;
use flamenco_core::jobs::JobSubmission;
use flamenco_core::model::{ObjectId, Task, TaskStatus, Worker};
use flamenco_core::protocol::WorkerTaskUpdate;
use flamenco_core::store::sqlite::SqliteStore;
use flamenco_core::store::TaskQuery;
use flamenco_core::updates::{check_worker_update, local_status_after, WorkerUpdateOutcome};
use flamenco_core::{ApiError, Manager, NextTask, Peer};
use proptest::prelude::*;
use serde_json::json;

const WORKERS: usize = 3;
const TASKS: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(600);

/// Statuses a worker may send: every known one, and some it must not.
const SENT_STATUSES: [&str; 12] = [
    "queued",
    "claimed-by-manager",
    "active",
    "completed",
    "failed",
    "canceled",
    "cancel-requested",
    "soft-failed",
    "",
    "cancelled",
    "ACTIVE",
    "done",
];

/// Worker tags used by the test, and what a job may require.
const TAGS: [&str; 2] = ["gpu", "win"];

/// The farm at the start: each worker's tags, and the job's tag.
#[derive(Clone, Debug)]
struct Setup {
    worker_tags: Vec<Vec<&'static str>>,
    job_tag: Option<&'static str>,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop::collection::vec(prop::sample::subsequence(TAGS.to_vec(), 0..=2), WORKERS),
        prop::option::weighted(0.6, prop::sample::select(TAGS.to_vec())),
    )
        .prop_map(|(worker_tags, job_tag)| Setup {
            worker_tags,
            job_tag,
        })
}

#[derive(Clone, Debug)]
enum Event {
    Claim(usize),
    Update(usize, usize, Option<&'static str>),
    MayIRun(usize, usize),
    Return(usize, usize),
    SignOff(usize),
    /// Let the clock pass the active-task timeout, then run the timeout check.
    Timeout,
    /// The Server's cancel list names this task.
    ServerCancel(usize),
    AdminCancel,
    AdminRequeue,
    /// The standalone consumer applies the outbox to the job (may cascade a failure).
    Consume,
    /// An admin adds (true) or removes (false) a tag of a worker.
    Tag(usize, &'static str, bool),
    /// An admin forgets a worker (refused while it runs a task and is awake).
    Forget(usize),
    /// The maintenance loop's "no worker left" check on its own.
    Stranded,
}

fn event() -> impl Strategy<Value = Event> {
    let w = 0..WORKERS;
    let t = 0..TASKS;
    prop_oneof![
        4 => w.clone().prop_map(Event::Claim),
        6 => (w.clone(), t.clone(), prop::option::weighted(0.9, prop::sample::select(SENT_STATUSES.to_vec())))
            .prop_map(|(w, t, s)| Event::Update(w, t, s)),
        2 => (w.clone(), t.clone()).prop_map(|(w, t)| Event::MayIRun(w, t)),
        1 => (w.clone(), t.clone()).prop_map(|(w, t)| Event::Return(w, t)),
        1 => w.prop_map(Event::SignOff),
        1 => Just(Event::Timeout),
        1 => t.prop_map(Event::ServerCancel),
        1 => Just(Event::AdminCancel),
        2 => Just(Event::AdminRequeue),
        2 => Just(Event::Consume),
        2 => (0..WORKERS, prop::sample::select(TAGS.to_vec()), any::<bool>())
            .prop_map(|(w, t, add)| Event::Tag(w, t, add)),
        1 => (0..WORKERS).prop_map(Event::Forget),
        1 => Just(Event::Stranded),
    ]
}

struct Farm {
    manager: Manager,
    clock: Arc<ManualClock>,
    workers: Vec<ObjectId>,
    job: ObjectId,
    tasks: Vec<ObjectId>,
    _dir: tempfile::TempDir,
}

fn peer() -> Peer {
    Peer {
        host: "127.0.0.1".into(),
        host_port: "127.0.0.1:5000".into(),
        user_agent: "Flamenco-Worker/2.5".into(),
    }
}

impl Farm {
    async fn new(setup: &Setup) -> Farm {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open(dir.path()).expect("the SQLite store opens");
        let start = DateTime::from_timestamp(1_700_000_000, 0).expect("a valid time");
        let clock = Arc::new(ManualClock::new(start));
        let config = Config {
            active_task_timeout_interval: TIMEOUT,
            task_fail_after_softfail_count: 2,
            blocklist_threshold: 2,
            ..Config::default()
        };
        let manager = Manager::with_store(config, Arc::new(store), clock.clone());
        let mut workers = Vec::new();
        for i in 0..WORKERS {
            let worker = Worker {
                id: ObjectId::new(),
                hashed_secret: "not-used".into(),
                secret_sha256: String::new(),
                nickname: format!("w{i}"),
                address: "127.0.0.1:5000".into(),
                status: "awake".into(),
                platform: "linux".into(),
                time_cost: 0,
                supported_task_types: vec!["sleep".into()],
                software: "Flamenco-Worker/2.5".into(),
                current_task: None,
                last_activity: None,
                current_task_status: String::new(),
                current_task_updated: None,
                status_requested: None,
                tags: setup.worker_tags[i].iter().map(|t| t.to_string()).collect(),
            };
            manager
                .store()
                .insert_worker(&worker)
                .await
                .expect("insert worker");
            workers.push(worker.id);
        }
        let settings = json!({"frames": format!("1-{TASKS}"), "time_in_seconds": 1});
        let mut submission =
            JobSubmission::new("sleep", settings.as_object().cloned().expect("an object"));
        if let Some(tag) = setup.job_tag {
            submission = submission.with_worker_tag(tag);
        }
        let job = manager
            .submit_job(submission)
            .await
            .expect("the job is accepted");
        let tasks = manager
            .job_tasks(job.id, vec![], None, 0)
            .await
            .expect("the job's tasks")
            .into_iter()
            .map(|t| t.id)
            .collect::<Vec<_>>();
        assert_eq!(tasks.len(), TASKS);
        Farm {
            manager,
            clock,
            workers,
            job: job.id,
            tasks,
            _dir: dir,
        }
    }

    /// Worker `i`, unless it was forgotten.
    async fn worker(&self, i: usize) -> Option<Worker> {
        self.manager
            .store()
            .get_worker(self.workers[i])
            .await
            .expect("read worker")
    }

    /// What the "no worker left" rule needs: the known workers, the job's blocklist (one
    /// job, one task type) and each task's failure record.
    async fn candidates(
        &self,
    ) -> (
        Vec<Worker>,
        Vec<ObjectId>,
        BTreeMap<ObjectId, Vec<ObjectId>>,
    ) {
        let store = self.manager.store();
        let workers = store.list_workers().await.expect("list workers");
        let blocked = store
            .job_blocklist(self.job)
            .await
            .expect("the blocklist")
            .into_iter()
            .map(|e| e.worker_id)
            .collect();
        let mut failed = BTreeMap::new();
        for id in &self.tasks {
            let by = store
                .task_failures(*id)
                .await
                .expect("the failure record")
                .into_iter()
                .map(|f| f.worker_id)
                .collect();
            failed.insert(*id, by);
        }
        (workers, blocked, failed)
    }

    async fn snapshot(&self) -> BTreeMap<ObjectId, Task> {
        self.manager
            .store()
            .list_tasks(&TaskQuery::default())
            .await
            .expect("list tasks")
            .into_iter()
            .map(|t| (t.id, t))
            .collect()
    }

    /// The tasks a claim must not give this worker: those whose failure record names it,
    /// (when it is on the job's blocklist for their type) the job's tasks, and (when it
    /// lacks the job's tag) the job's tasks.
    async fn excluded_for(
        &self,
        worker: &Worker,
        tasks: &BTreeMap<ObjectId, Task>,
    ) -> std::collections::BTreeSet<ObjectId> {
        let store = self.manager.store();
        let blocked = store
            .job_blocklist(self.job)
            .await
            .expect("the blocklist")
            .into_iter()
            .any(|e| e.worker_id == worker.id);
        let mut out = std::collections::BTreeSet::new();
        for (id, t) in tasks {
            let failed = store
                .task_failures(*id)
                .await
                .expect("the failure record")
                .iter()
                .any(|f| f.worker_id == worker.id);
            let untagged = t
                .worker_tag
                .as_ref()
                .is_some_and(|tag| !worker.tags.contains(tag));
            if failed || blocked || untagged {
                out.insert(*id);
            }
        }
        out
    }

    fn tick(&self) {
        self.clock.advance(chrono::Duration::seconds(1));
    }
}

/// The parts of a task the status machine is about.
fn state(t: &Task) -> (TaskStatus, Option<ObjectId>) {
    (t.status.clone(), t.worker_id)
}

/// May `w` ever take task `t` (the rule of docs/jobs.md "No worker left", written out
/// here independently of `flamenco_core::jobs::retry`)? Its status does not matter.
fn may_take(w: &Worker, t: &Task, failed_by: &[ObjectId], blocked: &[ObjectId]) -> bool {
    w.supported_task_types.contains(&t.task_type)
        && t.worker_tag.as_ref().is_none_or(|tag| w.tags.contains(tag))
        && !failed_by.contains(&w.id)
        && !blocked.contains(&w.id)
}

async fn run(setup: Setup, events: Vec<Event>) -> Result<(), TestCaseError> {
    let farm = Farm::new(&setup).await;
    for (step, ev) in events.iter().enumerate() {
        let before = farm.snapshot().await;
        let reason_before = farm
            .manager
            .job_status_reason(farm.job)
            .await
            .map_err(|e| TestCaseError::fail(format!("step {step}: {e}")))?;
        let outbox_before = farm.manager.outbox_len().await.expect("outbox length");
        farm.tick();
        let ctx = format!("step {step}: {ev:?}");
        // What the event was allowed to do, beyond the general rules.
        let mut requeue = false;
        let mut final_report: Option<(ObjectId, ObjectId)> = None;
        match ev {
            Event::Claim(w) => {
                let Some(worker) = farm.worker(*w).await else {
                    continue;
                };
                let excluded = farm.excluded_for(&worker, &before).await;
                match farm.manager.next_task(&worker, &peer()).await {
                    Ok(NextTask::Task(task)) => {
                        let prev = &before[&task.id];
                        let own =
                            prev.status == TaskStatus::Active && prev.worker_id == Some(worker.id);
                        prop_assert!(
                            own || !excluded.contains(&task.id),
                            "{ctx}: handed out a task its failure record or its job's \
                             blocklist excludes for this worker"
                        );
                        prop_assert!(
                            claimable(&prev.status) || own,
                            "{ctx}: handed out a task that was {:?} for {:?}",
                            prev.status,
                            prev.worker_id
                        );
                        let now = farm.snapshot().await;
                        prop_assert_eq!(
                            state(&now[&task.id]),
                            (TaskStatus::Active, Some(worker.id)),
                            "{}",
                            ctx
                        );
                        // Every other worker is now refused on this task.
                        for (i, other) in farm.workers.iter().enumerate() {
                            if i != *w {
                                prop_assert_eq!(
                                    check_worker_update(Some(&now[&task.id]), *other),
                                    WorkerUpdateOutcome::AssignedToOther,
                                    "{}",
                                    ctx
                                );
                            }
                        }
                    }
                    Ok(NextTask::NoTask) => {
                        prop_assert!(
                            !before
                                .values()
                                .any(|t| claimable(&t.status) && !excluded.contains(&t.id)),
                            "{ctx}: no task handed out while one was schedulable for it"
                        );
                    }
                    Ok(NextTask::StatusRequested(_)) => {}
                    Err(e) => prop_assert!(false, "{ctx}: claim failed: {e}"),
                }
            }
            Event::Update(w, t, status) => {
                let Some(worker) = farm.worker(*w).await else {
                    continue;
                };
                let id = farm.tasks[*t];
                let body = WorkerTaskUpdate {
                    task_status: status.map(str::to_string),
                    activity: Some(format!("step {step}")),
                    ..WorkerTaskUpdate::default()
                };
                let valid =
                    status.is_none_or(|s| s.is_empty() || TaskStatus::parse_known(s).is_ok());
                let result = farm.manager.task_update(&worker, id, body, &peer()).await;
                let prev = &before[&id];
                match &result {
                    Ok(()) => {
                        prop_assert!(valid, "{ctx}: invalid status accepted");
                        prop_assert!(
                            prev.worker_id.is_none() || prev.worker_id == Some(worker.id),
                            "{ctx}: accepted an update from a worker the task is not assigned to"
                        );
                        if prev.status.is_cancel() {
                            // Last words: its own worker's log and activity are kept, the
                            // status is not (docs/worker-api.md).
                            prop_assert_eq!(
                                prev.worker_id,
                                Some(worker.id),
                                "{}: last words accepted from another worker",
                                ctx
                            );
                            let after = farm.snapshot().await;
                            prop_assert_eq!(
                                &after[&id].status,
                                &prev.status,
                                "{}: last words changed the status",
                                ctx
                            );
                        } else if status
                            .is_some_and(|s| TaskStatus::parse_known(s).is_ok_and(|s| s.is_final()))
                        {
                            final_report = Some((id, worker.id));
                        }
                    }
                    Err(ApiError::BadRequest(msg)) => {
                        prop_assert!(!valid, "{ctx}: valid update refused: {msg}");
                    }
                    Err(ApiError::Conflict(_)) => {
                        prop_assert!(
                            prev.worker_id.is_some_and(|o| o != worker.id)
                                || (prev.status.is_cancel() && prev.worker_id != Some(worker.id)),
                            "{ctx}: update refused with 409 for a {:?} task of {:?}",
                            prev.status,
                            prev.worker_id
                        );
                    }
                    Err(e) => prop_assert!(false, "{ctx}: unexpected error {e}"),
                }
                if result.is_err() {
                    let after = farm.snapshot().await;
                    let changed: Vec<_> = before
                        .iter()
                        .filter(|(id, t)| state(t) != state(&after[id]))
                        .map(|(id, _)| id)
                        .collect();
                    prop_assert!(
                        changed.is_empty(),
                        "{ctx}: a refused update changed {changed:?}"
                    );
                    let outbox = farm.manager.outbox_len().await.expect("outbox length");
                    prop_assert_eq!(
                        outbox,
                        outbox_before,
                        "{}: a refused update was queued",
                        ctx
                    );
                }
            }
            Event::MayIRun(w, t) => {
                let Some(worker) = farm.worker(*w).await else {
                    continue;
                };
                let id = farm.tasks[*t];
                let answer = farm
                    .manager
                    .may_i_run(&worker, id, &peer())
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{ctx}: {e}")))?;
                let prev = &before[&id];
                if answer.may_keep_running {
                    prop_assert!(
                        prev.status.is_runnable() && prev.worker_id.is_none_or(|o| o == worker.id),
                        "{ctx}: may keep running a {:?} task of {:?}",
                        prev.status,
                        prev.worker_id
                    );
                }
            }
            Event::Return(w, t) => {
                let Some(worker) = farm.worker(*w).await else {
                    continue;
                };
                let _ = farm.manager.return_task(&worker, farm.tasks[*t]).await;
            }
            Event::SignOff(w) => {
                let Some(worker) = farm.worker(*w).await else {
                    continue;
                };
                farm.manager
                    .sign_off(&worker)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{ctx}: {e}")))?;
            }
            Event::Timeout => {
                farm.clock.advance(
                    chrono::Duration::from_std(TIMEOUT).expect("fits")
                        + chrono::Duration::seconds(1),
                );
                farm.manager
                    .check_timeouts_now()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{ctx}: {e}")))?;
            }
            Event::ServerCancel(t) => {
                let now: DateTime<Utc> = farm.manager.now();
                farm.manager
                    .store()
                    .apply_upstream_cancels(&[farm.tasks[*t]], now)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{ctx}: {e}")))?;
            }
            Event::AdminCancel => {
                let _ = farm.manager.cancel_job(farm.job).await;
            }
            Event::AdminRequeue => {
                requeue = true;
                let _ = farm.manager.requeue_job(farm.job).await;
            }
            Event::Consume => {
                farm.manager
                    .drain_outbox_to_jobs()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{ctx}: {e}")))?;
            }
            Event::Tag(w, tag, add) => {
                let tags = vec![tag.to_string()];
                let (add, remove) = if *add { (tags, vec![]) } else { (vec![], tags) };
                let result = farm
                    .manager
                    .tag_workers(&[farm.workers[*w]], &add, &remove)
                    .await;
                let known = before_known(&farm, *w).await;
                prop_assert_eq!(result.is_ok(), known, "{}: tagging {:?}", ctx, result);
            }
            Event::Forget(w) => {
                let _ = farm.manager.forget_worker(farm.workers[*w]).await;
            }
            Event::Stranded => {
                let (workers, blocked, failed) = farm.candidates().await;
                let stranded = farm
                    .manager
                    .store()
                    .fail_stranded_tasks(farm.manager.now())
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{ctx}: {e}")))?;
                for s in &stranded {
                    let t = &before[&s.task_id];
                    prop_assert!(
                        !workers
                            .iter()
                            .any(|w| may_take(w, t, &failed[&s.task_id], &blocked)),
                        "{ctx}: task {} failed as stranded although a worker may take it: {}",
                        s.task_id,
                        s.reason
                    );
                }
            }
        }
        // A job marked stranded just now: some task of it no known worker may take.
        let reason = farm
            .manager
            .job_status_reason(farm.job)
            .await
            .map_err(|e| TestCaseError::fail(format!("{ctx}: {e}")))?;
        if reason.is_some() && reason != reason_before {
            let (workers, blocked, failed) = farm.candidates().await;
            let tasks_now = farm.snapshot().await;
            prop_assert!(
                tasks_now.values().any(|t| !workers.iter().any(|w| may_take(
                    w,
                    t,
                    &failed[&t.id],
                    &blocked
                ))),
                "{ctx}: the job was marked stranded ({reason:?}) while every task of it \
                 may be taken by a worker"
            );
        }

        let after = farm.snapshot().await;
        prop_assert_eq!(after.len(), TASKS, "{}: tasks appeared or vanished", ctx);
        for (id, now) in &after {
            let prev = &before[id];
            if now.status == TaskStatus::Active {
                prop_assert!(
                    now.worker_id.is_some(),
                    "{ctx}: active task {id} has no worker"
                );
            }
            if prev.status.is_final() && now.status != prev.status && !requeue {
                let own_final_report = final_report
                    .is_some_and(|(task, worker)| task == *id && now.worker_id == Some(worker))
                    && now.status.is_final()
                    && prev.status != TaskStatus::Canceled;
                prop_assert!(
                    own_final_report,
                    "{ctx}: task {id} left final status {:?} for {:?} without a re-queue",
                    prev.status,
                    now.status
                );
            }
        }
    }
    // The maintenance check and the consumer, then: nothing waits for ever for a worker
    // that cannot come (none known has the type and the tag outside the failure record and
    // the blocklist), and every job marked stranded is failed.
    let (workers, blocked, failed) = farm.candidates().await;
    let before = farm.snapshot().await;
    let stranded = farm
        .manager
        .store()
        .fail_stranded_tasks(farm.manager.now())
        .await
        .map_err(|e| TestCaseError::fail(format!("the stranded check: {e}")))?;
    for s in &stranded {
        let t = &before[&s.task_id];
        prop_assert!(
            !workers
                .iter()
                .any(|w| may_take(w, t, &failed[&s.task_id], &blocked)),
            "task {} failed as stranded although a worker may take it: {} (events {events:?})",
            s.task_id,
            s.reason
        );
    }
    farm.manager
        .drain_outbox_to_jobs()
        .await
        .map_err(|e| TestCaseError::fail(format!("the last consume: {e}")))?;
    let after = farm.snapshot().await;
    let job = farm
        .manager
        .store()
        .get_job(farm.job)
        .await
        .expect("read the job")
        .expect("the job exists");
    let reason = farm
        .manager
        .job_status_reason(farm.job)
        .await
        .expect("the reason");
    if !stranded.is_empty() {
        prop_assert!(
            job.status.is_final(),
            "the job stays {:?} after a stranded task (events {events:?})",
            job.status
        );
    }
    if let Some(reason) = &reason {
        prop_assert!(
            job.status.is_final() || job.status == flamenco_core::model::JobStatus::CancelRequested,
            "the job is {:?} with a stranded reason {reason:?} (events {events:?})",
            job.status
        );
    }
    for (id, t) in &after {
        if !claimable(&t.status) {
            continue;
        }
        let failed_by = &failed[id];
        if failed_by.is_empty() && blocked.is_empty() && t.worker_tag.is_none() {
            continue; // nothing narrowed it: it waits for workers like any queued task
        }
        let someone = workers.iter().any(|w| may_take(w, t, failed_by, &blocked));
        prop_assert!(
            someone,
            "task {id} stays {:?} although no known worker may take it (tag {:?}, failed by \
             {failed_by:?}, blocklisted {blocked:?}, workers {:?}, events {events:?})",
            t.status,
            t.worker_tag,
            workers.iter().map(|w| (w.id, &w.tags)).collect::<Vec<_>>()
        );
    }
    Ok(())
}

/// Was worker `i` still known (not forgotten) when the event ran?
async fn before_known(farm: &Farm, i: usize) -> bool {
    farm.worker(i).await.is_some()
}

/// May a claim take a task in this status (`soft-failed` too: retries)?
fn claimable(status: &TaskStatus) -> bool {
    status.is_schedulable() || *status == TaskStatus::SoftFailed
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn no_event_sequence_breaks_the_status_machine(
        setup in setup(),
        events in prop::collection::vec(event(), 1..30),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(run(setup, events))?;
    }

    #[test]
    fn pure_rules_keep_final_statuses(
        current in prop::sample::select(TaskStatus::KNOWN.to_vec()),
        new in prop::sample::select(TaskStatus::KNOWN.to_vec()),
    ) {
        match local_status_after(&current, &new) {
            Some(s) => {
                prop_assert_eq!(&s, &new);
                // Out of a final status (or cancel-requested) only into a final one.
                if current.is_final() || current == TaskStatus::CancelRequested {
                    prop_assert!(new.is_final());
                }
            }
            None => prop_assert!(
                ((current.is_final() || current == TaskStatus::CancelRequested) && !new.is_final())
                    // A stopped duplicate run's `canceled` leaves `completed` alone.
                    || (current == TaskStatus::Completed && new == TaskStatus::Canceled)
            ),
        }
    }

    #[test]
    fn pure_rules_one_worker_per_task(
        status in prop::sample::select(TaskStatus::KNOWN.to_vec()),
        owner in prop::option::of(0usize..3),
        asking in 0usize..3,
    ) {
        let ids: Vec<ObjectId> = (0..3).map(|_| ObjectId::new()).collect();
        let mut task = Task::new("t", "sleep", vec![]);
        task.status = status.clone();
        task.worker_id = owner.map(|o| ids[o]);
        let outcome = check_worker_update(Some(&task), ids[asking]);
        let may = flamenco_core::updates::MayIRun::decide(Some(&task), ids[asking]);
        if owner.is_some_and(|o| o != asking) {
            prop_assert_eq!(outcome, WorkerUpdateOutcome::AssignedToOther);
            prop_assert_eq!(may, flamenco_core::updates::MayIRun::Reassigned);
        } else if status.is_cancel() && owner == Some(asking) {
            // The last words of its own canceled task are kept (log, activity).
            prop_assert_eq!(outcome, WorkerUpdateOutcome::LastWords(status));
        } else if status.is_cancel() {
            prop_assert_eq!(outcome, WorkerUpdateOutcome::NotRunnable(status));
        } else {
            prop_assert_eq!(outcome, WorkerUpdateOutcome::Applied);
        }
    }
}
