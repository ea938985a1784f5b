//! Fuzz job submission: decode the body as `POST /api/jobs` does (a JSON object into a
//! `JobSubmission`), then validate and compile its settings with the built-in job types
//! (the submission's own type when it names one, else every built-in type, so the fuzzer
//! need not find the names). Invariants for a job that compiles: at least one task, no
//! more than `max_tasks_per_job`, valid parents, and every task has commands.
#![no_main]

use chrono::DateTime;
use flamenco_core::jobs::{build_tasks, CompileContext, JobSubmission, JobTypes};
use flamenco_core::model::{Job, JobStatus, ObjectId, TaskCounts};
use libfuzzer_sys::fuzz_target;

/// Small, so that a huge frame range is refused quickly instead of compiled.
const MAX_TASKS: usize = 1000;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if !value.is_object() {
        return;
    }
    let Ok(submission) = serde_json::from_value::<JobSubmission>(value) else {
        return;
    };
    let types = JobTypes::builtin();
    let names = match types.get(submission.job_type.trim()) {
        Some(_) => vec![submission.job_type.trim().to_string()],
        None => types.names(),
    };
    let now = DateTime::from_timestamp(1_700_000_000, 0).expect("a valid time");
    let ctx = CompileContext {
        max_tasks: MAX_TASKS,
    };
    for name in names {
        let job_type = types.get(&name).expect("a listed type");
        let job = Job {
            id: ObjectId::new(),
            name: "fuzz".into(),
            job_type: name.clone(),
            priority: 50,
            status: JobStatus::Queued,
            settings: submission.settings.clone(),
            created: now,
            updated: now,
            task_counts: TaskCounts::default(),
            worker_tag: None,
        };
        let Ok(specs) = job_type.compile(&job, &ctx) else {
            continue;
        };
        assert!(!specs.is_empty(), "{name} compiled no task");
        assert!(
            specs.len() <= MAX_TASKS,
            "{name} made {} tasks",
            specs.len()
        );
        for spec in &specs {
            assert!(
                !spec.commands.is_empty(),
                "{name}: task {:?} has no command",
                spec.name
            );
            assert!(!spec.task_type.is_empty());
        }
        let tasks = build_tasks(&job, specs).expect("built-in types make valid parents");
        assert!(tasks.iter().all(|t| t.job == Some(job.id)));
    }
});
