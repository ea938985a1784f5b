//! `flamenco cleanslate` and `flamenco purge-updates`: erase cached tasks (and the
//! download watermark), or the task-update outbox. Both show counts first, ask for
//! confirmation on a terminal (`--yes` for scripts), and delete in batches with a
//! progress bar, so they are safe while a daemon runs.

use std::io::{BufRead, IsTerminal, Write};

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
    print!("{question} Type 'yes' to proceed: ");
    std::io::stdout().flush()?;
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
    let counts = manager.task_counts().await?;
    let total: u64 = counts.values().sum();
    if total == 0 {
        println!("no cached tasks; nothing to erase");
        manager
            .store()
            .set_setting(flamenco_core::store::WATERMARK_SETTING, None)
            .await?;
        manager.close().await?;
        return Ok(());
    }
    println!("cached tasks: {total}");
    for (status, n) in &counts {
        println!("  {status:<20} {n}");
    }
    confirm(
        &format!(
            "Erase all {total} cached tasks and the download watermark? Workers and the \
             task-update outbox are kept."
        ),
        args.yes,
    )?;
    let bar = progress(total);
    let deleted = manager.clean_slate(|n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    println!("erased {deleted} tasks");
    manager.close().await?;
    Ok(())
}

pub async fn purge_updates(cli: &Cli, args: &EraseArgs) -> Result<()> {
    let manager = open(cli).await?;
    let total = manager.outbox_len().await?;
    if total == 0 {
        println!("the task-update outbox is empty; nothing to erase");
        manager.close().await?;
        return Ok(());
    }
    println!("task updates waiting in the outbox: {total}");
    confirm(
        &format!("Erase all {total} queued task updates? The job source will never see them."),
        args.yes,
    )?;
    let bar = progress(total);
    let deleted = manager.purge_outbox(|n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    println!("erased {deleted} task updates");
    manager.close().await?;
    Ok(())
}
