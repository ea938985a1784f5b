//! Worker secrets at scale, against the real `flamenco serve` process (issue #10, item 5;
//! docs/security.md, "Worker secrets"):
//!
//! * **restart storm**: 1,000 registered workers reconnect at once to a restarted Manager.
//!   Their secrets verify against the stored fast hash (`secret_sha256`), so no bcrypt runs;
//!   the time until all are served is printed (the bound asserted is generous, the figure
//!   goes into docs/performance.md).
//! * **wrong-secret flood**: 32 clients send wrong secrets for the worker ids `/as-json`
//!   lists. They get 401 and then 429 with `Retry-After`; a verified worker polling at the
//!   same time is always served. Its latency percentiles, with and without the flood, are
//!   printed.
//!
//! The two tests take turns (a lock), so that neither measures the other. Figures print to
//! stdout: run with `--nocapture` to see them.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flamenco_core::auth;
use flamenco_core::config::Config;
use flamenco_core::model::{worker_status, ObjectId, Worker};
use flamenco_core::Manager;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{serve, terminate};

const WAIT: Duration = Duration::from_secs(60);

/// One test at a time: each measures latencies on a 2-core machine.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn write_config(dir: &Path, port: u16) -> PathBuf {
    let path = dir.join("flamenco-manager.yaml");
    let text = format!(
        "listen: '127.0.0.1:{port}'\ndata_dir: '{}'\n",
        dir.join("data").display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// A worker's credentials.
#[derive(Clone, Debug)]
struct Creds {
    id: String,
    secret: String,
}

/// A 64-character secret, as long as the Flamenco Worker's (which are random letters and
/// digits; unique is all this test needs).
fn worker_secret() -> String {
    let mut s: String = (0..3).map(|_| ObjectId::new().to_hex()).collect();
    s.truncate(64);
    s
}

async fn register(http: &reqwest::Client, base: &str, nickname: &str, secret: &str) -> Creds {
    let resp = http
        .post(format!("{base}/register-worker"))
        .json(&json!({"secret": secret, "platform": "linux",
                      "supported_task_types": ["sleep"], "nickname": nickname}))
        .send()
        .await
        .expect("register");
    assert_eq!(resp.status(), StatusCode::OK, "register {nickname}");
    let body: Value = resp.json().await.expect("register body");
    Creds {
        id: body["_id"].as_str().expect("_id").to_string(),
        secret: secret.to_string(),
    }
}

/// `POST /task` with these credentials: the status.
async fn poll(http: &reqwest::Client, base: &str, creds: &Creds) -> reqwest::Response {
    http.post(format!("{base}/task"))
        .basic_auth(&creds.id, Some(&creds.secret))
        .header("Content-Length", "0")
        .send()
        .await
        .expect("an answer")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(latencies: &mut [Duration]) -> String {
    latencies.sort();
    format!(
        "n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
        latencies.len(),
        percentile(latencies, 50.0).as_secs_f64() * 1e3,
        percentile(latencies, 99.0).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    )
}

/// Put `n` workers straight into the store, as if registered earlier: one secret (and so
/// one bcrypt hash, computed once) shared by all, but each with its own salted fast hash,
/// as registration writes it. Registering them over HTTP would cost `n` bcrypt runs
/// (about a minute on two cores) and measure nothing this test is about.
async fn seed_workers(config: &Path, n: usize) -> Vec<Creds> {
    let (config, _) = Config::load(Some(config)).expect("load config");
    let manager = Manager::open(config).await.expect("open the store");
    let secret = worker_secret();
    let hashed = {
        let secret = secret.clone();
        tokio::task::spawn_blocking(move || auth::hash_secret(&secret))
            .await
            .expect("join")
            .expect("bcrypt")
    };
    let mut creds = Vec::with_capacity(n);
    for i in 0..n {
        let id = ObjectId::new();
        let worker = Worker {
            id,
            hashed_secret: hashed.clone(),
            secret_sha256: auth::digest::make(&secret, &hashed).expect("long secret"),
            nickname: format!("seeded-{i}"),
            address: "127.0.0.1".into(),
            status: worker_status::AWAKE.into(),
            platform: "linux".into(),
            time_cost: 0,
            supported_task_types: vec!["sleep".into()],
            software: "Flamenco-Worker/2.5".into(),
            current_task: None,
            last_activity: Some(manager.now()),
            current_task_status: String::new(),
            current_task_updated: None,
            status_requested: None,
            tags: Vec::new(),
        };
        manager
            .store()
            .insert_worker(&worker)
            .await
            .expect("insert");
        creds.push(Creds {
            id: id.to_hex(),
            secret: secret.clone(),
        });
    }
    manager.close().await.expect("close");
    creds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_workers_reconnect_at_once_after_a_restart() {
    const WORKERS: usize = 1000;
    const OVER_HTTP: usize = 20;
    let _turn = TURN.lock().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::free_port();
    let config = write_config(dir.path(), port);
    let base = format!("http://127.0.0.1:{port}");

    let mut workers = seed_workers(&config, WORKERS - OVER_HTTP).await;
    let child = serve(dir.path(), Some(&config), WAIT).await;
    let http = reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .expect("client");
    let started = Instant::now();
    for i in 0..OVER_HTTP {
        let creds = register(&http, &base, &format!("http-{i}"), &worker_secret()).await;
        let resp = http
            .post(format!("{base}/sign-on"))
            .basic_auth(&creds.id, Some(&creds.secret))
            .json(&json!({"supported_task_types": ["sleep"]}))
            .send()
            .await
            .expect("sign-on");
        assert_eq!(resp.status(), StatusCode::NO_CONTENT, "sign-on");
        workers.push(creds);
    }
    println!(
        "restart storm: registered {OVER_HTTP} workers over HTTP in {:.2} s (bcrypt, one slot)",
        started.elapsed().as_secs_f64()
    );
    terminate(child, WAIT).await;

    // Restart: nothing is cached in the new process.
    let child = serve(dir.path(), Some(&config), WAIT).await;
    let retries = Arc::new(AtomicU64::new(0));
    // One client: its pool has no open connection to the new process, so each of the
    // concurrent requests opens its own, as the workers do after a restart.
    let http = reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .expect("client");
    let started = Instant::now();
    let handles: Vec<_> = workers
        .iter()
        .cloned()
        .map(|creds| {
            let http = http.clone();
            let base = base.clone();
            let retries = retries.clone();
            tokio::spawn(async move {
                loop {
                    let sent = Instant::now();
                    let resp = poll(&http, &base, &creds).await;
                    match resp.status() {
                        StatusCode::NO_CONTENT | StatusCode::OK => return sent.elapsed(),
                        // Busy: a worker tries again, as the real one does.
                        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            assert!(started.elapsed() < WAIT, "not served within {WAIT:?}");
                            // The worker's back-off before it asks again: part of the storm
                            // under test.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        other => panic!("worker {} answered {other}", creds.id),
                    }
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(WORKERS);
    for handle in handles {
        latencies.push(handle.await.expect("worker task"));
    }
    let all_served = started.elapsed();
    println!(
        "restart storm: {WORKERS} workers reconnecting at once were all served in {:.2} s \
         ({} retries after 429/503; per request {})",
        all_served.as_secs_f64(),
        retries.load(Ordering::Relaxed),
        summary(&mut latencies)
    );
    assert_eq!(latencies.len(), WORKERS);
    assert!(
        all_served < WAIT,
        "all {WORKERS} workers should be served within {WAIT:?}, took {all_served:?}"
    );
    terminate(child, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_flood_gets_429_while_verified_workers_are_served() {
    const ATTACKERS: usize = 32;
    const SAMPLES: usize = 200;
    const PACE: Duration = Duration::from_millis(25);
    let _turn = TURN.lock().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::free_port();
    let config = write_config(dir.path(), port);
    let base = format!("http://127.0.0.1:{port}");
    let child = serve(dir.path(), Some(&config), WAIT).await;
    let http = reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .expect("client");

    // The verified worker, and victims: some with long secrets (fast hash) and some with
    // short ones (bcrypt only, the expensive kind to attack).
    let verified = register(&http, &base, "verified", &worker_secret()).await;
    assert_eq!(
        poll(&http, &base, &verified).await.status(),
        StatusCode::NO_CONTENT
    );
    for i in 0..4 {
        register(&http, &base, &format!("long-{i}"), &worker_secret()).await;
        register(
            &http,
            &base,
            &format!("short-{i}"),
            &format!("short-secret-{i}"),
        )
        .await;
    }
    let report: Value = http
        .get(format!("{base}/as-json"))
        .send()
        .await
        .expect("as-json")
        .json()
        .await
        .expect("as-json body");
    let ids: Vec<String> = report["workers"]
        .as_array()
        .expect("workers listed")
        .iter()
        .map(|w| w["_id"].as_str().expect("_id").to_string())
        .collect();
    assert_eq!(ids.len(), 9);

    /// The verified worker polls `SAMPLES` times, every `PACE`: its latencies. It runs on
    /// a thread and runtime of its own, so that its numbers measure the Manager, not the
    /// attackers' tasks queued ahead of it in the test's runtime.
    fn verified_polls(base: &str, creds: &Creds) -> std::thread::JoinHandle<Vec<Duration>> {
        let (base, creds) = (base.to_string(), creds.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let http = reqwest::Client::builder()
                    .timeout(WAIT)
                    .build()
                    .expect("client");
                let mut latencies = Vec::with_capacity(SAMPLES);
                let mut next = Instant::now();
                for _ in 0..SAMPLES {
                    tokio::time::sleep_until(next.into()).await;
                    next += PACE;
                    let sent = Instant::now();
                    let status = poll(&http, &base, &creds).await.status();
                    latencies.push(sent.elapsed());
                    assert_eq!(
                        status,
                        StatusCode::NO_CONTENT,
                        "the verified worker is served"
                    );
                }
                latencies
            })
        })
    }

    let join = |handle: std::thread::JoinHandle<Vec<Duration>>| {
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    };

    let mut quiet = join(verified_polls(&base, &verified));

    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default()); // 401, 429, other, no Retry-After
    let attackers: Vec<_> = (0..ATTACKERS)
        .map(|a| {
            let http = reqwest::Client::builder()
                .timeout(WAIT)
                .build()
                .expect("client");
            let (base, ids, stop, counts) =
                (base.clone(), ids.clone(), stop.clone(), counts.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + WAIT;
                let mut n = a;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let creds = Creds {
                        id: ids[n % ids.len()].clone(),
                        secret: format!("wrong-secret-{n}"),
                    };
                    n += ATTACKERS;
                    let resp = poll(&http, &base, &creds).await;
                    match resp.status() {
                        StatusCode::UNAUTHORIZED => counts[0].fetch_add(1, Ordering::Relaxed),
                        StatusCode::TOO_MANY_REQUESTS => {
                            if !resp.headers().contains_key("retry-after") {
                                counts[3].fetch_add(1, Ordering::Relaxed);
                            }
                            counts[1].fetch_add(1, Ordering::Relaxed)
                        }
                        _ => counts[2].fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let flood_started = Instant::now();
    let verified_during = verified_polls(&base, &verified);
    let mut flooded = tokio::task::spawn_blocking(move || join(verified_during))
        .await
        .expect("join");
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.await.expect("attacker");
    }
    let flood_secs = flood_started.elapsed().as_secs_f64();
    let [unauthorized, too_many, other, no_retry_after] =
        [0, 1, 2, 3].map(|i| counts[i].load(Ordering::Relaxed));
    println!(
        "wrong-secret flood: {ATTACKERS} clients sent {} requests in {flood_secs:.1} s \
         ({unauthorized} × 401, {too_many} × 429, {other} other)",
        unauthorized + too_many + other
    );
    println!(
        "wrong-secret flood: verified worker without the flood {}",
        summary(&mut quiet)
    );
    println!(
        "wrong-secret flood: verified worker during the flood  {}",
        summary(&mut flooded)
    );
    assert_eq!(other, 0, "wrong secrets get only 401 or 429");
    assert!(too_many > 0, "the flood is limited with 429");
    assert_eq!(no_retry_after, 0, "every 429 says when to retry");
    // The limits are per unverified attempt: the flood stayed well below what it sent.
    assert!(
        unauthorized < too_many,
        "{unauthorized} × 401, {too_many} × 429"
    );

    // The verified worker is still served afterwards, and the victims' real secrets were
    // never needed for that.
    assert_eq!(
        poll(&http, &base, &verified).await.status(),
        StatusCode::NO_CONTENT
    );
    terminate(child, WAIT).await;
}
