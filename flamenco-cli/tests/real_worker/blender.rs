//! Real Blender renders through the real Flamenco Worker 2.5: a tiny Cycles scene made
//! with Blender's own Python, rendered as a `blender-render` job in 2 chunks, with
//! `watch_for_latest_image` on; and renders that fail (a file Blender cannot read, a
//! missing file).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::harness::{wait_for, Farm, Worker, V2_5, WAIT};
use crate::report;
use crate::scenarios::wait_worker_status;

/// Blender's path (`FLAMENCO_TEST_BLENDER`, else `blender` on PATH), or `None` after a
/// visible skip (a failure under `CI=true`).
pub fn blender_available(test: &str) -> Option<PathBuf> {
    let found = match std::env::var_os("FLAMENCO_TEST_BLENDER") {
        Some(p) => Some(PathBuf::from(p)),
        None => std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("blender"))
                .find(|p| p.is_file())
        }),
    };
    match found {
        // The worker checks that the first word of `blender_cmd` is an existing file.
        Some(p) if p.is_file() => Some(std::fs::canonicalize(&p).unwrap_or(p)),
        _ => {
            flamenco_core::testing::skip_or_fail(
                "Blender",
                test,
                "no `blender` on PATH (or FLAMENCO_TEST_BLENDER)",
                "install Debian's `blender` (.ci/run does)",
            );
            None
        }
    }
}

/// The scene: Cycles on the CPU, 64×36 pixels, 4 samples, frames 1–4, a cube that turns.
const MAKE_SCENE: &str = r#"
import bpy, sys
out = sys.argv[sys.argv.index("--") + 1]
scene = bpy.context.scene
scene.render.engine = "CYCLES"
scene.cycles.device = "CPU"
scene.cycles.samples = 4
scene.cycles.use_denoising = False
scene.render.resolution_x = 64
scene.render.resolution_y = 36
scene.render.resolution_percentage = 100
scene.render.image_settings.file_format = "PNG"
scene.frame_start = 1
scene.frame_end = 4
cube = bpy.data.objects["Cube"]
for frame, angle in ((1, 0.0), (4, 1.5)):
    cube.rotation_euler = (0.0, 0.0, angle)
    cube.keyframe_insert("rotation_euler", frame=frame)
bpy.ops.wm.save_as_mainfile(filepath=out)
"#;

/// Make the scene into `path` with Blender itself.
async fn make_scene(blender: &Path, path: &Path) {
    let out = tokio::process::Command::new(blender)
        .args([
            "-b",
            "--factory-startup",
            "--python-exit-code",
            "1",
            "--python-expr",
        ])
        .arg(MAKE_SCENE)
        .arg("--")
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run blender");
    assert!(
        out.status.success() && path.is_file(),
        "Blender did not make the scene ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn blender_config(blender: &Path, watch: Option<&Path>) -> String {
    let mut yaml = format!(
        "variables:\n  blender:\n    linux: '{}'\n",
        blender.display()
    );
    if let Some(dir) = watch {
        yaml.push_str(&format!("watch_for_latest_image: '{}'\n", dir.display()));
    }
    yaml
}

/// A 4-frame Cycles render in 2 chunks: the frames land in the final folder through
/// `move-to-final`, the last-rendered image is the shot's last frame, and the task logs
/// show Blender's output.
pub async fn render_job(blender: PathBuf) {
    let scratch = tempfile::Builder::new()
        .prefix("e2e-render-")
        .tempdir()
        .expect("temp dir");
    let blend = scratch.path().join("scene.blend");
    make_scene(&blender, &blend).await;
    let render_root = scratch.path().join("render");
    std::fs::create_dir_all(&render_root).expect("render dir");
    let mut farm = Farm::start("render", &blender_config(&blender, Some(&render_root))).await;
    let mut worker = Worker::start(&farm, V2_5, "render");
    let id = worker.id().await;
    wait_worker_status(&farm, &id, "awake").await;

    let shot = render_root.join("shot");
    let started = std::time::Instant::now();
    let job = farm
        .submit(
            "blender-render",
            json!({
                "filepath": blend.display().to_string(),
                "render_output": format!("{}/frame-######", shot.display()),
                "frames": "1-4",
                "chunk_size": 2,
                "format": "PNG",
            }),
        )
        .await;
    farm.wait_job_status(&job, "completed", Duration::from_secs(300))
        .await;
    report(&format!(
        "render: 4 frames in 2 chunks completed in {:.1?}",
        started.elapsed()
    ));

    let tasks = farm.tasks(&job).await;
    let names: Vec<&str> = tasks.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(
        names,
        ["blender-render-1,2", "blender-render-3,4", "move-to-final"],
        "{tasks:#?}"
    );
    let mut frames: Vec<String> = std::fs::read_dir(&shot)
        .unwrap_or_else(|e| panic!("the final folder {}: {e}", shot.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    frames.sort();
    assert_eq!(
        frames,
        [
            "frame-000001.png",
            "frame-000002.png",
            "frame-000003.png",
            "frame-000004.png"
        ],
        "the final folder {}",
        shot.display()
    );
    assert!(
        !render_root.join("shot__intermediate").exists(),
        "the intermediate folder was not moved into place"
    );

    // The last-rendered image settles on the shot's last frame.
    let latest = wait_for("the latest image is frame 4", WAIT, || async {
        let resp = farm
            .http
            .get(format!("{}/api/latest-image", farm.url()))
            .send()
            .await
            .ok()?;
        let info: serde_json::Value = resp.json().await.ok()?;
        let source = info["source_path"].as_str()?.to_string();
        source.ends_with("frame-000004.png").then_some(info)
    })
    .await;
    let jpeg = farm
        .http
        .get(format!("{}/latest-image.jpg", farm.url()))
        .send()
        .await
        .expect("GET /latest-image.jpg");
    assert_eq!(jpeg.status().as_u16(), 200);
    let bytes = jpeg.bytes().await.expect("the JPEG");
    assert!(bytes.starts_with(&[0xFF, 0xD8]), "not a JPEG");
    assert_eq!(latest["width"], 64, "{latest}");
    assert_eq!(latest["height"], 36, "{latest}");

    for t in tasks.iter().filter(|t| t["task_type"] == "blender-render") {
        let id = t["_id"].as_str().expect("task id");
        let log = farm.task_log(id).await;
        assert!(
            log.contains("Blender 3.") && log.contains("Saved: '"),
            "task {id}'s log lacks Blender's output:\n{log}"
        );
    }

    worker.stop().await;
    worker.check_log();
    assert_eq!(worker.queued_updates(), 0);
    farm.check_responses().await;
    farm.stop().await;
}

/// A render Blender cannot do fails its task with Blender's error in the task log; a
/// missing .blend fails with the worker's message naming it.
pub async fn render_fails(blender: PathBuf) {
    let scratch = tempfile::Builder::new()
        .prefix("e2e-render-fail-")
        .tempdir()
        .expect("temp dir");
    let broken = scratch.path().join("broken.blend");
    std::fs::write(&broken, "this is not a blend file\n").expect("write");
    let missing = scratch.path().join("missing.blend");
    let mut farm = Farm::start("render-fail", &blender_config(&blender, None)).await;
    let mut worker = Worker::start(&farm, V2_5, "render-fail");
    let id = worker.id().await;
    wait_worker_status(&farm, &id, "awake").await;

    // Blender's own error for a file it cannot read. A missing file never reaches Blender:
    // the worker checks the path first (and waits 5 s for it to appear on a slow network
    // share), then fails the task with its own message, "filepath '…' does not exist".
    for (blend, expect_log) in [
        (&broken, "File format is not supported"),
        (&missing, "missing.blend' does not exist"),
    ] {
        let job = farm
            .submit(
                "blender-render",
                json!({
                    "filepath": blend.display().to_string(),
                    "render_output": format!("{}/out/frame-####", scratch.path().display()),
                    "frames": "1",
                }),
            )
            .await;
        farm.wait_job_status(&job, "failed", Duration::from_secs(180))
            .await;
        let tasks = farm.tasks(&job).await;
        let render = tasks
            .iter()
            .find(|t| t["task_type"] == "blender-render")
            .expect("the render task");
        assert_eq!(render["status"], "failed", "{render}");
        let id = render["_id"].as_str().expect("task id");
        let log = farm.task_log(id).await;
        assert!(
            log.contains(expect_log),
            "task {id}'s log lacks {expect_log:?}:\n{log}"
        );
    }
    worker.stop().await;
    worker.check_log();
    farm.check_responses().await;
    farm.stop().await;
}
