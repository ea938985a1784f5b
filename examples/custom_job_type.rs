//! Register a job type of your own and submit a job of it, through the SDK.
//!
//! The `copy-files` job type below copies files to a folder on the workers: one
//! `copy_file` task per file (task type `file-management`), then an `echo` task that
//! waits for all of them. Jobs are compiled when they are submitted, so a running
//! `flamenco serve` hands these tasks to workers without knowing the job type.
//!
//! ```text
//! cargo run --example custom_job_type -- [--config flamenco-manager.yaml] [FILE…]
//! ```

use std::sync::Arc;

use anyhow::Result;
use flamenco_core::config::Config;
use flamenco_core::jobs::{
    CompileContext, InvalidSetting, JobSubmission, JobType, Settings, TaskSpec,
};
use flamenco_core::model::{Command, Job};
use flamenco_core::Manager;
use serde_json::json;

/// `copy-files`: settings `files` (a path or a list of paths) and `dest` (a folder).
struct CopyFiles;

impl JobType for CopyFiles {
    fn name(&self) -> &str {
        "copy-files"
    }

    fn description(&self) -> &str {
        "Copy files into a folder (task type `file-management`)"
    }

    fn compile(&self, job: &Job, ctx: &CompileContext) -> Result<Vec<TaskSpec>, InvalidSetting> {
        let s = Settings::new(&job.settings);
        s.only(&["files", "dest"])?;
        let files = s.string_or_list("files")?;
        let dest = s.required_str("dest")?.trim_end_matches('/');
        ctx.check_task_count(files.len() as u64 + 1, "files")?;
        let mut tasks: Vec<TaskSpec> = files
            .iter()
            .enumerate()
            .map(|(i, src)| {
                let name = src.rsplit('/').next().unwrap_or(src);
                TaskSpec::new(
                    format!("copy-{}", i + 1),
                    "file-management",
                    vec![Command::new(
                        "copy_file",
                        json!({"src": src, "dest": format!("{dest}/{name}")}),
                    )],
                )
            })
            .collect();
        let parents = (0..tasks.len()).collect();
        tasks.push(
            TaskSpec::new(
                "report",
                "file-management",
                vec![Command::new(
                    "echo",
                    json!({"message": format!("copied {} file(s) to {dest}", files.len())}),
                )],
            )
            .with_parents(parents),
        );
        Ok(tasks)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut config_path = None;
    let mut files = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => config_path = args.next().map(std::path::PathBuf::from),
            file => files.push(file.to_string()),
        }
    }
    if files.is_empty() {
        files = vec!["/shared/in/a.txt".into(), "/shared/in/b.txt".into()];
    }
    let (config, _) = Config::load(config_path.as_deref())?;
    let manager = Manager::open(config).await?;
    manager.register_job_type(Arc::new(CopyFiles));

    let settings = json!({"files": files, "dest": "/shared/out"});
    let job = manager
        .submit_job(
            JobSubmission::new(
                "copy-files",
                settings.as_object().cloned().unwrap_or_default(),
            )
            .named("copy example"),
        )
        .await?;
    println!(
        "submitted job {} ({} tasks):",
        job.id,
        job.task_counts.total()
    );
    for task in manager.job_tasks(job.id, vec![], None, 0).await? {
        println!(
            "  {} {:<8} {:<16} {}",
            task.id,
            task.name,
            task.task_type,
            serde_json::to_string(&task.commands)?
        );
    }
    println!("workers with the `file-management` task type will run them");
    manager.close().await?;
    Ok(())
}
