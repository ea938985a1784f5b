//! Upstream push throughput: how fast a Manager in upstream mode empties its outbox into a
//! Flamenco Server, and how many bytes gzip saves on the wire (issue #8, item 4).
//!
//! A Manager on the embedded store (in a temporary directory) is pointed at the in-process
//! Server test double (`flamenco-testserver`). The Server gets a job of `--tasks` tasks,
//! which the Manager downloads the normal way (a depsgraph request), so every update
//! refers to a task the Server knows and is applied by it (status, progress, activity,
//! log), not skipped. Then `--updates` task updates are queued in the outbox, a mix like
//! real workers send: status changes, activity/progress-only updates, and log-heavy updates
//! carrying about `--log-bytes` of Blender-like render log lines (varying frame numbers,
//! times, memory figures and sample counts, so gzip's ratio is an honest one). The
//! measured part is `upstream::push::push_all` until the outbox is empty.
//!
//! ```text
//! cargo run --release --example upstream_push -- [--updates 50000] [--tasks 1000]
//!     [--log-bytes 2048] [--batch 1000] [--gzip both|on|off] [--breakdown]
//! ```
//!
//! Prints one JSON object per gzip mode. `--breakdown` then pushes a second, identical
//! outbox with the same calls `push_once` makes, timed one by one (peek, JSON encoding,
//! compression, the HTTP call with the Server's work, acknowledgement), and reports the
//! split. The Server double runs in this process: its JSON decoding and bookkeeping are
//! part of the HTTP time.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use flamenco_core::config::{Config, UpstreamGzip};
use flamenco_core::model::{ObjectId, TaskStatus, TaskUpdate};
use flamenco_core::upstream::{download, push, wire};
use flamenco_core::Manager;
use flamenco_testserver::{Endpoint, GzipMode, NewJob, TestServer};
use serde_json::json;

#[derive(Parser, Debug, Clone)]
#[command(about = "Measure the upstream pusher against an in-process Flamenco Server double")]
struct Args {
    /// Task updates to queue and push.
    #[arg(long, default_value_t = 50_000)]
    updates: usize,
    /// Tasks of the Server's job (the updates are spread over them).
    #[arg(long, default_value_t = 1_000)]
    tasks: usize,
    /// Approximate size of the log of a log-heavy update, in bytes.
    #[arg(long, default_value_t = 2048)]
    log_bytes: usize,
    /// Updates per push (`task_update_push_max_count`).
    #[arg(long, default_value_t = 1000)]
    batch: u32,
    /// Which gzip modes to measure: `both`, `on` or `off`.
    #[arg(long, default_value = "both")]
    gzip: String,
    /// Also time the phases of a push (peek, encode, compress, HTTP, ack).
    #[arg(long)]
    breakdown: bool,
}

/// A small deterministic generator (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Blender-like render log lines until about `bytes` long, as a worker sends them.
fn render_log(rng: &mut Rng, frame: u64, bytes: usize) -> String {
    let mut log = String::with_capacity(bytes + 200);
    let samples = [64, 128, 256, 512][rng.below(4) as usize];
    let mut sample = 1 + rng.below(samples / 2);
    let tile_total = 24 + rng.below(40);
    let mut tile = rng.below(tile_total / 2);
    let mut secs = rng.below(600) as f64 + rng.below(100) as f64 / 100.0;
    let mem = 200.0 + rng.below(4000) as f64 / 7.0;
    let peak = mem + rng.below(900) as f64 / 3.0;
    let stamp = |s: f64| format!("{:02}:{:05.2}", (s / 60.0) as u64, s % 60.0);
    let hh = 8 + rng.below(12);
    let mm = rng.below(60);
    while log.len() < bytes {
        let kind = rng.below(10);
        secs += rng.below(400) as f64 / 100.0;
        let remaining = secs * (samples - sample.min(samples)) as f64 / sample.max(1) as f64;
        let line = match kind {
            0 => format!(
                "{hh:02}:{mm:02}:{:02} Fra:{frame} Mem:{mem:.2}M (Peak {peak:.2}M) | Time:{} | Mem:{:.2}M, Peak:{:.2}M | Scene, ViewLayer | Synchronizing object | {}\n",
                (secs as u64) % 60,
                stamp(secs),
                mem / 3.0,
                peak / 3.0,
                ["Cube", "Plane.001", "Suzanne", "Armature.Body", "Tree.017", "Rock_Large.3"]
                    [rng.below(6) as usize],
            ),
            1 => {
                tile = (tile + 1).min(tile_total);
                format!(
                    "{hh:02}:{mm:02}:{:02} Fra:{frame} Mem:{mem:.2}M (Peak {peak:.2}M) | Time:{} | Remaining:{} | Mem:{:.2}M, Peak:{:.2}M | Scene, ViewLayer | Rendered {tile}/{tile_total} Tiles\n",
                    (secs as u64) % 60,
                    stamp(secs),
                    stamp(remaining),
                    mem / 2.5,
                    peak / 2.5,
                )
            }
            _ => {
                sample = (sample + 1 + rng.below(3)).min(samples);
                format!(
                    "{hh:02}:{mm:02}:{:02} Fra:{frame} Mem:{mem:.2}M (Peak {peak:.2}M) | Time:{} | Remaining:{} | Mem:{:.2}M, Peak:{:.2}M | Scene, ViewLayer | Sample {sample}/{samples}\n",
                    (secs as u64) % 60,
                    stamp(secs),
                    stamp(remaining),
                    mem / 2.5,
                    peak / 2.5,
                )
            }
        };
        log.push_str(&line);
    }
    log
}

/// The mix: 1 in 10 a status change (with a short log line), 3 in 10 activity and
/// progress only, 6 in 10 log-heavy (render output).
fn make_update(rng: &mut Rng, i: usize, tasks: &[ObjectId], log_bytes: usize) -> TaskUpdate {
    let task = tasks[i % tasks.len()];
    let mut u = TaskUpdate::new(task, chrono::Utc::now());
    u.worker = format!("worker-{:03}", rng.below(64));
    let frame = 1 + (i % tasks.len()) as u64;
    match i % 10 {
        0 => {
            let (status, text) = if rng.below(2) == 0 {
                (TaskStatus::Active, "Starting")
            } else {
                (TaskStatus::Completed, "Task completed")
            };
            u.task_status = Some(status);
            u.activity = text.into();
            u.log = format!(
                "{} Worker {}: {text} task {task}\n",
                chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                u.worker
            );
        }
        1 | 4 | 7 => {
            u.activity = format!("Rendering frame {frame}, sample {}", rng.below(512));
            u.task_progress_percentage = rng.below(101) as i64;
            u.command_progress_percentage = rng.below(101) as i64;
            u.current_command_idx = 1;
        }
        _ => {
            u.activity = format!("Rendering frame {frame}");
            u.task_progress_percentage = rng.below(101) as i64;
            u.command_progress_percentage = rng.below(101) as i64;
            u.current_command_idx = 1;
            u.log = render_log(rng, frame, log_bytes);
        }
    }
    u
}

/// One Manager against one Server, with the Server's tasks downloaded.
struct Setup {
    server: TestServer,
    manager: Arc<Manager>,
    task_ids: Vec<ObjectId>,
    _dir: tempfile::TempDir,
}

async fn setup(args: &Args, gzip: bool) -> anyhow::Result<Setup> {
    let server = TestServer::start().await;
    server.set_gzip(GzipMode::Accept);
    let creds = server.add_manager();
    server.add_job(&creds.id, NewJob::sleep(args.tasks, 1));
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        flamenco: server.url(),
        manager_id: creds.id.clone(),
        manager_secret: creds.token.clone(),
        own_url: "http://manager.test:8083/".into(),
        task_update_push_max_count: args.batch,
        upstream_gzip: if gzip {
            UpstreamGzip::On
        } else {
            UpstreamGzip::Off
        },
        ..Config::default()
    };
    let manager = Arc::new(Manager::open(config).await.context("opening the Manager")?);
    let mut task_ids = Vec::new();
    for _ in 0..10 {
        let outcome = download::download_once(&manager)
            .await
            .context("downloading the Server's tasks")?;
        if outcome.nothing_new {
            break;
        }
        if outcome.stored.inserted == 0 {
            break;
        }
    }
    for t in manager
        .store()
        .list_tasks(&Default::default())
        .await
        .context("listing the downloaded tasks")?
    {
        task_ids.push(t.id);
    }
    if task_ids.len() != args.tasks {
        bail!(
            "the Manager downloaded {} of the Server's {} tasks",
            task_ids.len(),
            args.tasks
        );
    }
    Ok(Setup {
        server,
        manager,
        task_ids,
        _dir: dir,
    })
}

/// Queue the updates, many at once so the writer's group commit batches them.
async fn fill_outbox(setup: &Setup, args: &Args, seed: u64) -> anyhow::Result<()> {
    let mut rng = Rng(seed | 1);
    let updates: Vec<TaskUpdate> = (0..args.updates)
        .map(|i| make_update(&mut rng, i, &setup.task_ids, args.log_bytes))
        .collect();
    let lanes = 32;
    let mut chunks: Vec<Vec<TaskUpdate>> = (0..lanes).map(|_| Vec::new()).collect();
    for (i, u) in updates.into_iter().enumerate() {
        chunks[i % lanes].push(u);
    }
    let mut set = tokio::task::JoinSet::new();
    for chunk in chunks {
        let manager = setup.manager.clone();
        set.spawn(async move {
            for u in chunk {
                manager.store().queue_update(u).await?;
            }
            Ok::<_, flamenco_core::store::StoreError>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.context("queueing task")?.context("queueing an update")?;
    }
    let len = setup.manager.store().outbox_len().await?;
    if len != args.updates as u64 {
        bail!("the outbox holds {len} updates, not {}", args.updates);
    }
    Ok(())
}

fn inflated_len(body: &[u8]) -> anyhow::Result<u64> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .context("inflating a recorded request body")?;
    Ok(out.len() as u64)
}

async fn measure(args: &Args, gzip: bool) -> anyhow::Result<serde_json::Value> {
    let setup = setup(args, gzip).await?;
    fill_outbox(&setup, args, 0x5eed).await?;
    let before = setup.server.requests_to(Endpoint::TaskUpdateBatch).len();

    let start = Instant::now();
    let summary = push::push_all(&setup.manager, |_| {})
        .await
        .context("pushing the outbox")?;
    let seconds = start.elapsed().as_secs_f64();

    if summary.remaining != 0 || summary.acknowledged != args.updates as u64 {
        bail!(
            "the push did not empty the outbox: {} acknowledged, {} remaining, {} set aside",
            summary.acknowledged,
            summary.remaining,
            summary.set_aside
        );
    }
    let received = setup.server.received_updates().len();
    if received != args.updates {
        bail!(
            "the Server received {received} updates, not {}",
            args.updates
        );
    }
    let requests = setup.server.requests_to(Endpoint::TaskUpdateBatch);
    let mut bytes_on_wire = 0u64;
    let mut bytes_uncompressed = 0u64;
    for r in &requests[before..] {
        bytes_on_wire += r.body.len() as u64;
        bytes_uncompressed += if r.header("content-encoding") == Some("gzip") {
            inflated_len(&r.body)?
        } else {
            r.body.len() as u64
        };
    }
    let mut report = json!({
        "gzip": gzip,
        "updates": args.updates,
        "tasks": args.tasks,
        "log_bytes": args.log_bytes,
        "seconds": round3(seconds),
        "updates_per_second": (args.updates as f64 / seconds).round(),
        "pushes": summary.pushes,
        "batch_size": args.batch,
        "bytes_on_wire": bytes_on_wire,
        "bytes_uncompressed": bytes_uncompressed,
        "gzip_ratio": round3(bytes_uncompressed as f64 / bytes_on_wire.max(1) as f64),
    });
    if args.breakdown {
        report["breakdown"] = breakdown(&setup, args, gzip).await?;
    }
    setup.manager.close().await.context("closing the store")?;
    Ok(report)
}

/// Push a second outbox of the same size with the calls `push_once` makes, each timed.
async fn breakdown(setup: &Setup, args: &Args, gzip: bool) -> anyhow::Result<serde_json::Value> {
    fill_outbox(setup, args, 0xbead).await?;
    let store = setup.manager.store();
    let up = setup
        .manager
        .upstream()
        .context("the Manager is not in upstream mode")?;
    let limit = args.batch.max(1) as usize;
    let (mut peek, mut encode, mut compress, mut http, mut ack) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    let start = Instant::now();
    loop {
        let t = Instant::now();
        let batch = store.outbox_peek(limit).await?;
        peek += t.elapsed();
        if batch.is_empty() {
            break;
        }
        let t = Instant::now();
        let body = wire::push_body(&batch);
        encode += t.elapsed();
        if gzip {
            // The client compresses inside `push`; time the same work here to split it out.
            let t = Instant::now();
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&body)?;
            std::hint::black_box(enc.finish()?);
            compress += t.elapsed();
        }
        let t = Instant::now();
        let answer = up.client().push(&body, gzip).await?;
        http += t.elapsed();
        let t = Instant::now();
        let acked = store.outbox_ack(&answer.handled_update_ids).await?;
        ack += t.elapsed();
        if acked == 0 {
            bail!(
                "the Server acknowledged nothing of a batch of {}",
                batch.len()
            );
        }
    }
    let total = start.elapsed().as_secs_f64();
    let part = |d: Duration| round3(d.as_secs_f64());
    // `http` includes the client's own compression; report the Server's share without it.
    Ok(json!({
        "seconds": round3(total),
        "updates_per_second": (args.updates as f64 / total).round(),
        "peek_s": part(peek),
        "encode_json_s": part(encode),
        "compress_s": part(compress),
        "http_incl_compress_and_server_s": part(http),
        "http_without_compress_s": round3((http.as_secs_f64() - compress.as_secs_f64()).max(0.0)),
        "ack_s": part(ack),
    }))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    if args.updates == 0 || args.tasks == 0 {
        bail!("--updates and --tasks must be at least 1");
    }
    let modes: &[bool] = match args.gzip.as_str() {
        "both" => &[true, false],
        "on" => &[true],
        "off" => &[false],
        other => bail!("--gzip must be `both`, `on` or `off`, not {other:?}"),
    };
    for &gzip in modes {
        let report = measure(&args, gzip).await?;
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}
