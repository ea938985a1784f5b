//! Golden tests of the built-in job types (task count, names, task types, commands,
//! parents), their settings validation, and submission through the Manager.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::*;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::manager::{ApiError, Manager};
use crate::model::{JobStatus, TaskCounts, DEFAULT_JOB_PRIORITY};
use crate::store::sqlite::SqliteStore;
use crate::store::{JobQuery, TaskQuery};

fn settings(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("an object")
}

fn job_of(job_type: &str, s: Value) -> Job {
    let now = chrono::Utc::now();
    Job {
        id: ObjectId::new(),
        name: "test".into(),
        job_type: job_type.into(),
        priority: 50,
        status: crate::model::JobStatus::Queued,
        settings: settings(s),
        created: now,
        updated: now,
        task_counts: Default::default(),
        worker_tag: None,
    }
}

fn ctx() -> CompileContext {
    CompileContext {
        max_tasks: DEFAULT_MAX_TASKS_PER_JOB,
    }
}

/// The specs as JSON, to compare with a golden value.
fn golden(specs: &[TaskSpec]) -> Value {
    Value::Array(
        specs
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "task_type": t.task_type,
                    "commands": t.commands,
                    "parents": t.parents,
                    "priority": t.priority,
                })
            })
            .collect(),
    )
}

fn compile(job_type: &dyn JobType, s: Value) -> Result<Vec<TaskSpec>, InvalidSetting> {
    job_type.compile(&job_of(job_type.name(), s), &ctx())
}

#[test]
fn sleep_golden() {
    let specs = compile(
        &sleep::Sleep,
        json!({"frames": "1-10,20", "chunk_size": 4, "time_in_seconds": 3}),
    )
    .expect("compiles");
    let sleep = |name: &str| {
        json!({"name": name, "task_type": "sleep", "parents": [], "priority": 50, "commands": [
            {"name": "echo", "settings": {"message": "Preparing to sleep"}},
            {"name": "sleep", "settings": {"time_in_seconds": 3}},
        ]})
    };
    assert_eq!(
        golden(&specs),
        json!([
            sleep("sleep-1-4"),
            sleep("sleep-5-8"),
            sleep("sleep-9,10,20")
        ])
    );
    // Defaults: one frame per task; fractional seconds are kept.
    let specs = compile(
        &sleep::Sleep,
        json!({"frames": "1-3", "time_in_seconds": 0.5}),
    )
    .expect("compiles");
    assert_eq!(
        specs.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["sleep-1", "sleep-2", "sleep-3"]
    );
    assert_eq!(specs[0].commands[1].settings["time_in_seconds"], json!(0.5));
}

#[test]
fn exec_command_golden() {
    let specs = compile(
        &exec_command::ExecCommand,
        json!({"cmd": ["echo hello", "ls -l /tmp"]}),
    )
    .expect("compiles");
    assert_eq!(
        golden(&specs),
        json!([
            {"name": "exec-1", "task_type": "exec", "parents": [], "priority": 50,
             "commands": [{"name": "exec", "settings": {"cmd": "echo hello"}}]},
            {"name": "exec-2", "task_type": "exec", "parents": [], "priority": 50,
             "commands": [{"name": "exec", "settings": {"cmd": "ls -l /tmp"}}]},
        ])
    );
    let one = compile(&exec_command::ExecCommand, json!({"cmd": "date"})).expect("compiles");
    assert_eq!(
        golden(&one),
        json!([{"name": "exec-1", "task_type": "exec", "parents": [], "priority": 50,
                "commands": [{"name": "exec", "settings": {"cmd": "date"}}]}])
    );
}

#[test]
fn blender_render_golden() {
    let specs = compile(
        &blender_render::BlenderRender,
        json!({"filepath": "/shared/shot.blend", "render_output": "/render/shot/frame-######",
               "frames": "1-5", "chunk_size": 2, "format": "PNG"}),
    )
    .expect("compiles");
    let render = |name: &str, frames: &str| {
        json!({"name": name, "task_type": "blender-render", "parents": [], "priority": 50,
               "commands": [{"name": "blender_render", "settings": {
                   "blender_cmd": "{blender}",
                   "filepath": "/shared/shot.blend",
                   "format": "PNG",
                   "render_output": "/render/shot__intermediate/frame-######",
                   "frames": frames}}]})
    };
    assert_eq!(
        golden(&specs),
        json!([
            render("blender-render-1,2", "1,2"),
            render("blender-render-3,4", "3,4"),
            render("blender-render-5", "5"),
            {"name": "move-to-final", "task_type": "file-management", "parents": [0, 1, 2],
             "priority": 50, "commands": [{"name": "move_to_final", "settings": {
                 "src": "/render/shot__intermediate", "dest": "/render/shot"}}]},
        ])
    );
    // Blender's range notation in `frames`, v2's in the names; no `format` when not given;
    // an explicit blender_cmd is used as given.
    let specs = compile(
        &blender_render::BlenderRender,
        json!({"blender_cmd": "/opt/blender/blender", "filepath": "{job_storage}/a.blend",
               "render_output": "{render}/a/####.exr", "frames": "10-20,30", "chunk_size": 10}),
    )
    .expect("compiles");
    assert_eq!(specs.len(), 3);
    assert_eq!(specs[0].name, "blender-render-10-19");
    let s = &specs[1].commands[0].settings;
    assert_eq!(s["frames"], "20,30");
    assert_eq!(s["blender_cmd"], "/opt/blender/blender");
    assert_eq!(s["render_output"], "{render}/a__intermediate/####.exr");
    assert!(s.get("format").is_none());
    assert_eq!(specs[2].parents, [0, 1]);
}

/// Every bad setting is refused with the setting named.
#[test]
fn bad_settings_name_the_setting() {
    let cases: Vec<(&dyn JobType, Value, &str, &str)> = vec![
        (
            &sleep::Sleep,
            json!({"time_in_seconds": 1}),
            "frames",
            "required",
        ),
        (
            &sleep::Sleep,
            json!({"frames": "1-x", "time_in_seconds": 1}),
            "frames",
            "\"1-x\"",
        ),
        (
            &sleep::Sleep,
            json!({"frames": "10-1", "time_in_seconds": 1}),
            "frames",
            "empty range",
        ),
        (
            &sleep::Sleep,
            json!({"frames": "", "time_in_seconds": 1}),
            "frames",
            "no frames given",
        ),
        (
            &sleep::Sleep,
            json!({"frames": [1, 2], "time_in_seconds": 1}),
            "frames",
            "a list",
        ),
        (
            &sleep::Sleep,
            json!({"frames": "1-3"}),
            "time_in_seconds",
            "required",
        ),
        (
            &sleep::Sleep,
            json!({"frames": "1-3", "time_in_seconds": -1}),
            "time_in_seconds",
            "at least 0",
        ),
        (
            &sleep::Sleep,
            json!({"frames": "1-3", "time_in_seconds": "1"}),
            "time_in_seconds",
            "a string",
        ),
        (
            &sleep::Sleep,
            json!({"frames": "1-3", "time_in_seconds": 1, "chunk_size": 0}),
            "chunk_size",
            "at least 1",
        ),
        (
            &sleep::Sleep,
            json!({"frames": "1-3", "time_in_seconds": 1, "chunk_size": 2.5}),
            "chunk_size",
            "at least 1",
        ),
        (
            &sleep::Sleep,
            json!({"frames": "1-3", "time_in_seconds": 1, "chunksize": 2}),
            "chunksize",
            "unknown setting",
        ),
        (&exec_command::ExecCommand, json!({}), "cmd", "required"),
        (
            &exec_command::ExecCommand,
            json!({"cmd": []}),
            "cmd",
            "must not be empty",
        ),
        (
            &exec_command::ExecCommand,
            json!({"cmd": ["ls", ""]}),
            "cmd",
            "item 2",
        ),
        (
            &exec_command::ExecCommand,
            json!({"cmd": 5}),
            "cmd",
            "a number",
        ),
        (
            &blender_render::BlenderRender,
            json!({"render_output": "/r/s/f", "frames": "1"}),
            "filepath",
            "required",
        ),
        (
            &blender_render::BlenderRender,
            json!({"filepath": "a.blend", "frames": "1"}),
            "render_output",
            "required",
        ),
        (
            &blender_render::BlenderRender,
            json!({"filepath": "a.blend", "render_output": "frame-###", "frames": "1"}),
            "render_output",
            "inside a folder",
        ),
        (
            &blender_render::BlenderRender,
            json!({"filepath": "a.blend", "render_output": "/render/", "frames": "1"}),
            "render_output",
            "file name pattern",
        ),
        (
            &blender_render::BlenderRender,
            json!({"filepath": "a.blend", "render_output": "/r/s/f"}),
            "frames",
            "required",
        ),
        (
            &blender_render::BlenderRender,
            json!({"filepath": "a.blend", "render_output": "/r/s/f", "frames": "1", "format": 3}),
            "format",
            "a number",
        ),
        (
            &blender_render::BlenderRender,
            json!({"filepath": "a.blend", "render_output": "/r/s/f", "frames": "1", "blender_cmd": ""}),
            "blender_cmd",
            "must not be empty",
        ),
    ];
    for (job_type, s, setting, text) in cases {
        let err = compile(job_type, s.clone()).expect_err(&format!("{} {s}", job_type.name()));
        assert_eq!(err.setting, setting, "{} {s}: {err}", job_type.name());
        assert_eq!(err.field(), format!("settings.{setting}"));
        let msg = err.to_string();
        assert!(msg.contains(&format!("`{setting}`")), "{msg}");
        assert!(
            msg.contains(text),
            "{} {s}: {msg:?} lacks {text:?}",
            job_type.name()
        );
    }
}

#[test]
fn task_count_is_capped_before_building() {
    let small = CompileContext { max_tasks: 10 };
    let job = job_of("sleep", json!({"frames": "1-10", "time_in_seconds": 1}));
    assert_eq!(
        sleep::Sleep.compile(&job, &small).expect("10 tasks").len(),
        10
    );
    let job = job_of("sleep", json!({"frames": "1-11", "time_in_seconds": 1}));
    let err = sleep::Sleep.compile(&job, &small).expect_err("11 tasks");
    assert_eq!(err.setting, "frames");
    assert!(err.to_string().contains("max_tasks_per_job (10)"), "{err}");
    // The move-to-final task counts too.
    let render = |frames: &str| {
        job_of(
            "blender-render",
            json!({"filepath": "a.blend", "render_output": "/r/s/f", "frames": frames}),
        )
    };
    assert_eq!(
        blender_render::BlenderRender
            .compile(&render("1-9"), &small)
            .expect("9 + 1 tasks")
            .len(),
        10
    );
    assert!(blender_render::BlenderRender
        .compile(&render("1-10"), &small)
        .is_err());
    // A huge range is refused without being expanded.
    let job = job_of(
        "sleep",
        json!({"frames": "0-4000000000", "time_in_seconds": 1}),
    );
    assert!(sleep::Sleep.compile(&job, &ctx()).is_err());
}

// ---- through the Manager ----

fn manager_with(config: Config) -> (Manager, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("store");
    (
        Manager::with_store(config, Arc::new(store), Arc::new(SystemClock)),
        dir,
    )
}

fn field_of(err: ApiError) -> (String, String) {
    match err {
        ApiError::InvalidField { field, message } => (field, message),
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

#[tokio::test]
async fn submit_compiles_and_stores_job_and_tasks() {
    let (m, _dir) = manager_with(Config::default());
    let job = m
        .submit_job(
            JobSubmission::new(
                "blender-render",
                settings(
                    json!({"filepath": "/s/a.blend", "render_output": "/r/shot/f-###",
                                "frames": "1-4", "chunk_size": 2}),
                ),
            )
            .named("shot 1")
            .with_priority(70),
        )
        .await
        .expect("submit");
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.name, "shot 1");
    assert_eq!(job.priority, 70);
    assert_eq!(job.task_counts.get(&TaskStatus::Queued), 3);
    assert_eq!(m.get_job(job.id).await.expect("get"), Some(job.clone()));
    let tasks = m
        .list_tasks(&TaskQuery {
            job: Some(job.id),
            ..TaskQuery::default()
        })
        .await
        .expect("tasks");
    assert_eq!(tasks.len(), 3);
    for t in &tasks {
        assert_eq!(t.job, Some(job.id));
        assert_eq!(t.job_type, "blender-render");
        assert_eq!(t.job_priority, 70);
        assert_eq!(t.priority, 50);
        assert_eq!(t.status, TaskStatus::Queued);
    }
    assert_eq!(tasks[2].name, "move-to-final");
    assert_eq!(tasks[2].parents, [tasks[0].id, tasks[1].id]);
    assert_eq!(
        m.job_tasks(job.id, vec![], Some(1), 1).await.expect("page")[0].id,
        tasks[1].id
    );
    assert_eq!(
        m.list_jobs(&JobQuery::default()).await.expect("list")[0].id,
        job.id
    );
    // The name defaults to the job type; the priority to 50.
    let j = m
        .submit_job(JobSubmission::new(
            "exec-command",
            settings(json!({"cmd": "true"})),
        ))
        .await
        .expect("submit");
    assert_eq!(
        (j.name.as_str(), j.priority),
        ("exec-command", DEFAULT_JOB_PRIORITY)
    );
    m.close().await.expect("close");
}

#[tokio::test]
async fn submission_errors_name_the_field() {
    let (m, _dir) = manager_with(Config {
        max_tasks_per_job: 5,
        ..Config::default()
    });
    let sleep = |s: Value| JobSubmission::new("sleep", settings(s));
    let cases: Vec<(JobSubmission, &str, &str)> = vec![
        (JobSubmission::default(), "job_type", "job_type is required"),
        (
            JobSubmission::new("render", Map::new()),
            "job_type",
            "unknown job type \"render\"",
        ),
        (
            sleep(json!({"frames": "1", "time_in_seconds": 1})).with_priority(0),
            "priority",
            "1 to 100",
        ),
        (
            sleep(json!({"frames": "1", "time_in_seconds": 1})).with_priority(101),
            "priority",
            "1 to 100",
        ),
        (
            JobSubmission {
                priority: Some(json!("high")),
                ..sleep(json!({"frames": "1", "time_in_seconds": 1}))
            },
            "priority",
            "integer",
        ),
        (
            sleep(json!({"frames": "1", "time_in_seconds": 1})).named("x".repeat(300)),
            "name",
            "longer",
        ),
        (
            sleep(json!({"frames": "1-6", "time_in_seconds": 1})),
            "settings.frames",
            "max_tasks_per_job (5)",
        ),
        (
            sleep(json!({"frames": "1-x", "time_in_seconds": 1})),
            "settings.frames",
            "1-x",
        ),
    ];
    for (sub, field, text) in cases {
        let (got_field, message) = field_of(m.submit_job(sub.clone()).await.expect_err("refused"));
        assert_eq!(got_field, field, "{sub:?}: {message}");
        assert!(
            message.contains(text),
            "{sub:?}: {message:?} lacks {text:?}"
        );
    }
    assert!(m
        .list_jobs(&JobQuery::default())
        .await
        .expect("list")
        .is_empty());
    assert_eq!(m.task_counts().await.expect("counts").len(), 0);
    m.close().await.expect("close");
}

#[tokio::test]
async fn upstream_mode_refuses_jobs() {
    let (m, _dir) = manager_with(Config {
        flamenco: "http://127.0.0.1:9/".into(),
        manager_id: "5852bc5198377351f95d103e".into(),
        manager_secret: "secret".into(),
        ..Config::default()
    });
    let err = m
        .submit_job(JobSubmission::new(
            "sleep",
            settings(json!({"frames": "1", "time_in_seconds": 1})),
        ))
        .await
        .expect_err("refused");
    assert!(
        matches!(err, ApiError::Conflict(ref m) if m.contains("Flamenco Server")),
        "{err:?}"
    );
    assert!(
        m.consume_outbox_now(10).await.is_err(),
        "the outbox is the Server's"
    );
    m.close().await.expect("close");
}

/// A job type of the user's own: registered on the Manager, then submitted like any.
#[tokio::test]
async fn custom_job_types_can_be_registered() {
    struct Copy;
    impl JobType for Copy {
        fn name(&self) -> &str {
            "copy"
        }
        fn compile(
            &self,
            job: &Job,
            _ctx: &CompileContext,
        ) -> Result<Vec<TaskSpec>, InvalidSetting> {
            let s = Settings::new(&job.settings);
            s.only(&["files", "dest"])?;
            let dest = s.required_str("dest")?;
            Ok(s.string_or_list("files")?
                .iter()
                .map(|f| {
                    TaskSpec::new(
                        format!("copy-{f}"),
                        "file-management",
                        vec![Command::new("copy_file", json!({"src": f, "dest": dest}))],
                    )
                })
                .collect())
        }
    }
    let (m, _dir) = manager_with(Config::default());
    assert!(m.register_job_type(Arc::new(Copy)).is_none());
    assert!(m.job_types().names().contains(&"copy".to_string()));
    let job = m
        .submit_job(JobSubmission::new(
            "copy",
            settings(json!({"files": ["/a", "/b"], "dest": "/c"})),
        ))
        .await
        .expect("submit");
    assert_eq!(
        job.task_counts,
        TaskCounts::from_statuses(&[TaskStatus::Queued, TaskStatus::Queued])
    );
    let (field, _) = field_of(
        m.submit_job(JobSubmission::new("copy", settings(json!({"files": "/a"}))))
            .await
            .expect_err("dest missing"),
    );
    assert_eq!(field, "settings.dest");
    m.close().await.expect("close");
}

/// A job type that names a parent that does not exist is a bug, not a user error.
#[test]
fn bad_parent_indices_are_refused() {
    let job = job_of("x", json!({}));
    let specs = vec![TaskSpec::new("a", "t", vec![]).with_parents(vec![1])];
    assert!(build_tasks(&job, specs).is_err());
    let specs = vec![TaskSpec::new("a", "t", vec![]).with_parents(vec![0])];
    assert!(build_tasks(&job, specs).is_err());
}
