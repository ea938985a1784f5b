//! Standalone mode end to end: jobs submitted over the job API, run by simulated workers
//! speaking the real worker protocol over HTTP, their status followed by the standalone
//! outbox consumer, and canceled while tasks run (by 2.5 and 2.0.6 workers).

mod common;

use std::time::{Duration, Instant};

use common::{TestManager, TestWorker};
use flamenco_core::model::{JobStatus, ObjectId, TaskStatus};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::watch;

/// The test Manager with the standalone consumer running, as `flamenco serve` runs it.
struct Farm {
    tm: TestManager,
    stop: watch::Sender<bool>,
    consumer: tokio::task::JoinHandle<()>,
}

impl Farm {
    async fn start() -> Farm {
        let tm = TestManager::start().await;
        let (stop, stopped) = watch::channel(false);
        let consumer = tokio::spawn(flamenco_core::jobs::consumer::run(
            tm.manager.clone(),
            stopped,
        ));
        Farm { tm, stop, consumer }
    }

    async fn submit(&self, body: Value) -> ObjectId {
        let resp = self
            .tm
            .client
            .post(self.tm.url("/api/jobs"))
            .json(&body)
            .send()
            .await
            .expect("submit");
        assert_eq!(resp.status(), StatusCode::CREATED);
        let job: Value = resp.json().await.expect("json");
        ObjectId::parse(job["_id"].as_str().expect("id")).expect("id")
    }

    async fn job(&self, id: ObjectId) -> Value {
        let resp = self
            .tm
            .client
            .get(self.tm.url(&format!("/api/jobs/{id}")))
            .send()
            .await
            .expect("get job");
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.expect("json")
    }

    /// Wait (up to 10 s) until the job has `status`; returns the job.
    async fn wait_for_status(&self, id: ObjectId, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let job = self.job(id).await;
            if job["status"] == status {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} did not become {status}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(5), self.consumer)
            .await
            .expect("the consumer stops promptly")
            .expect("join");
        assert_eq!(
            self.tm.manager.outbox_len().await.expect("len"),
            0,
            "the consumer drained the outbox"
        );
        self.tm.stop().await;
    }
}

/// What a Flamenco Worker does with a task, without running the commands: say it is
/// active, ask may-i-run, log, report completion. Returns the task as received.
async fn run_task(w: &TestWorker) -> Option<Value> {
    let (status, task) = w.task().await;
    if status == StatusCode::NO_CONTENT {
        return None;
    }
    assert_eq!(status, StatusCode::OK, "{task}");
    let id = ObjectId::parse(task["_id"].as_str().unwrap()).unwrap();
    let update = |st: &str, activity: &str| {
        json!({"task_status": st, "activity": activity, "current_command_idx": 0,
               "task_progress_percentage": 0, "command_progress_percentage": 0,
               "log": format!("{activity}\n")})
    };
    assert_eq!(
        w.update(id, update("active", "")).await,
        StatusCode::NO_CONTENT
    );
    let (_, answer) = w.may_i_run(id).await;
    assert_eq!(answer, json!({"may_keep_running": true}));
    assert_eq!(
        w.update(id, update("completed", "Task completed")).await,
        StatusCode::NO_CONTENT
    );
    Some(task)
}

/// Let `workers` take turns until none gets a task; returns every task run, in order.
async fn run_until_idle(workers: &[TestWorker]) -> Vec<Value> {
    let mut done = Vec::new();
    loop {
        let mut any = false;
        for w in workers {
            if let Some(task) = run_task(w).await {
                done.push(task);
                any = true;
            }
        }
        if !any {
            return done;
        }
    }
}

#[tokio::test]
async fn sleep_job_runs_to_completed() {
    let farm = Farm::start().await;
    let id = farm
        .submit(json!({"job_type": "sleep",
                       "settings": {"frames": "1-20", "chunk_size": 5, "time_in_seconds": 1}}))
        .await;
    let a = farm.tm.register("a", "linux", &["sleep"]).await;
    let b = farm.tm.register("b", "linux", &["sleep"]).await;
    let other = farm.tm.register("c", "linux", &["blender-render"]).await;
    assert_eq!(
        other.task().await.0,
        StatusCode::NO_CONTENT,
        "task types are respected"
    );

    // The first task a worker takes makes the job active.
    let first = run_task(&a).await.expect("a task");
    assert_eq!(first["name"], "sleep-1-5");
    assert_eq!(first["job"], id.to_hex());
    assert_eq!(first["job_type"], "sleep");
    assert_eq!(first["task_type"], "sleep");
    assert_eq!(
        first["commands"],
        json!([{"name": "echo", "settings": {"message": "Preparing to sleep"}},
               {"name": "sleep", "settings": {"time_in_seconds": 1}}])
    );
    let job = farm.wait_for_status(id, "active").await;
    assert_eq!(job["task_counts"]["completed"], 1);

    let rest = run_until_idle(&[a, b]).await;
    let names: Vec<&str> = rest.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["sleep-6-10", "sleep-11-15", "sleep-16-20"]);
    let job = farm.wait_for_status(id, "completed").await;
    assert_eq!(job["task_counts"], json!({"completed": 4}));
    farm.stop().await;
}

#[tokio::test]
async fn blender_render_job_with_a_stub_blender_runs_to_completed() {
    let farm = Farm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let stub = dir.path().join("blender");
    std::fs::write(
        &stub,
        "#!/bin/sh\necho \"Fra:1 Mem:1.00M | Rendering\"\nexit 0\n",
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let blend = dir.path().join("shot.blend");
    std::fs::write(&blend, b"BLENDER").unwrap();
    let out = dir.path().join("render/shot");
    let id = farm
        .submit(
            json!({"name": "shot", "job_type": "blender-render", "priority": 60, "settings": {
            "blender_cmd": stub.to_str().unwrap(),
            "filepath": blend.to_str().unwrap(),
            "render_output": format!("{}/frame-######", out.display()),
            "frames": "1-6", "chunk_size": 2, "format": "PNG"}}),
        )
        .await;
    let renderer = farm
        .tm
        .register("r", "linux", &["blender-render", "file-management"])
        .await;
    let helper = farm
        .tm
        .register("h", "linux", &["blender-render", "file-management"])
        .await;
    let third = farm.tm.register("t", "linux", &["blender-render"]).await;

    // Three render tasks, then move-to-final (its parents are the renders).
    let mut renders = Vec::new();
    for w in [&renderer, &helper, &third] {
        let (status, task) = w.task().await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(task["task_type"], "blender-render");
        assert_eq!(task["job_priority"], 60);
        let cmd = &task["commands"][0];
        assert_eq!(cmd["name"], "blender_render");
        assert_eq!(cmd["settings"]["blender_cmd"], stub.to_str().unwrap());
        assert_eq!(
            cmd["settings"]["render_output"],
            format!("{}__intermediate/frame-######", out.display())
        );
        renders.push(task);
    }
    let frames: Vec<&str> = renders
        .iter()
        .map(|t| t["commands"][0]["settings"]["frames"].as_str().unwrap())
        .collect();
    assert_eq!(frames, ["1,2", "3,4", "5,6"]);
    assert_eq!(
        farm.tm
            .register("x", "linux", &["file-management"])
            .await
            .task()
            .await
            .0,
        StatusCode::NO_CONTENT,
        "move-to-final waits for every render"
    );
    // The stub stands in for Blender the way a worker calls it.
    let run = std::process::Command::new(&stub)
        .args(["--enable-autoexec", "-noaudio", "--background"])
        .arg(&blend)
        .output()
        .expect("run the stub");
    assert!(run.status.success());
    assert!(String::from_utf8_lossy(&run.stdout).starts_with("Fra:1"));
    for (task, w) in renders.iter().zip([&renderer, &helper, &third]) {
        let id = ObjectId::parse(task["_id"].as_str().unwrap()).unwrap();
        assert_eq!(
            w.update(id, json!({"task_status": "active"})).await,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            w.update(
                id,
                json!({"task_status": "completed", "activity": "Task completed"})
            )
            .await,
            StatusCode::NO_CONTENT
        );
    }
    let last = run_task(&helper).await.expect("move-to-final");
    assert_eq!(last["name"], "move-to-final");
    assert_eq!(last["task_type"], "file-management");
    assert_eq!(
        last["commands"],
        json!([{"name": "move_to_final", "settings": {
            "src": format!("{}__intermediate", out.display()),
            "dest": out.display().to_string()}}])
    );
    assert_eq!(last["parents"].as_array().unwrap().len(), 3);
    let job = farm.wait_for_status(id, "completed").await;
    assert_eq!(job["task_counts"], json!({"completed": 4}));
    farm.stop().await;
}

#[tokio::test]
async fn cancel_while_tasks_run() {
    let farm = Farm::start().await;
    let id = farm
        .submit(json!({"job_type": "sleep",
                       "settings": {"frames": "1-4", "time_in_seconds": 30}}))
        .await;
    let a = farm.tm.register("a", "linux", &["sleep"]).await;
    let b = farm
        .tm
        .register_as("b", "linux", &["sleep"], "Flamenco-Worker/2.0.6")
        .await;
    let mut running = Vec::new();
    for w in [&a, &b] {
        let (status, task) = w.task().await;
        assert_eq!(status, StatusCode::OK);
        let tid = ObjectId::parse(task["_id"].as_str().unwrap()).unwrap();
        assert_eq!(
            w.update(tid, json!({"task_status": "active"})).await,
            StatusCode::NO_CONTENT
        );
        running.push(tid);
    }
    farm.wait_for_status(id, "active").await;

    let resp = farm
        .tm
        .client
        .post(farm.tm.url(&format!("/api/jobs/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let job: Value = resp.json().await.unwrap();
    assert_eq!(job["status"], "cancel-requested");
    assert_eq!(
        job["task_counts"],
        json!({"cancel-requested": 2, "canceled": 2})
    );

    for (w, tid) in [&a, &b].into_iter().zip(&running) {
        // may-i-run says no; the worker's last updates keep their log but not their status
        // (v2 refused them); it returns the task
        // (2.2+) or asks for another one (2.0.x).
        let (_, answer) = w.may_i_run(*tid).await;
        assert_eq!(answer["may_keep_running"], false);
        assert_eq!(
            answer["reason"],
            format!("task {tid} in non-runnable status cancel-requested")
        );
        assert_eq!(
            w.update(
                *tid,
                json!({"task_status": "canceled", "activity": "Task was canceled"})
            )
            .await,
            StatusCode::NO_CONTENT,
            "the last words of a canceled task are kept, its status is not"
        );
        if w.software == "Flamenco-Worker/2.0.6" {
            // 2.0.x has no return: it just asks for its next task, so it runs none.
            assert_eq!(w.task().await.0, StatusCode::NO_CONTENT);
        } else {
            assert_eq!(
                w.post_empty(&format!("/tasks/{tid}/return")).await.status(),
                StatusCode::NO_CONTENT
            );
        }
        let task = farm.tm.task(*tid).await;
        assert_eq!(
            task.status,
            TaskStatus::Canceled,
            "the stopped task ends canceled"
        );
        assert!(
            task.activity.contains("stopped running it"),
            "{}",
            task.activity
        );
    }
    let job = farm.wait_for_status(id, "canceled").await;
    assert_eq!(job["task_counts"], json!({"canceled": 4}));
    assert_eq!(
        farm.tm.manager.get_job(id).await.unwrap().unwrap().status,
        JobStatus::Canceled
    );
    for w in [&a, &b] {
        assert_eq!(
            w.task().await.0,
            StatusCode::NO_CONTENT,
            "nothing left to run"
        );
    }
    farm.stop().await;
}
