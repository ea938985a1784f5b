//! `flamenco job`: submit jobs to this Manager (standalone mode), list, show, cancel,
//! re-queue and delete them. Like every command but `serve`, it works on the store
//! directly through `flamenco-core`; a running daemon picks submitted jobs up at once (the
//! tasks are in the shared store).

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use flamenco_core::bulk::JobBulkAction;
use flamenco_core::jobs::JobSubmission;
use flamenco_core::model::{Job, JobStatus, TaskStatus};
use flamenco_core::store::JobQuery;
use serde_json::{Map, Value};

use crate::bulk::JobTargets;
use crate::commands::open;
use crate::ids::{self, Kind};
use crate::output::{ago, cut, json_doc, json_line, short_id, table};
use crate::Cli;

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Submit a job: compile it into tasks with its job type and queue them.
    ///
    /// Example: flamenco job submit sleep --set frames=1-20 --set chunk_size=5 --set time_in_seconds=1
    Submit {
        /// The job type (`flamenco job types` lists them). May come from --file instead.
        job_type: Option<String>,
        /// A setting, KEY=VALUE (repeatable). VALUE is read as a YAML scalar, so numbers
        /// become numbers (`chunk_size=5`); quote to keep text (`name='007'`).
        #[arg(long = "set", short = 's', value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// A YAML or JSON file with the job: `name`, `job_type`, `priority`, `settings`.
        /// The command line's values win over the file's.
        #[arg(long, short = 'f', value_name = "PATH")]
        file: Option<PathBuf>,
        /// The job's name (default: the job type).
        #[arg(long)]
        name: Option<String>,
        /// 1–100 (default 50); higher is scheduled first.
        #[arg(long)]
        priority: Option<i32>,
        /// Only workers with this tag get the job's tasks (`flamenco worker tag`); the
        /// file's `worker_tag` otherwise; none: any worker.
        #[arg(long, value_name = "TAG")]
        tag: Option<String>,
    },
    /// List jobs, newest first, as a table (or JSON lines with --json). The table shows
    /// short ids (the last 8 characters), which the other commands accept.
    List {
        /// Only jobs with this status (repeatable).
        #[arg(long)]
        status: Vec<String>,
        /// At most this many jobs.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Skip this many jobs first (paging).
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// Show one job in full, with its task counts.
    Show {
        /// The job id.
        id: String,
    },
    /// Cancel jobs: queued tasks are canceled, running ones stop at their next may-i-run.
    /// Several ids, or --status, act on many jobs (one line each; exit status 1 when any
    /// job was refused or unknown).
    Cancel {
        #[command(flatten)]
        jobs: JobTargets,
    },
    /// Re-queue jobs' failed and canceled tasks (every task of a completed job). Several
    /// ids or --status (e.g. --status failed) for many jobs.
    Requeue {
        #[command(flatten)]
        jobs: JobTargets,
    },
    /// Delete finished jobs (completed, failed or canceled) and their tasks. Several ids
    /// or --status for many jobs.
    Delete {
        #[command(flatten)]
        jobs: JobTargets,
    },
    /// Set jobs' priority (1–100; higher is scheduled first), their queued tasks' too.
    ///
    /// Example: flamenco job priority 90 a1b2c3d4 e5f6a7b8, or --status queued
    Priority {
        /// The new priority, 1 to 100.
        priority: i32,
        #[command(flatten)]
        jobs: JobTargets,
    },
    /// List the job types jobs can be submitted with.
    Types,
    /// List a job's blocklist: the workers that get none of its tasks of a type because
    /// they failed too many of them (and why the job failed, when no worker was left).
    Blocklist {
        /// The job id (or short id).
        id: String,
    },
    /// Take a worker off a job's blocklist, so it gets the job's tasks again.
    ///
    /// Example: flamenco job unblock a1b2c3d4 e5f6a7b8 --type blender
    Unblock {
        /// The job id (or short id).
        job: String,
        /// The worker id (or short id).
        worker: String,
        /// Only for this task type (default: every type the worker is blocklisted for).
        #[arg(long = "type", value_name = "TASK_TYPE")]
        task_type: Option<String>,
    },
}

/// `KEY=VALUE` → the key and the value read as a YAML scalar (or flow collection).
pub fn parse_setting(arg: &str) -> Result<(String, Value)> {
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| anyhow!("--set {arg:?}: expected KEY=VALUE, e.g. --set frames=1-10"))?;
    let key = key.trim();
    if key.is_empty() {
        bail!("--set {arg:?}: the setting name is empty");
    }
    if raw.trim().is_empty() {
        return Ok((key.to_string(), Value::String(String::new())));
    }
    let yaml: serde_yaml::Value = serde_yaml::from_str(raw)
        .map_err(|e| anyhow!("--set {key}: {raw:?} is not a valid value: {e}"))?;
    let value = serde_json::to_value(&yaml)
        .map_err(|e| anyhow!("--set {key}: {raw:?} cannot be used as a setting: {e}"))?;
    Ok((key.to_string(), value))
}

/// The submission from --file, the positional type and the options.
fn submission(
    job_type: Option<&str>,
    set: &[String],
    file: Option<&PathBuf>,
    name: Option<&str>,
    priority: Option<i32>,
    tag: Option<&str>,
) -> Result<JobSubmission> {
    let mut sub = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the job file {}", path.display()))?;
            let yaml: serde_yaml::Value =
                serde_yaml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            let value =
                serde_json::to_value(&yaml).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            serde_json::from_value::<JobSubmission>(value).map_err(|e| {
                anyhow!(
                    "{}: {e} (a job file has `job_type`, `settings`, and optionally `name` and `priority`)",
                    path.display()
                )
            })?
        }
        None => JobSubmission::default(),
    };
    if let Some(t) = job_type {
        sub.job_type = t.to_string();
    }
    if sub.job_type.trim().is_empty() {
        bail!("no job type given: name one (`flamenco job submit sleep …`) or put `job_type` in --file; `flamenco job types` lists them");
    }
    let mut settings: Map<String, Value> = std::mem::take(&mut sub.settings);
    for arg in set {
        let (key, value) = parse_setting(arg)?;
        settings.insert(key, value);
    }
    sub.settings = settings;
    if let Some(n) = name {
        sub.name = Some(n.to_string());
    }
    if let Some(p) = priority {
        sub.priority = Some(Value::from(p));
    }
    if let Some(t) = tag {
        // Checked here too, before the store is opened.
        flamenco_core::tags::check_job_tag(Some(t)).map_err(|e| anyhow!("--tag: {e}"))?;
        sub.worker_tag = Some(t.to_string());
    }
    Ok(sub)
}

/// "3/4 completed", plus the other non-zero counts.
fn progress(job: &Job) -> String {
    let c = &job.task_counts;
    let mut out = format!("{}/{} completed", c.get(&TaskStatus::Completed), c.total());
    for (status, n) in &c.0 {
        if status != TaskStatus::Completed.as_str() && *n > 0 {
            out.push_str(&format!(", {n} {status}"));
        }
    }
    out
}

pub async fn run(cli: &Cli, cmd: &JobCommand) -> Result<()> {
    let json = cli.json;
    match cmd {
        JobCommand::Submit {
            job_type,
            set,
            file,
            name,
            priority,
            tag,
        } => {
            let sub = submission(
                job_type.as_deref(),
                set,
                file.as_ref(),
                name.as_deref(),
                *priority,
                tag.as_deref(),
            )?;
            let manager = open(cli).await?;
            let result = manager.submit_job_with_warnings(sub).await;
            manager.close().await?;
            let submitted = result?;
            let job = &submitted.job;
            if json {
                let mut value = serde_json::to_value(job)?;
                if let Some(obj) = value.as_object_mut() {
                    obj.insert("warnings".into(), submitted.warnings.clone().into());
                }
                json_doc(&value)?;
            } else {
                outln!(
                    "submitted job {} {:?} ({}): {} task(s), {}",
                    job.id,
                    job.name,
                    job.job_type,
                    job.task_counts.total(),
                    job.status
                )?;
            }
            for w in &submitted.warnings {
                eprintln!("warning: {w}");
            }
            Ok(())
        }
        JobCommand::List {
            status,
            limit,
            offset,
        } => {
            let statuses = status
                .iter()
                .map(|s| JobStatus::parse_known(s).map_err(|e| anyhow!("--status: {e}")))
                .collect::<Result<Vec<_>>>()?;
            let manager = open(cli).await?;
            let jobs = manager
                .list_jobs(&JobQuery {
                    statuses,
                    limit: Some(*limit),
                    offset: *offset,
                })
                .await;
            let now = manager.now();
            manager.close().await?;
            let jobs = jobs?;
            if json {
                for j in &jobs {
                    json_line(j)?;
                }
                return Ok(());
            }
            let mut out = table(
                &["id", "name", "type", "status", "prio", "tasks", "updated"],
                &["id", "status", "prio", "updated"],
            );
            for j in &jobs {
                out.add_row(vec![
                    short_id(&j.id),
                    cut(&j.name, 40),
                    j.job_type.clone(),
                    j.status.to_string(),
                    j.priority.to_string(),
                    progress(j),
                    ago(Some(j.updated), now),
                ]);
            }
            outln!("{out}")?;
            eprintln!(
                "{} job(s) shown (limit {limit}, offset {offset}); --json for every field",
                jobs.len()
            );
            Ok(())
        }
        JobCommand::Show { id } => {
            ids::parse("job id", id)?;
            let manager = open(cli).await?;
            let job = match ids::resolve(&manager, Kind::Job, "job id", id).await {
                Ok(id) => manager
                    .get_job(id)
                    .await
                    .map_err(anyhow::Error::from)
                    .and_then(|j| j.with_context(|| format!("job {id} is unknown"))),
                Err(e) => Err(e),
            };
            // Why the Manager failed it (no worker left), when it did.
            let reason = match &job {
                Ok(j) => manager.job_status_reason(j.id).await.unwrap_or_default(),
                Err(_) => None,
            };
            manager.close().await?;
            let job = job?;
            let mut value = serde_json::to_value(&job)?;
            if let (Some(obj), Some(reason)) = (value.as_object_mut(), reason) {
                obj.insert("status_reason".into(), reason.into());
            }
            if json {
                json_line(&value)
            } else {
                json_doc(&value)
            }
        }
        JobCommand::Cancel { jobs }
        | JobCommand::Requeue { jobs }
        | JobCommand::Delete { jobs } => {
            jobs.check()?;
            if let Some(id) = jobs.single() {
                let manager = open(cli).await?;
                let result = act(&manager, cmd, id, json).await;
                manager.close().await?;
                let text = result?;
                return outln!("{text}");
            }
            let action = match cmd {
                JobCommand::Cancel { .. } => JobBulkAction::Cancel,
                JobCommand::Requeue { .. } => JobBulkAction::Requeue,
                _ => JobBulkAction::Delete,
            };
            bulk(cli, action, jobs).await
        }
        JobCommand::Priority { priority, jobs } => {
            if !(1..=100).contains(priority) {
                bail!("priority {priority} is out of range: give an integer from 1 to 100");
            }
            jobs.check()?;
            bulk(cli, JobBulkAction::Priority(*priority), jobs).await
        }
        JobCommand::Blocklist { id } => crate::retries::job_blocklist(cli, id).await,
        JobCommand::Unblock {
            job,
            worker,
            task_type,
        } => crate::retries::job_unblock(cli, job, worker, task_type.as_deref()).await,
        JobCommand::Types => {
            let manager = open(cli).await?;
            let types = manager.job_types().describe();
            manager.close().await?;
            if json {
                for (name, description) in types {
                    json_line(&serde_json::json!({"name": name, "description": description}))?;
                }
                return Ok(());
            }
            let mut out = table(&["job type", "description"], &["job type"]);
            for (name, description) in types {
                out.add_row(vec![name, description]);
            }
            outln!("{out}")
        }
    }
}

/// A bulk action: resolve every id first, then act, then print one line per job.
async fn bulk(cli: &Cli, action: JobBulkAction, jobs: &JobTargets) -> Result<()> {
    let manager = open(cli).await?;
    let result = async {
        let selection = jobs.selection(&manager).await?;
        Ok::<_, anyhow::Error>(manager.bulk_jobs(action, &selection, None).await?)
    }
    .await;
    manager.close().await?;
    crate::bulk::finish(&result?, cli.json, "job")
}

/// Cancel, re-queue or delete: the line to print (the job as JSON with `json`).
async fn act(
    manager: &flamenco_core::Manager,
    cmd: &JobCommand,
    raw: &str,
    json: bool,
) -> Result<String> {
    let id = ids::resolve(manager, Kind::Job, "job id", raw).await?;
    Ok(match cmd {
        JobCommand::Cancel { .. } => {
            let j = manager.cancel_job(id).await?;
            if json {
                serde_json::to_string(&j)?
            } else {
                format!(
                    "job {id} is {}{}",
                    j.status,
                    if j.status == JobStatus::CancelRequested {
                        "; its running tasks stop when their workers next ask may-i-run"
                    } else {
                        ""
                    }
                )
            }
        }
        JobCommand::Requeue { .. } => {
            let j = manager.requeue_job(id).await?;
            if json {
                serde_json::to_string(&j)?
            } else {
                format!("job {id} is {} ({})", j.status, progress(&j))
            }
        }
        _ => {
            let n = manager.delete_job(id).await?;
            if json {
                serde_json::json!({"deleted_job": id, "deleted_tasks": n}).to_string()
            } else {
                format!("deleted job {id} and its {n} task(s)")
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_parse_as_yaml_scalars() {
        let cases = [
            ("frames=1-20", "frames", json!("1-20")),
            ("chunk_size=5", "chunk_size", json!(5)),
            ("time_in_seconds=0.5", "time_in_seconds", json!(0.5)),
            ("cmd=echo hello world", "cmd", json!("echo hello world")),
            ("cmd=[ls, date]", "cmd", json!(["ls", "date"])),
            ("name='007'", "name", json!("007")),
            ("format=", "format", json!("")),
            ("expr=a=b", "expr", json!("a=b")),
            ("frames=1,2,3", "frames", json!("1,2,3")),
        ];
        for (arg, key, value) in cases {
            assert_eq!(
                parse_setting(arg).unwrap(),
                (key.to_string(), value),
                "{arg}"
            );
        }
        assert!(parse_setting("frames").is_err());
        assert!(parse_setting("=5").is_err());
    }
}
