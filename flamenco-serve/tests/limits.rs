//! Connection and request limits over real sockets: oversized heads (431), slow-loris
//! clients trickling a head or a body (closed / 408 after `request_read_timeout`, while
//! others are served), `max_connections`, and the per-worker request rate (429).

mod common;

use std::time::{Duration, Instant};

use common::TestManager;
use flamenco_core::config::Config;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(extra: &str) -> Config {
    Config::from_yaml(extra, std::path::Path::new("limits.yaml")).expect("config")
}

fn addr(tm: &TestManager) -> String {
    tm.base.trim_start_matches("http://").to_string()
}

/// A registration that must succeed promptly (the server is not starved).
async fn register_quickly(tm: &TestManager, name: &str) {
    let started = Instant::now();
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
        .post(tm.url("/register-worker"))
        .json(&json!({"secret": "s3cret-s3cret", "platform": "linux",
                      "supported_task_types": ["sleep"], "nickname": name}))
        .send()
        .await
        .expect("a normal client is served");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "served in {:?}",
        started.elapsed()
    );
}

/// Read until the server closes the connection; returns what was read.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "the server did not close the connection within {within:?}; read so far: {:?}",
                String::from_utf8_lossy(&out)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let tm = TestManager::start_with(config("max_header_size: 4096\n")).await;
    let resp = tm
        .client
        .get(tm.url("/status-change"))
        .header("X-Padding", "p".repeat(6000))
        .send()
        .await
        .expect("an answer");
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // Under the limit the same request reaches the worker API (401: no credentials).
    let resp = tm
        .client
        .get(tm.url("/status-change"))
        .header("X-Padding", "p".repeat(2000))
        .send()
        .await
        .expect("an answer");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    tm.stop().await;
}

#[tokio::test]
async fn slow_loris_clients_are_cut_off_and_others_are_served_meanwhile() {
    let tm = TestManager::start_with(config("request_read_timeout: 1s\n")).await;
    let started = Instant::now();
    let mut tricklers = Vec::new();
    // Heads sent one byte every 100 ms, forever.
    for _ in 0..8 {
        let mut stream = TcpStream::connect(addr(&tm)).await.expect("connect");
        tricklers.push(tokio::spawn(async move {
            let head = b"POST /task HTTP/1.1\r\nHost: manager\r\nX-Slow: ";
            stream.write_all(head).await.expect("write");
            let (mut rd, mut wr) = stream.into_split();
            let writer = tokio::spawn(async move {
                while wr.write_all(b"a").await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            let mut buf = [0u8; 256];
            let closed = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            writer.abort();
            closed.is_ok()
        }));
    }
    // A body announced with Content-Length and sent one byte every 100 ms: 408.
    let mut body_trickler = TcpStream::connect(addr(&tm)).await.expect("connect");
    body_trickler
        .write_all(
            b"POST /register-worker HTTP/1.1\r\nHost: manager\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
        )
        .await
        .expect("write");
    let (mut body_rd, mut body_wr) = body_trickler.into_split();
    let body_writer = tokio::spawn(async move {
        while body_wr.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    // Meanwhile a normal client is served at once.
    register_quickly(&tm, "meanwhile").await;

    for t in tricklers {
        assert!(
            t.await.expect("join"),
            "a slow head was not cut off within 10 s"
        );
    }
    let cut_after = started.elapsed();
    assert!(
        cut_after >= Duration::from_millis(900),
        "not before the timeout: {cut_after:?}"
    );
    let mut answer = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(10), body_rd.read_to_end(&mut answer)).await;
    body_writer.abort();
    assert!(read.is_ok(), "the slow body was not cut off within 10 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_read_timeout"), "{answer}");
    assert!(
        tm.manager.list_workers().await.expect("workers").len() == 1,
        "only the normal client registered"
    );

    // And afterwards too.
    register_quickly(&tm, "afterwards").await;
    tm.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_close_after_the_read_timeout() {
    let tm = TestManager::start_with(config("request_read_timeout: 1s\n")).await;
    let mut stream = TcpStream::connect(addr(&tm)).await.expect("connect");
    stream
        .write_all(b"GET /status-change HTTP/1.1\r\nHost: manager\r\n\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    tm.stop().await;
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_for_a_free_slot() {
    let tm =
        TestManager::start_with(config("max_connections: 2\nrequest_read_timeout: 30s\n")).await;
    // Two idle connections take both slots.
    let first = TcpStream::connect(addr(&tm)).await.expect("connect");
    let mut second = TcpStream::connect(addr(&tm)).await.expect("connect");
    // Make sure the server holds the second one (it answers on it).
    second
        .write_all(b"GET /status-change HTTP/1.1\r\nHost: manager\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), second.read_exact(&mut buf))
        .await
        .expect("served within 10 s")
        .expect("read");
    assert_eq!(&buf, b"HTTP/1.1 401");

    // A third client is not served while both are open.
    let waiting = reqwest::Client::builder()
        .timeout(Duration::from_millis(800))
        .build()
        .expect("client")
        .get(tm.url("/status-change"))
        .send()
        .await;
    match waiting {
        Err(e) => assert!(e.is_timeout(), "{e:?}"),
        Ok(resp) => panic!("served beyond max_connections: {}", resp.status()),
    }

    // Once one closes, it is.
    drop(first);
    register_quickly(&tm, "after-a-slot-freed").await;
    drop(second);
    tm.stop().await;
}

#[tokio::test]
async fn a_worker_over_its_request_rate_gets_429_and_others_do_not() {
    let tm =
        TestManager::start_with(config("worker_request_rate: 1\nworker_request_burst: 3\n")).await;
    let busy = tm.register("busy", "linux", &["sleep"]).await;
    let calm = tm.register("calm", "linux", &["sleep"]).await;
    for i in 0..3 {
        let resp = busy.get("/status-change").await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT, "request {i}");
    }
    let resp = busy.get("/status-change").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let body: serde_json::Value = resp.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("worker_request_rate"),
        "{body}"
    );

    // Another worker is not affected; a wrong secret is still 401, not 429.
    assert_eq!(
        calm.get("/status-change").await.status(),
        StatusCode::NO_CONTENT
    );
    let mut impostor = busy.clone();
    impostor.secret = "wrong".into();
    assert_eq!(
        impostor.get("/status-change").await.status(),
        StatusCode::UNAUTHORIZED
    );

    // After Retry-After, the busy worker is served again. The sleep is the thing tested:
    // the worker waits as long as it was told to, no longer.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(
        busy.get("/status-change").await.status(),
        StatusCode::NO_CONTENT
    );
    tm.stop().await;
}
