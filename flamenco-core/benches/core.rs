//! Micro-benchmarks of the hot paths: the scheduler's claim and the outbox on the embedded
//! store, variable substitution, and worker-update validation.
//!
//! `cargo bench -p flamenco-core` (criterion; reports in target/criterion).

use std::sync::Arc;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use flamenco_core::config::Config;
use flamenco_core::model::{Command, ObjectId, Task, Worker};
use flamenco_core::protocol::WorkerTaskUpdate;
use flamenco_core::store::sqlite::SqliteStore;
use flamenco_core::store::{ClaimRequest, Store};
use flamenco_core::variables::Substitutions;
use serde_json::json;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn task(i: usize) -> Task {
    let mut t = Task::new(
        format!("bench-{i}"),
        "sleep",
        vec![
            Command::new("echo", json!({"message": "Running Blender from {blender}"})),
            Command::new("sleep", json!({"time_in_seconds": 1})),
        ],
    );
    t.priority = (i % 100) as i32;
    t
}

fn worker() -> Worker {
    Worker {
        id: ObjectId::new(),
        hashed_secret: String::new(),
        secret_sha256: String::new(),
        nickname: "bench".into(),
        address: "127.0.0.1".into(),
        status: "awake".into(),
        platform: "linux".into(),
        time_cost: 0,
        supported_task_types: vec!["sleep".into()],
        software: "Flamenco-Worker/2.5".into(),
        current_task: None,
        last_activity: None,
        current_task_status: String::new(),
        current_task_updated: None,
        status_requested: None,
        tags: Vec::new(),
    }
}

fn store_benches(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let queue: Vec<Task> = (0..100_000).map(task).collect();
    rt.block_on(async {
        for chunk in queue.chunks(10_000) {
            store.insert_tasks(chunk).await.expect("insert");
        }
    });
    let mut group = c.benchmark_group("store");
    group.bench_function("claim with 100k queued (new worker each time)", |b| {
        b.iter_batched(
            || {
                let w = worker();
                rt.block_on(store.insert_worker(&w)).expect("worker");
                w
            },
            |w| {
                rt.block_on(store.claim_task(&ClaimRequest {
                    worker_id: w.id,
                    nickname: w.nickname.clone(),
                    ident: w.identifier(),
                    task_types: w.supported_task_types.clone(),
                    worker_tags: Vec::new(),
                    now: Utc::now(),
                }))
                .expect("claim")
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("outbox peek 100 + ack 100", |b| {
        b.iter(|| {
            rt.block_on(async {
                let batch = store.outbox_peek(100).await.expect("peek");
                let ids: Vec<ObjectId> = batch.iter().map(|u| u.id).collect();
                store.outbox_ack(&ids).await.expect("ack")
            })
        })
    });
    group.finish();
}

fn substitution_benches(c: &mut Criterion) {
    let yaml = "variables:\n  blender:\n    linux: /opt/blender/blender\n    windows: c:/blender.exe\n\
                path_replacement:\n  render:\n    linux: /render\n    windows: 'r:/'\n  job_storage:\n    linux: /shared\n";
    let config = Config::from_yaml(yaml, std::path::Path::new("bench.yaml")).expect("config");
    let subst = Substitutions::new(&config);
    let commands = vec![
        Command::new(
            "blender_render",
            json!({"blender_cmd": "{blender}", "filepath": "{job_storage}/project/shot.blend",
                   "render_output": "{render}/shot/######", "frames": "1..10",
                   "nested": [{"a": "{render}/x"}, "{blender}"]}),
        ),
        Command::new(
            "move_to_final",
            json!({"src": "{render}/a", "dest": "{render}/b"}),
        ),
    ];
    c.bench_function("substitute a blender task for linux", |b| {
        b.iter_batched(
            || commands.clone(),
            |mut cmds| {
                subst.apply("linux", &mut cmds);
                cmds
            },
            BatchSize::SmallInput,
        )
    });
}

fn update_benches(c: &mut Criterion) {
    let body = format!(
        r#"{{"activity": "starting sleep", "current_command_idx": 1, "task_progress_percentage": 0,
            "command_progress_percentage": 0, "metrics": {{"timing": {{"total": 1.5}}}},
            "task_status": "active", "log": "{}"}}"#,
        "x".repeat(2048)
    );
    let task = ObjectId::new();
    c.bench_function("decode and validate a 2 KB worker update", |b| {
        b.iter(|| {
            let u: WorkerTaskUpdate = serde_json::from_str(&body).expect("json");
            u.into_update(task, "127.0.0.1 (bench)", Utc::now())
                .expect("valid")
        })
    });
}

criterion_group!(benches, store_benches, substitution_benches, update_benches);
criterion_main!(benches);
