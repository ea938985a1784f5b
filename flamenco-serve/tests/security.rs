//! Claims of docs/security.md that the other tests do not cover: forwarding headers never
//! make a remote client "local" for the admin check.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use flamenco_core::clock::SystemClock;
use flamenco_core::config::Config;
use flamenco_core::store::sqlite::SqliteStore;
use flamenco_core::Manager;
use tower::ServiceExt;

#[tokio::test]
async fn forwarding_headers_do_not_pass_the_loopback_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("store");
    let manager = Arc::new(Manager::with_store(
        Config::default(),
        Arc::new(store),
        Arc::new(SystemClock),
    ));
    let call = |peer: &str, headers: &[(&str, &str)]| {
        let addr: SocketAddr = peer.parse().expect("peer");
        let app = flamenco_serve::router(manager.clone()).layer(MockConnectInfo(addr));
        let mut req = Request::get("/api/jobs");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Body::empty()).expect("request");
        async move { app.oneshot(req).await.expect("infallible").status() }
    };
    let claims_local: &[(&str, &str)] = &[
        ("X-Forwarded-For", "127.0.0.1"),
        ("X-Real-IP", "127.0.0.1"),
        ("Forwarded", "for=127.0.0.1"),
        ("X-Forwarded-Host", "localhost"),
    ];
    assert_eq!(
        call("10.1.2.3:40000", claims_local).await,
        StatusCode::FORBIDDEN,
        "a remote peer stays remote whatever it claims"
    );
    // The check itself works: the same request from loopback is served.
    assert_eq!(call("127.0.0.1:40000", &[]).await, StatusCode::OK);
    // And a loopback peer (a local reverse proxy) is served even when it forwards a
    // remote client's address: the reason docs/security.md says to set admin_token there.
    assert_eq!(
        call("127.0.0.1:40000", &[("X-Forwarded-For", "203.0.113.9")]).await,
        StatusCode::OK
    );
    manager.close().await.expect("close");
}
