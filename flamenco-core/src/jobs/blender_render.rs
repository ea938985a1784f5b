//! `blender-render`: render frames with Blender, then move them into place (v2's
//! `blender-render` compiler).
//!
//! Settings: `filepath` (required, the blend file), `render_output` (required, a file
//! name pattern inside the output folder, e.g. `/render/shot/frame-######`), `frames`
//! (required), `chunk_size` (frames per task, default 1), `blender_cmd` (default
//! `{blender}`, the variable each worker platform fills in), `format` (optional, passed to
//! `--render-format`).
//!
//! Tasks:
//! * `blender-render-<frames>` (task type `blender-render`) per frame chunk, each one
//!   `blender_render` command rendering into `<output folder>__intermediate`, next to the
//!   output folder, so a half-finished render never mixes with a previous one;
//! * `move-to-final` (task type `file-management`), whose parents are all render tasks:
//!   one `move_to_final` command that moves the intermediate folder into place (the
//!   worker first moves an existing output folder out of the way).

use serde_json::{json, Map, Value};

use super::{CompileContext, InvalidSetting, JobType, Problems, Settings, TaskSpec};
use crate::model::{Command, Job};

/// The `blender-render` job type.
#[derive(Clone, Copy, Debug, Default)]
pub struct BlenderRender;

/// `blender_cmd` when the job gives none: the `blender` variable of the worker's platform.
pub const DEFAULT_BLENDER_CMD: &str = "{blender}";

/// The folders of a render output pattern: `(final folder, intermediate folder, file name
/// pattern, separator)`.
fn output_paths(render_output: &str) -> Result<(String, String, String, char), String> {
    let sep_at = render_output
        .rfind(['/', '\\'])
        .ok_or("must be a file name pattern inside a folder, e.g. /render/shot/frame-######")?;
    let sep = render_output[sep_at..].chars().next().unwrap_or('/');
    let name = &render_output[sep_at + 1..];
    if name.trim().is_empty() {
        return Err("must end in a file name pattern (e.g. frame-######), not a folder".into());
    }
    let folder = render_output[..sep_at].trim_end_matches(['/', '\\']);
    let folder_name = folder.rsplit(['/', '\\']).next().unwrap_or_default();
    if folder_name.is_empty() || folder_name.ends_with(':') {
        return Err(
            "must be inside a folder of its own (not the root of a drive), e.g. /render/shot/frame-######"
                .into(),
        );
    }
    let intermediate = format!("{folder}__intermediate");
    Ok((folder.to_string(), intermediate, name.to_string(), sep))
}

impl JobType for BlenderRender {
    fn name(&self) -> &str {
        "blender-render"
    }

    fn description(&self) -> &str {
        "Render frame chunks with Blender (task type `blender-render`), then move the frames into place (`file-management`)"
    }

    fn compile(&self, job: &Job, ctx: &CompileContext) -> Result<Vec<TaskSpec>, InvalidSetting> {
        let s = Settings::new(&job.settings);
        let mut p = Problems::default();
        p.check(s.only(&[
            "blender_cmd",
            "filepath",
            "render_output",
            "frames",
            "chunk_size",
            "format",
        ]));
        let blender_cmd = p.check(s.optional_str("blender_cmd"));
        let filepath = p.check(s.required_str("filepath"));
        let outputs = p.check(s.required_str("render_output").and_then(|render_output| {
            output_paths(render_output).map_err(|e| s.invalid("render_output", e))
        }));
        let frames = p.check(s.frames("frames"));
        let chunk_size = p.check(s.positive_int("chunk_size", Some(1)));
        let format = p.check(s.optional_str("format"));
        p.finish()?;
        let (
            Some(blender_cmd),
            Some(filepath),
            Some((final_dir, intermediate, pattern, sep)),
            Some(frames),
            Some(chunk_size),
            Some(format),
        ) = (blender_cmd, filepath, outputs, frames, chunk_size, format)
        else {
            return Err(p.unexpected());
        };
        let blender_cmd = blender_cmd.unwrap_or(DEFAULT_BLENDER_CMD);
        ctx.check_task_count(frames.chunk_count(chunk_size) + 1, "frames")?;

        let intermediate_output = format!("{intermediate}{sep}{pattern}");
        let mut tasks: Vec<TaskSpec> = frames
            .chunks(chunk_size)
            .map(|chunk| {
                let mut settings = Map::new();
                settings.insert("blender_cmd".into(), Value::from(blender_cmd));
                settings.insert("filepath".into(), Value::from(filepath));
                if let Some(format) = format {
                    settings.insert("format".into(), Value::from(format));
                }
                settings.insert(
                    "render_output".into(),
                    Value::from(intermediate_output.as_str()),
                );
                settings.insert("frames".into(), Value::from(chunk.to_blender_string()));
                TaskSpec::new(
                    format!("blender-render-{}", chunk.to_range_string()),
                    "blender-render",
                    vec![Command {
                        name: "blender_render".into(),
                        settings,
                    }],
                )
            })
            .collect();
        let parents = (0..tasks.len()).collect();
        tasks.push(
            TaskSpec::new(
                "move-to-final",
                "file-management",
                vec![Command::new(
                    "move_to_final",
                    json!({"src": intermediate, "dest": final_dir}),
                )],
            )
            .with_parents(parents),
        );
        Ok(tasks)
    }
}

#[cfg(test)]
mod tests {
    use super::output_paths;

    #[test]
    fn output_folders() {
        assert_eq!(
            output_paths("/render/shot/frame-######").unwrap(),
            (
                "/render/shot".to_string(),
                "/render/shot__intermediate".to_string(),
                "frame-######".to_string(),
                '/'
            )
        );
        assert_eq!(
            output_paths("{render}/shot/f-####.png").unwrap().1,
            "{render}/shot__intermediate"
        );
        assert_eq!(
            output_paths("r:\\out\\f-###").unwrap(),
            (
                "r:\\out".to_string(),
                "r:\\out__intermediate".to_string(),
                "f-###".to_string(),
                '\\'
            )
        );
        assert_eq!(output_paths("/render//shot//f").unwrap().0, "/render//shot");
        for bad in [
            "frame-###",
            "/frame-###",
            "/render/shot/",
            "c:/f-###",
            "r:\\f",
        ] {
            assert!(output_paths(bad).is_err(), "{bad}");
        }
    }
}
