//! Workers are never starved (docs/security.md, "Connection starvation"): over real
//! loopback sockets, with attackers on their own source addresses (127.0.0.2, 127.0.0.3, …;
//! the whole of 127.0.0.0/8 is loopback on Linux) while the worker uses 127.0.0.1.
//!
//! * 1,100 idle `/imagewatch` streams plus 1,100 clients trickling request heads, from 40
//!   addresses, reconnecting whenever they are dropped: fresh worker connections still get
//!   their `/task` answer (the p99 over 50 is printed; the assertion is a generous 10 s),
//!   another client gets a 503 at once instead of a hang, and once the attackers leave the
//!   open connections, streams and file descriptors are back to where they were.
//! * The stream cap (`max_streams`, `max_streams_per_ip`: 503 with `Retry-After`) and the
//!   stream lifetime (`stream_max_lifetime`).
//! * `max_connections_per_ip`, and the reserve kept for workers' addresses, also right
//!   after a restart (the addresses come from the store).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestManager, TestWorker};
use flamenco_core::config::Config;
use flamenco_core::metrics::connection_class;
use flamenco_core::store::sqlite::SqliteStore;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

fn config(extra: &str) -> Config {
    Config::from_yaml(extra, std::path::Path::new("starvation.yaml")).expect("config")
}

fn server_addr(tm: &TestManager) -> SocketAddr {
    tm.base
        .trim_start_matches("http://")
        .parse()
        .expect("socket address")
}

/// 127.0.0.`n`.
fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// A TCP connection to `server` from the source address `from`.
async fn connect_from(from: Ipv4Addr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0))?;
    socket.connect(server).await
}

/// Raise the soft limit on open files to the hard limit: the big test holds thousands of
/// sockets on each side in this one process.
fn raise_open_file_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit),
            0,
            "getrlimit"
        );
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0, "setrlimit");
        }
    }
    assert!(
        limit.rlim_cur >= needed,
        "this test needs {needed} open files but the hard limit is {}: raise it (ulimit -Hn)",
        limit.rlim_cur
    );
}

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Wait until `cond` holds, or fail with `what` after `within`.
async fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn gauges(tm: &TestManager) -> (i64, i64, i64) {
    let m = tm.manager.metrics();
    (
        m.connection_gauge(connection_class::WORKER).get(),
        m.connection_gauge(connection_class::OTHER).get(),
        m.stream_gauge().get(),
    )
}

/// A worker registered and signed on from 127.0.0.1.
async fn signed_on_worker(tm: &TestManager, name: &str) -> TestWorker {
    let worker = tm.register(name, "linux", &["sleep"]).await;
    let status = worker
        .sign_on(json!({"supported_task_types": ["sleep"], "nickname": name}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "sign-on");
    worker
}

/// Send `request` on a fresh connection from `from` and read the answer's first bytes:
/// `Ok(text)` (possibly empty when the server closed at once), `Err` on a reset.
async fn ask_from(from: Ipv4Addr, server: SocketAddr, request: &str) -> std::io::Result<String> {
    let mut stream = connect_from(from, server).await?;
    // A refused connection may already be closed: a write error is an answer too.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut buf = vec![0u8; 2048];
    let mut got = 0;
    loop {
        match stream.read(&mut buf[got..]).await {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if got == buf.len() || buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(e) if got == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(String::from_utf8_lossy(&buf[..got]).into_owned())
}

/// Whether an answer from [`ask_from`] is the refusal: a 503 with `Retry-After`, or the
/// connection closed or reset at once (the 503 is lost when the client's request was
/// already in the server's socket buffer, which makes the close a reset).
fn is_refusal(answer: &std::io::Result<String>) -> bool {
    match answer {
        Ok(text) if text.is_empty() => true,
        Ok(text) => {
            text.starts_with("HTTP/1.1 503")
                && text.to_ascii_lowercase().contains("retry-after: 10")
        }
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
    }
}

/// When an attacker reconnects: 0.5 to 1.5 s after it was dropped (xorshift; attackers
/// that all come back at the same instant would measure the kernel's accept queue more
/// than the Manager).
struct Retry(u64);

impl Retry {
    fn new(n: usize) -> Retry {
        Retry(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9))
    }

    fn next(&mut self) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(500 + self.0 % 1000)
    }
}

/// What the attackers saw.
#[derive(Default)]
struct AttackStats {
    connections: AtomicU64,
    streams_opened: AtomicU64,
    streams_refused: AtomicU64,
}

/// An attacker holding `/imagewatch` streams open, reconnecting whenever dropped.
async fn streamer(
    mut retry: Retry,
    from: Ipv4Addr,
    server: SocketAddr,
    stats: Arc<AttackStats>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        if let Ok(mut stream) = connect_from(from, server).await {
            stats.connections.fetch_add(1, Ordering::Relaxed);
            let request =
                "GET /imagewatch HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n";
            if stream.write_all(request.as_bytes()).await.is_ok() {
                let mut buf = [0u8; 1024];
                let mut first = true;
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        read = stream.read(&mut buf) => match read {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if first {
                                    first = false;
                                    if buf[..n].starts_with(b"HTTP/1.1 200") {
                                        stats.streams_opened.fetch_add(1, Ordering::Relaxed);
                                    } else if buf[..n].starts_with(b"HTTP/1.1 503") {
                                        stats.streams_refused.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                // Then stay connected, reading nothing in particular.
                            }
                        },
                    }
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(retry.next()) => {}
        }
    }
}

/// An attacker trickling a request head one byte a second, reconnecting when dropped.
async fn trickler(
    mut retry: Retry,
    from: Ipv4Addr,
    server: SocketAddr,
    stats: Arc<AttackStats>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        if let Ok(stream) = connect_from(from, server).await {
            stats.connections.fetch_add(1, Ordering::Relaxed);
            let (mut rd, mut wr) = stream.into_split();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut head = b"POST /task HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".to_vec();
            let mut buf = [0u8; 512];
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {
                        let chunk = if head.is_empty() { b"a".to_vec() } else { std::mem::take(&mut head) };
                        if wr.write_all(&chunk).await.is_err() {
                            break;
                        }
                    }
                    read = rd.read(&mut buf) => match read {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    },
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(retry.next()) => {}
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_served_while_1100_streams_and_1100_slow_heads_crowd_the_manager() {
    const STREAMERS: usize = 1100;
    const TRICKLERS: usize = 1100;
    const ADDRESSES: u8 = 40;
    const SAMPLES: usize = 50;
    raise_open_file_limit(8192);

    // The default limits: max_connections 1024, a quarter reserved for workers,
    // 64 per other address, 64 streams, 8 per address, request_read_timeout 30s.
    let tm = TestManager::start_with(config("")).await;
    let server = server_addr(&tm);
    let worker = signed_on_worker(&tm, "steady").await;
    tm.enqueue(vec![common::test_task("1", "sleep")]).await;
    let (first, _) = worker.task().await;
    assert_eq!(first, StatusCode::OK, "the worker gets its task");

    let baseline_fds = open_fds();
    // The test's own idle connections (the worker's client pool).
    let (baseline_workers, baseline_others, baseline_streams) = gauges(&tm);
    assert_eq!(baseline_streams, 0);

    // The attack: 2,200 clients over 40 addresses (55 each: under max_connections_per_ip,
    // so that the reserve, not the per-address cap, is what protects the worker).
    let stop = CancellationToken::new();
    let stats = Arc::new(AttackStats::default());
    let mut attackers = tokio::task::JoinSet::new();
    for n in 0..STREAMERS + TRICKLERS {
        let from = loopback(2 + (n % usize::from(ADDRESSES)) as u8);
        let (stats, stop) = (stats.clone(), stop.clone());
        if n < STREAMERS {
            attackers.spawn(streamer(Retry::new(n), from, server, stats, stop));
        } else {
            attackers.spawn(trickler(Retry::new(n), from, server, stats, stop));
        }
    }
    let others_max = 1024 - 256;
    wait_until(
        Duration::from_secs(60),
        "the attackers fill the slots not reserved for workers and the stream cap",
        || {
            let (_, others, streams) = gauges(&tm);
            others as usize >= others_max - 8 && streams == 64
        },
    )
    .await;

    // Fresh worker connections, one every 100 ms for 5 s while the attack goes on (its
    // first wave, then the refused attackers coming back).
    let mut took = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let fresh = TestWorker {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            ..worker.clone()
        };
        let started = Instant::now();
        let (status, _) = fresh.task().await;
        took.push(started.elapsed());
        assert_eq!(
            status,
            StatusCode::OK,
            "a fresh worker connection is served"
        );
    }
    // A client from yet another address is refused at once, not left waiting.
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        ask_from(
            loopback(100),
            server,
            "GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        ),
    )
    .await
    .expect("another client gets an answer, not a hang");
    let refused_in = started.elapsed();
    assert!(is_refusal(&answer), "{answer:?}");
    let (_, others_during, streams_during) = gauges(&tm);

    took.sort();
    let (p50, p99, max) = (
        percentile(&took, 50.0),
        percentile(&took, 99.0),
        took[took.len() - 1],
    );
    println!(
        "starvation: {SAMPLES} fresh worker connections during the attack: p50 {p50:?}, p99 {p99:?}, max {max:?}; \
         other client refused in {refused_in:?}; attackers: {} connections, {} streams opened, {} streams refused (503); \
         open during the attack: {others_during} other connections, {streams_during} streams",
        stats.connections.load(Ordering::Relaxed),
        stats.streams_opened.load(Ordering::Relaxed),
        stats.streams_refused.load(Ordering::Relaxed),
    );
    for t in &took {
        assert!(*t < Duration::from_secs(10), "a worker waited {t:?}");
    }

    // The attackers leave: everything they held is given back.
    stop.cancel();
    let left = tokio::time::timeout(Duration::from_secs(30), async {
        while attackers.join_next().await.is_some() {}
    })
    .await;
    assert!(left.is_ok(), "the attackers stop within 30 s");
    wait_until(
        Duration::from_secs(45),
        "connections and streams back to the baseline",
        || {
            let (workers, others, streams) = gauges(&tm);
            workers <= baseline_workers.max(1) && others <= baseline_others && streams == 0
        },
    )
    .await;
    // (Process-wide, and the other tests of this file may run meanwhile: a leak would be
    // thousands.)
    wait_until(
        Duration::from_secs(30),
        "file descriptors back to the baseline",
        || open_fds() <= baseline_fds + 32,
    )
    .await;
    // And the Manager serves as before.
    let (status, _) = worker.task().await;
    assert_eq!(status, StatusCode::OK);
    tm.stop().await;
}

/// An `/imagewatch` request from `from`: its status, and the response to read on.
async fn imagewatch_from(tm: &TestManager, from: u8) -> reqwest::Response {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(loopback(from)))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
        .get(tm.url("/imagewatch"))
        .send()
        .await
        .expect("an answer")
}

#[tokio::test]
async fn streams_over_their_cap_get_503_and_every_stream_ends_after_its_lifetime() {
    let tm = TestManager::start_with(config(
        "max_streams: 3\nmax_streams_per_ip: 2\nstream_max_lifetime: 2s\n",
    ))
    .await;
    let mut open = Vec::new();
    for from in [2, 2, 3] {
        let resp = imagewatch_from(&tm, from).await;
        assert_eq!(resp.status(), StatusCode::OK, "stream from 127.0.0.{from}");
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        open.push(resp);
    }
    assert_eq!(gauges(&tm).2, 3);
    for (from, cap) in [(2, "max_streams_per_ip"), (4, "max_streams")] {
        let started = Instant::now();
        let resp = imagewatch_from(&tm, from).await;
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(
            resp.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "from .{from}"
        );
        assert_eq!(resp.headers()["retry-after"], "10");
        let body: serde_json::Value = resp.json().await.expect("json");
        let error = body["error"].as_str().expect("error");
        assert!(error.contains(cap), "{error}");
    }

    // Every stream ends by itself after stream_max_lifetime (the browser reconnects).
    let started = Instant::now();
    for mut resp in open {
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(_chunk) = resp.chunk().await.expect("stream") {}
        })
        .await;
        assert!(
            ended.is_ok(),
            "a stream outlived stream_max_lifetime by far"
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(1500));
    wait_until(Duration::from_secs(10), "no stream left open", || {
        gauges(&tm).2 == 0
    })
    .await;
    let resp = imagewatch_from(&tm, 4).await;
    assert_eq!(resp.status(), StatusCode::OK, "room again");
    drop(resp);
    tm.stop().await;
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_max_connections_per_ip() {
    let tm =
        TestManager::start_with(config("max_connections: 40\nmax_connections_per_ip: 4\n")).await;
    let server = server_addr(&tm);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from(loopback(2), server).await.expect("connect"));
    }
    wait_until(Duration::from_secs(10), "4 connections admitted", || {
        gauges(&tm).1 == 4
    })
    .await;
    let request = "GET /status-change HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let started = Instant::now();
    let answer = ask_from(loopback(2), server, request).await;
    assert!(
        is_refusal(&answer),
        "the fifth from one address: {answer:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // Another address, and the worker, are served meanwhile.
    let answer = ask_from(loopback(3), server, request)
        .await
        .expect("served");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let worker = signed_on_worker(&tm, "w").await;
    assert_eq!(worker.task().await.0, StatusCode::NO_CONTENT);
    drop(held);
    wait_until(
        Duration::from_secs(10),
        "the address's slots given back",
        || gauges(&tm).1 == 0,
    )
    .await;
    let answer = ask_from(loopback(2), server, request)
        .await
        .expect("served");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    tm.stop().await;
}

/// `max_connections: 6`, 2 of them reserved: 4 for everyone else.
const SMALL: &str =
    "max_connections: 6\nreserved_worker_connections: 2\nmax_connections_per_ip: 0\n";

/// Fill the 4 slots of [`SMALL`] not reserved for workers from 127.0.0.5.
async fn fill_the_others(tm: &TestManager) -> Vec<TcpStream> {
    let server = server_addr(tm);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from(loopback(5), server).await.expect("connect"));
    }
    wait_until(
        Duration::from_secs(10),
        "the others' slots are taken",
        || gauges(tm).1 == 4,
    )
    .await;
    held
}

#[tokio::test]
async fn the_reserve_is_kept_for_workers_addresses() {
    let tm = TestManager::start_with(config(SMALL)).await;
    let server = server_addr(&tm);
    let worker = signed_on_worker(&tm, "reserved").await;
    let held = fill_the_others(&tm).await;
    let request = "GET /status-change HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    assert!(is_refusal(&ask_from(loopback(6), server, request).await));
    // The worker's address (127.0.0.1) uses the reserve, on fresh connections too.
    for _ in 0..3 {
        let fresh = TestWorker {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            ..worker.clone()
        };
        assert_eq!(fresh.task().await.0, StatusCode::NO_CONTENT);
    }
    drop(held);
    tm.stop().await;
}

#[tokio::test]
async fn after_a_restart_signed_on_workers_addresses_keep_the_reserve() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let server_request = "GET /status-change HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

    // A worker signs on from 127.0.0.7.
    let store = SqliteStore::open(dir.path()).expect("store");
    let tm = TestManager::start_with_store(config(SMALL), Arc::new(store)).await;
    let client = reqwest::Client::builder()
        .local_address(IpAddr::V4(loopback(7)))
        .build()
        .expect("client");
    let secret = "a-secret-long-enough";
    let resp = client
        .post(tm.url("/register-worker"))
        .json(&json!({"secret": secret, "platform": "linux",
                      "supported_task_types": ["sleep"], "nickname": "seven"}))
        .send()
        .await
        .expect("register");
    assert_eq!(resp.status(), StatusCode::OK);
    let id = resp.json::<serde_json::Value>().await.expect("json")["_id"]
        .as_str()
        .expect("_id")
        .to_string();
    let resp = client
        .post(tm.url("/sign-on"))
        .basic_auth(&id, Some(secret))
        .json(&json!({"supported_task_types": ["sleep"], "nickname": "seven"}))
        .send()
        .await
        .expect("sign-on");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    drop(client);
    tm.stop().await;

    // After the restart, before it authenticates again, its address may use the reserve.
    let store = SqliteStore::open(dir.path()).expect("store again");
    let tm = TestManager::start_with_store(config(SMALL), Arc::new(store)).await;
    let server = server_addr(&tm);
    let held = fill_the_others(&tm).await;
    assert!(is_refusal(
        &ask_from(loopback(8), server, server_request).await
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = ask_from(loopback(7), server, server_request).await;
        if matches!(&answer, Ok(text) if text.starts_with("HTTP/1.1 401")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the signed-on worker's address never got the reserve: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(held);
    tm.stop().await;
}
