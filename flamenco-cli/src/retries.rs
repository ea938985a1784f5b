//! `flamenco task show ID`: one task with its failure record (retries), and
//! `flamenco job blocklist JOB` / `flamenco job unblock JOB WORKER [--type T]`: a job's
//! blocklist, listed and edited (docs/cli.md, docs/jobs.md "Retries" and "Blocklist").
//! Like the other commands they open the store directly, through the SDK's
//! [`flamenco_core::Manager`].

use anyhow::{Context, Result};
use chrono::Utc;
use flamenco_core::Manager;
use serde_json::json;

use crate::commands::open;
use crate::ids::{self, Kind};
use crate::output::{ago, json_doc, json_line, table};
use crate::Cli;

/// `flamenco task show ID`.
pub async fn task_show(cli: &Cli, raw: &str) -> Result<()> {
    ids::parse("task id", raw)?;
    let manager = open(cli).await?;
    let result = async {
        let id = ids::resolve(&manager, Kind::Task, "task id", raw).await?;
        let task = manager
            .get_task(id)
            .await?
            .with_context(|| format!("task {id} is unknown"))?;
        let failures = manager.task_failures(id).await?;
        anyhow::Ok((task, failures))
    }
    .await;
    manager.close().await?;
    let (task, failures) = result?;
    if cli.json {
        let mut value = serde_json::to_value(&task)?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("failures".into(), json!(failures));
            if let Some(at) = task.last_updated {
                obj.insert("last_updated".into(), json!(at));
            }
        }
        return json_line(&value);
    }
    let now = Utc::now();
    outln!("task      {}", task.id)?;
    outln!("name      {}", task.name)?;
    outln!(
        "job       {}",
        task.job
            .map(|j| j.to_string())
            .unwrap_or_else(|| "-".into())
    )?;
    outln!("type      {}", task.task_type)?;
    outln!("status    {}", task.status)?;
    outln!(
        "worker    {}",
        if task.worker.is_empty() {
            "-"
        } else {
            &task.worker
        }
    )?;
    outln!("activity  {}", task.activity)?;
    outln!("updated   {}", ago(task.last_updated, now))?;
    if failures.is_empty() {
        return outln!("failures  none");
    }
    let mut out = table(
        &["#", "worker", "worker id", "failed at"],
        &["#", "worker id", "failed at"],
    );
    for (i, f) in failures.iter().enumerate() {
        out.add_row(vec![
            (i + 1).to_string(),
            if f.worker.is_empty() {
                "-".into()
            } else {
                f.worker.clone()
            },
            f.worker_id.to_string(),
            f.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ]);
    }
    outln!(
        "failures  {} (each worker is not given the task again)",
        failures.len()
    )?;
    outln!("{out}")
}

/// `flamenco job blocklist JOB`.
pub async fn job_blocklist(cli: &Cli, raw: &str) -> Result<()> {
    ids::parse("job id", raw)?;
    let manager = open(cli).await?;
    let result = async {
        let id = ids::resolve(&manager, Kind::Job, "job id", raw).await?;
        let list = manager.job_blocklist(id).await?;
        let reason = manager.job_status_reason(id).await?;
        anyhow::Ok((id, list, reason))
    }
    .await;
    manager.close().await?;
    let (id, list, reason) = result?;
    if cli.json {
        for e in &list {
            json_line(&json!({
                "job": id,
                "task_type": e.task_type,
                "worker_id": e.worker_id,
                "worker": e.worker,
                "added": e.added,
            }))?;
        }
        return Ok(());
    }
    if let Some(reason) = reason {
        outln!("job {id} failed: {reason}")?;
    }
    if list.is_empty() {
        return outln!("job {id} has no blocklisted workers");
    }
    let mut out = table(
        &["task type", "worker", "worker id", "blocklisted"],
        &["task type", "worker id", "blocklisted"],
    );
    for e in &list {
        out.add_row(vec![
            e.task_type.clone(),
            if e.worker.is_empty() {
                "-".into()
            } else {
                e.worker.clone()
            },
            e.worker_id.to_string(),
            e.added.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ]);
    }
    outln!("{out}")
}

/// `flamenco job unblock JOB WORKER [--type T]`.
pub async fn job_unblock(
    cli: &Cli,
    job_raw: &str,
    worker_raw: &str,
    task_type: Option<&str>,
) -> Result<()> {
    ids::parse("job id", job_raw)?;
    ids::parse("worker id", worker_raw)?;
    let manager = open(cli).await?;
    let result = unblock(&manager, job_raw, worker_raw, task_type).await;
    manager.close().await?;
    let (job, worker, removed) = result?;
    if cli.json {
        return json_doc(&json!({"job": job, "worker_id": worker, "removed": removed}));
    }
    outln!(
        "worker {worker} is off the blocklist of job {job} ({removed} entr{}); it gets the job's {} again",
        if removed == 1 { "y" } else { "ies" },
        match task_type {
            Some(t) => format!("{t} tasks"),
            None => "tasks".into(),
        }
    )
}

async fn unblock(
    manager: &Manager,
    job_raw: &str,
    worker_raw: &str,
    task_type: Option<&str>,
) -> Result<(
    flamenco_core::model::ObjectId,
    flamenco_core::model::ObjectId,
    u64,
)> {
    let job = ids::resolve(manager, Kind::Job, "job id", job_raw).await?;
    let worker = ids::resolve(manager, Kind::Worker, "worker id", worker_raw).await?;
    let removed = manager.unblock_worker(job, worker, task_type).await?;
    Ok((job, worker, removed))
}
