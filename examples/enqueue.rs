//! Enqueue a few `sleep`/`echo` tasks into the Manager's store through the SDK.
//!
//! Run it next to (or instead of) a running `flamenco serve`; the daemon hands the tasks
//! to workers that support the `sleep` task type:
//!
//! ```text
//! cargo run --example enqueue -- [--config flamenco-manager.yaml] [COUNT]
//! ```

use anyhow::{Context, Result};
use flamenco_core::config::Config;
use flamenco_core::model::{Command, Task};
use flamenco_core::Manager;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut config_path = None;
    let mut count: usize = 3;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => config_path = args.next().map(std::path::PathBuf::from),
            n => count = n.parse().context("COUNT must be a number")?,
        }
    }
    let (config, _) = Config::load(config_path.as_deref())?;
    let manager = Manager::open(config).await?;

    let tasks: Vec<Task> = (1..=count)
        .map(|i| {
            Task::new(
                format!("example-{i}"),
                "sleep",
                vec![
                    Command::new(
                        "echo",
                        json!({"message": format!("Hello from example task {i}")}),
                    ),
                    Command::new("sleep", json!({"time_in_seconds": 2})),
                ],
            )
        })
        .collect();
    let ids = manager.enqueue_tasks(tasks).await?;
    for id in &ids {
        println!("queued task {id}");
    }
    println!(
        "{} tasks queued in {}",
        ids.len(),
        manager.store().describe()
    );
    manager.close().await?;
    Ok(())
}
