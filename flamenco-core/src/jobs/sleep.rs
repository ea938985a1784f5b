//! `sleep`: a test job. One task per frame chunk, each echoing and then sleeping (v2's
//! `sleep` compiler).
//!
//! Settings: `frames` (required, e.g. `1-100,120`), `chunk_size` (frames per task,
//! default 1), `time_in_seconds` (required, how long each task sleeps).
//! Tasks: `sleep-<frames>`, task type `sleep`, commands `echo` + `sleep`.

use serde_json::{json, Value};

use super::{CompileContext, InvalidSetting, JobType, Problems, Settings, TaskSpec};
use crate::model::{Command, Job};

/// The `sleep` job type.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sleep;

impl JobType for Sleep {
    fn name(&self) -> &str {
        "sleep"
    }

    fn description(&self) -> &str {
        "Echo and sleep per frame chunk (task type `sleep`): a test job"
    }

    fn compile(&self, job: &Job, ctx: &CompileContext) -> Result<Vec<TaskSpec>, InvalidSetting> {
        let s = Settings::new(&job.settings);
        let mut p = Problems::default();
        p.check(s.only(&["frames", "chunk_size", "time_in_seconds"]));
        let frames = p.check(s.frames("frames"));
        let chunk_size = p.check(s.positive_int("chunk_size", Some(1)));
        let seconds = p.check(s.seconds("time_in_seconds"));
        p.finish()?;
        let (Some(frames), Some(chunk_size), Some(seconds)) = (frames, chunk_size, seconds) else {
            return Err(p.unexpected());
        };
        let seconds = Value::Number(seconds);
        ctx.check_task_count(frames.chunk_count(chunk_size), "frames")?;
        Ok(frames
            .chunks(chunk_size)
            .map(|chunk| {
                TaskSpec::new(
                    format!("sleep-{}", chunk.to_range_string()),
                    "sleep",
                    vec![
                        Command::new("echo", json!({"message": "Preparing to sleep"})),
                        Command::new("sleep", json!({"time_in_seconds": seconds})),
                    ],
                )
            })
            .collect())
    }
}
