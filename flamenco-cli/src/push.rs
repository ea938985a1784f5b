//! `flamenco push` (send the outbox to the Flamenco Server now) and `flamenco queue
//! outbox` (what waits in it, and what was set aside).
//!
//! Both open the configured store directly, like every other command; `push` talks to the
//! configured Server itself, so it works whether or not the daemon runs (a push by both
//! at once only sends some updates twice, which the Server takes as the same update).

use anyhow::{bail, Context, Result};
use clap::Args;
use flamenco_core::model::TaskUpdate;
use flamenco_core::upstream::push::{push_all, PushSummary};
use flamenco_core::upstream::wire::push_body;
use flamenco_core::Manager;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::commands::open;
use crate::output::{ago, json_line, short_id, table};
use crate::Cli;

/// `flamenco push` options.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// Show what would be sent (batches and updates), and send nothing. With --json:
    /// each batch as the exact JSON body that would be sent, one per line.
    #[arg(long)]
    pub dry_run: bool,
    /// First put the set-aside updates back in the outbox, so they are tried again.
    #[arg(long)]
    pub retry_set_aside: bool,
}

/// `flamenco queue outbox` options.
#[derive(Args, Debug)]
pub struct OutboxArgs {
    /// Show at most this many waiting and this many set-aside updates. With --json: one
    /// JSON object per line (`{"state": "waiting"|"set-aside", …}`) after a summary object.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > max {
        let cut: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        line.to_string()
    }
}

fn status_of(u: &TaskUpdate) -> String {
    u.task_status
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_else(|| "-".into())
}

const NOT_UPSTREAM: &str = "not in upstream mode: set `flamenco:` (the Flamenco Server URL), `manager_id` and `manager_secret` in the configuration to push task updates";

fn require_upstream(manager: &Manager) -> Result<String> {
    match manager.upstream() {
        Some(up) => Ok(up.client().base().to_string()),
        None => bail!("{NOT_UPSTREAM}"),
    }
}

pub async fn push(cli: &Cli, args: &PushArgs) -> Result<()> {
    // Said before looking for the store: a standalone Manager has nothing to push.
    let (config, _) = crate::commands::load_config(cli)?;
    if !config.is_upstream() {
        bail!("{NOT_UPSTREAM}");
    }
    let manager = open(cli).await?;
    let result = push_with(&manager, args, cli.json).await;
    manager.close().await?;
    result
}

async fn push_with(manager: &Manager, args: &PushArgs, json: bool) -> Result<()> {
    let server = require_upstream(manager)?;
    let store = manager.store();
    let batch_size = manager.config().task_update_push_max_count.max(1) as usize;
    if args.dry_run {
        let waiting = store.outbox_peek(usize::MAX).await?;
        let aside = store.outbox_set_aside_len().await?;
        let batches = waiting.len().div_ceil(batch_size);
        if json {
            for batch in waiting.chunks(batch_size) {
                outln!("{}", String::from_utf8_lossy(&push_body(batch)))?;
            }
            if waiting.is_empty() {
                outln!("[]")?;
            }
            return Ok(());
        }
        outln!(
            "would push {} update(s) in {} batch(es) of at most {batch_size} to {server}{}",
            waiting.len(),
            batches.max(1),
            if waiting.is_empty() {
                " (an empty push, to learn about cancellations)"
            } else {
                ""
            }
        )?;
        if !waiting.is_empty() {
            let mut t = table(
                &["batch", "update", "task", "status", "activity", "log lines"],
                &["batch", "update", "task", "status"],
            );
            for (i, u) in waiting.iter().enumerate() {
                t.add_row(vec![
                    (i / batch_size + 1).to_string(),
                    short_id(&u.id),
                    short_id(&u.task_id),
                    status_of(u),
                    first_line(&u.activity, 50),
                    u.log.lines().count().to_string(),
                ]);
            }
            outln!("{t}")?;
        }
        if aside > 0 {
            outln!(
                "{aside} set-aside update(s) would not be sent (see `flamenco queue outbox`; add --retry-set-aside to send them too)"
            )?;
        }
        return Ok(());
    }

    if args.retry_set_aside {
        let n = store.outbox_retry_set_aside().await?;
        if n > 0 {
            eprintln!("put {n} set-aside update(s) back in the outbox");
        }
    }
    let total = store.outbox_len().await?;
    let bar = if total as usize > batch_size {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} pushing [{bar:40}] {pos}/{len} updates ({per_sec}, {eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let result = push_all(manager, |s: &PushSummary| {
        bar.set_position(total.saturating_sub(s.remaining).min(total));
    })
    .await;
    bar.finish_and_clear();
    let summary = result.with_context(|| format!("pushing to the Flamenco Server at {server}"))?;
    let aside_now = store.outbox_set_aside_len().await?;
    if json {
        json_line(&json!({
            "server": server, "sent": summary.sent, "acknowledged": summary.acknowledged,
            "set_aside": summary.set_aside, "canceled": summary.canceled,
            "cancel_requested": summary.cancel_requested, "remaining": summary.remaining,
            "set_aside_in_all": aside_now,
        }))?;
    } else {
        outln!(
        "pushed to {server}: sent {}, acknowledged {}, set aside {}, canceled {} ({} running task(s) now cancel-requested); {} waiting, {aside_now} set aside in all",
        summary.sent,
        summary.acknowledged,
        summary.set_aside,
        summary.canceled,
        summary.cancel_requested,
        summary.remaining,
    )?;
    }
    if summary.remaining > 0 {
        eprintln!(
            "note: {} update(s) are still waiting: the Server acknowledged nothing of the last batch; they will be retried (and set aside if it never does)",
            summary.remaining
        );
    }
    Ok(())
}

pub async fn outbox(cli: &Cli, args: &OutboxArgs) -> Result<()> {
    let manager = open(cli).await?;
    let result = outbox_with(&manager, args, cli.json).await;
    manager.close().await?;
    result
}

async fn outbox_with(manager: &Manager, args: &OutboxArgs, json: bool) -> Result<()> {
    let store = manager.store();
    let waiting_len = store.outbox_len().await?;
    let aside_len = store.outbox_set_aside_len().await?;
    let waiting = store.outbox_peek(args.limit).await?;
    let aside = store.outbox_set_aside(args.limit).await?;
    let server = manager.upstream().map(|u| u.client().base().to_string());
    if json {
        json_line(&json!({"waiting": waiting_len, "set_aside": aside_len, "server": server}))?;
        for u in &waiting {
            json_line(&json!({"state": "waiting", "update": u}))?;
        }
        for a in &aside {
            json_line(&json!({"state": "set-aside", "update": a.update,
                              "attempts": a.attempts, "set_aside_at": a.set_aside_at}))?;
        }
        return Ok(());
    }
    let now = manager.now();
    match &server {
        Some(s) => outln!("outbox: {waiting_len} waiting, {aside_len} set aside (Server {s})")?,
        None => outln!(
            "outbox: {waiting_len} waiting, {aside_len} set aside (standalone: nothing is pushed)"
        )?,
    }
    if !waiting.is_empty() {
        outln!("\nwaiting, oldest first:")?;
        let mut t = table(
            &["update", "received", "task", "status", "activity", "worker"],
            &["update", "received", "task", "status"],
        );
        for u in &waiting {
            t.add_row(vec![
                short_id(&u.id),
                ago(Some(u.received_on_manager), now),
                short_id(&u.task_id),
                status_of(u),
                first_line(&u.activity, 40),
                u.worker.clone(),
            ]);
        }
        outln!("{t}")?;
        if waiting_len as usize > waiting.len() {
            outln!("… and {} more", waiting_len as usize - waiting.len())?;
        }
    }
    if !aside.is_empty() {
        outln!("\nset aside (the Server never acknowledged them; `flamenco push --retry-set-aside` tries again):")?;
        let mut t = table(
            &[
                "update",
                "task",
                "status",
                "attempts",
                "set aside",
                "activity",
            ],
            &["update", "task", "status", "attempts", "set aside"],
        );
        for a in &aside {
            t.add_row(vec![
                short_id(&a.update.id),
                short_id(&a.update.task_id),
                status_of(&a.update),
                a.attempts.to_string(),
                ago(Some(a.set_aside_at), now),
                first_line(&a.update.activity, 40),
            ]);
        }
        outln!("{t}")?;
        if aside_len as usize > aside.len() {
            outln!("… and {} more", aside_len as usize - aside.len())?;
        }
    }
    Ok(())
}
