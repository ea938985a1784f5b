//! `exec-command`: run shell-free command lines on workers. One task per command line.
//!
//! Settings: `cmd` (required): one command line, or a list of them. Each is run by the
//! worker's `exec` command (split like a shell would, but without a shell).
//! Tasks: `exec-1`, `exec-2`, …, task type `exec`, one `exec` command each.

use serde_json::json;

use super::{CompileContext, InvalidSetting, JobType, Problems, Settings, TaskSpec};
use crate::model::{Command, Job};

/// The `exec-command` job type.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecCommand;

impl JobType for ExecCommand {
    fn name(&self) -> &str {
        "exec-command"
    }

    fn description(&self) -> &str {
        "Run command lines with the worker's `exec` command, one task each (task type `exec`)"
    }

    fn compile(&self, job: &Job, ctx: &CompileContext) -> Result<Vec<TaskSpec>, InvalidSetting> {
        let s = Settings::new(&job.settings);
        let mut p = Problems::default();
        p.check(s.only(&["cmd"]));
        let cmds = p.check(s.string_or_list("cmd"));
        p.finish()?;
        let Some(cmds) = cmds else {
            return Err(p.unexpected());
        };
        ctx.check_task_count(cmds.len() as u64, "cmd")?;
        Ok(cmds
            .iter()
            .enumerate()
            .map(|(i, cmd)| {
                TaskSpec::new(
                    format!("exec-{}", i + 1),
                    "exec",
                    vec![Command::new("exec", json!({ "cmd": cmd }))],
                )
            })
            .collect())
    }
}
