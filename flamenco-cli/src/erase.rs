//! `flamenco cleanslate` and `flamenco purge-updates`: erase cached tasks (with the jobs
//! they belong to, in standalone mode, and the download watermark), or the task-update
//! outbox. Both show counts first, ask for
//! confirmation on a terminal (`--yes` for scripts), and delete in batches with a
//! progress bar, so they are safe while a daemon runs.

use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::commands::open;
use crate::Cli;

#[derive(Args, Debug)]
pub struct EraseArgs {
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// Ask "proceed?" on a terminal; without one, `--yes` is required.
fn confirm(question: &str, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("{question} Refusing without confirmation: stdin is not a terminal; pass --yes to proceed");
    }
    out!("{question} Type 'yes' to proceed: ")?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        bail!("aborted; nothing was deleted");
    }
    Ok(())
}

fn progress(total: u64) -> ProgressBar {
    // A bar only when it is worth one and someone watches.
    if total < 5_000 || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

pub async fn cleanslate(cli: &Cli, args: &EraseArgs) -> Result<()> {
    let manager = open(cli).await?;
    let result = cleanslate_with(&manager, args).await;
    manager.close().await?;
    result
}

async fn job_count(manager: &flamenco_core::Manager) -> Result<usize> {
    Ok(manager
        .list_jobs(&flamenco_core::store::JobQuery::default())
        .await?
        .len())
}

async fn cleanslate_with(manager: &flamenco_core::Manager, args: &EraseArgs) -> Result<()> {
    let counts = manager.task_counts().await?;
    let total: u64 = counts.values().sum();
    let jobs_before = job_count(manager).await?;
    if total == 0 {
        outln!("no cached tasks; nothing to erase")?;
        manager
            .store()
            .set_setting(flamenco_core::store::WATERMARK_SETTING, None)
            .await?;
        return Ok(());
    }
    outln!("cached tasks: {total}")?;
    for (status, n) in &counts {
        outln!("  {status:<20} {n}")?;
    }
    if jobs_before > 0 {
        outln!("jobs: {jobs_before}")?;
    }
    confirm(
        &format!(
            "Erase all {total} cached tasks{} and the download watermark? Workers and the \
             task-update outbox are kept.",
            if jobs_before > 0 {
                format!(", with the {jobs_before} job(s) they belong to,")
            } else {
                String::new()
            }
        ),
        args.yes,
    )?;
    let bar = progress(total);
    let deleted = manager.clean_slate(|n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    let jobs_erased = jobs_before.saturating_sub(job_count(manager).await?);
    outln!("erased {deleted} tasks and {jobs_erased} jobs")?;
    Ok(())
}

pub async fn purge_updates(cli: &Cli, args: &EraseArgs) -> Result<()> {
    let manager = open(cli).await?;
    let total = manager.outbox_len().await?;
    if total == 0 {
        outln!("the task-update outbox is empty; nothing to erase")?;
        manager.close().await?;
        return Ok(());
    }
    outln!("task updates waiting in the outbox: {total}")?;
    confirm(
        &format!("Erase all {total} queued task updates? The job source will never see them."),
        args.yes,
    )?;
    let bar = progress(total);
    let deleted = manager.purge_outbox(|n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    outln!("erased {deleted} task updates")?;
    manager.close().await?;
    Ok(())
}
