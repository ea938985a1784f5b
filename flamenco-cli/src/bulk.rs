//! Bulk actions on the command line (`flamenco job cancel A B C`, `flamenco job requeue
//! --status failed`, `flamenco worker sleep --all`, …): which objects the arguments name,
//! and the per-object summary. The work is `Manager::bulk_jobs` / `Manager::bulk_workers`,
//! one store operation per object, as for the HTTP route.

use anyhow::{anyhow, bail, Result};
use clap::Args;
use flamenco_core::bulk::{
    parse_worker_status, BulkReport, JobSelection, Outcome, WorkerSelection,
};
use flamenco_core::model::JobStatus;
use flamenco_core::Manager;

use crate::ids::{self, Kind};
use crate::output::json_line;

/// Jobs named by ids or by status.
#[derive(Args, Debug, Clone)]
pub struct JobTargets {
    /// The jobs: full ids or the short ids `flamenco job list` shows (one or more).
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// Instead of ids: every job with this status (repeatable, e.g. --status failed).
    #[arg(long, value_name = "STATUS")]
    pub status: Vec<String>,
}

impl JobTargets {
    /// The one id, when exactly one is given and no filter (the single-job form, with its
    /// own output).
    pub fn single(&self) -> Option<&str> {
        match (self.ids.as_slice(), self.status.is_empty()) {
            ([one], true) => Some(one),
            _ => None,
        }
    }

    /// Checked before the store is opened: ids or `--status`, not both, not neither.
    pub fn check(&self) -> Result<()> {
        match (self.ids.is_empty(), self.status.is_empty()) {
            (true, true) => bail!("name the jobs: give their ids, or --status STATUS"),
            (false, false) => bail!("give job ids or --status, not both"),
            _ => {}
        }
        for raw in &self.ids {
            ids::parse("job id", raw)?;
        }
        for s in &self.status {
            JobStatus::parse_known(s.trim()).map_err(|e| anyhow!("--status: {e}"))?;
        }
        Ok(())
    }

    /// The selection, short ids resolved (every one before anything is done).
    pub async fn selection(&self, manager: &Manager) -> Result<JobSelection> {
        if !self.status.is_empty() {
            let statuses = self
                .status
                .iter()
                .map(|s| JobStatus::parse_known(s.trim()).map_err(|e| anyhow!("--status: {e}")))
                .collect::<Result<Vec<_>>>()?;
            return Ok(JobSelection::Statuses(statuses));
        }
        Ok(JobSelection::Ids(
            ids::resolve_many(manager, Kind::Job, "job id", &self.ids).await?,
        ))
    }
}

/// Workers named by ids, by status, or all of them.
#[derive(Args, Debug, Clone)]
pub struct WorkerTargets {
    /// The workers: full ids or the short ids `flamenco worker list` shows (one or more).
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// Instead of ids: every worker with this status (repeatable: awake, asleep, timeout,
    /// down, offline, registered, …).
    #[arg(long, value_name = "STATUS")]
    pub status: Vec<String>,
    /// Instead of ids: every worker.
    #[arg(long)]
    pub all: bool,
}

impl WorkerTargets {
    /// The one id, when exactly one is given and no filter.
    pub fn single(&self) -> Option<&str> {
        match (self.ids.as_slice(), self.status.is_empty(), self.all) {
            ([one], true, false) => Some(one),
            _ => None,
        }
    }

    /// Checked before the store is opened: exactly one of ids, `--status`, `--all`.
    pub fn check(&self) -> Result<()> {
        let given = [!self.ids.is_empty(), !self.status.is_empty(), self.all]
            .iter()
            .filter(|g| **g)
            .count();
        match given {
            0 => bail!("name the workers: give their ids, --status STATUS or --all"),
            1 => {}
            _ => bail!("give worker ids, --status or --all: only one of them"),
        }
        for raw in &self.ids {
            ids::parse("worker id", raw)?;
        }
        for s in &self.status {
            parse_worker_status(s).map_err(|e| anyhow!("--status: {e}"))?;
        }
        Ok(())
    }

    pub async fn selection(&self, manager: &Manager) -> Result<WorkerSelection> {
        if self.all {
            return Ok(WorkerSelection::All);
        }
        if !self.status.is_empty() {
            let statuses = self
                .status
                .iter()
                .map(|s| parse_worker_status(s).map_err(|e| anyhow!("--status: {e}")))
                .collect::<Result<Vec<_>>>()?;
            return Ok(WorkerSelection::Statuses(statuses));
        }
        Ok(WorkerSelection::Ids(
            ids::resolve_many(manager, Kind::Worker, "worker id", &self.ids).await?,
        ))
    }
}

/// Print the report: with `json` one JSON document on one line, else one line per
/// object and a summary on stderr. An error (exit status 1) when any object was not done.
pub fn finish(report: &BulkReport, json: bool, kind: &str) -> Result<()> {
    if json {
        json_line(report)?;
    } else {
        for r in &report.results {
            let outcome = match r.outcome {
                Outcome::Done => "done",
                Outcome::Refused => "refused",
                Outcome::NotFound => "not found",
                Outcome::Error => "error",
                Outcome::Skipped => "skipped",
            };
            let mut line = format!("{}  {outcome}", r.id);
            if let Some(s) = &r.status {
                line.push_str(&format!(
                    "  {}",
                    if s.is_empty() { "registered" } else { s }
                ));
            }
            if let Some(n) = r.tasks {
                line.push_str(&format!("  {n} task(s)"));
            }
            if let Some(m) = &r.message {
                line.push_str(&format!(": {m}"));
            }
            outln!("{line}")?;
        }
        eprintln!(
            "{}: {} {kind}(s), {} done, {} refused, {} not found, {} error(s)",
            report.action,
            report.results.len(),
            report.done,
            report.refused,
            report.not_found,
            report.errors
        );
    }
    if report.all_done() {
        Ok(())
    } else {
        Err(anyhow!(
            "{action}: {} of {} {kind}(s) not done (see {})",
            report.results.len() - report.done,
            report.results.len(),
            if json { "the JSON" } else { "the lines above" },
            action = report.action,
        ))
    }
}
