//! The Flamenco Server client: the four calls of server-protocol.md as typed async
//! functions, each with a connect timeout and a total timeout.
//!
//! * Auth is HTTP Basic with `manager_secret` as the user name and an empty password.
//! * URLs are resolved *below* the configured base URL, so its path is kept
//!   (`https://host/prefix/` → `https://host/prefix/api/flamenco/…`; v2 dropped `prefix`).
//! * Nothing here retries or sleeps: the loops decide (see `backoff`).

use std::io::Write;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::{StatusCode, Url};

use crate::config::Config;
use crate::metrics::{status_class, Metrics};
use crate::model::{ObjectId, Task};

use super::wire::{BatchAnswer, DepsgraphBody, StartupBody};

/// How long upstream calls may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing the TCP (and TLS) connection.
    pub connect: Duration,
    /// A whole call, from connecting until the answer's body is read.
    pub total: Duration,
    /// A whole conditional re-fetch, which a worker's `/task` request waits for.
    pub refetch: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            total: Duration::from_secs(60),
            refetch: Duration::from_secs(3),
        }
    }
}

/// An upstream call that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No answer: connection refused or broken, DNS, TLS, or a timeout.
    #[error("{0}")]
    Network(String),
    /// The Server answered with an unexpected status.
    #[error("the Server answered {status}: {body}")]
    Status { status: u16, body: String },
    /// The answer could not be decoded.
    #[error("cannot decode the Server's answer: {0}")]
    Decode(String),
}

impl CallError {
    fn status(status: StatusCode, body: &[u8]) -> CallError {
        let mut text = String::from_utf8_lossy(body).trim().to_string();
        if text.len() > 500 {
            let mut cut = 500;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        CallError::Status {
            status: status.as_u16(),
            body: text,
        }
    }

    fn network(e: reqwest::Error) -> CallError {
        if e.is_timeout() {
            CallError::Network(format!("timed out: {e}"))
        } else {
            CallError::Network(format!("{e}"))
        }
    }
}

/// A misconfigured upstream connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigProblem(pub String);

/// The answer to a task download.
#[derive(Clone, Debug)]
pub enum DepsgraphAnswer {
    /// 204: no runnable job for this Manager.
    NoJobs,
    /// 304: nothing changed since the watermark.
    NotModified,
    /// 200.
    Tasks {
        body: DepsgraphBody,
        /// `X-Flamenco-Last-Updated`, verbatim (absent for an empty clean slate).
        last_updated: Option<String>,
    },
}

/// The answer to a conditional re-fetch, sorted as v2's table (manager-v2.md §5.4).
#[derive(Clone, Debug)]
pub enum RefetchAnswer {
    /// 304.
    NotModified,
    /// 200 with a task.
    Changed(Box<Task>),
    /// 204, any 4xx, or a 200 that does not decode: the Server has no such task for us.
    Gone(String),
    /// No answer, 5xx or another 3xx: nothing can be concluded.
    Unknown(String),
}

/// Typed calls to one Flamenco Server.
#[derive(Clone, Debug)]
pub struct ServerClient {
    http: reqwest::Client,
    base: Url,
    manager_id: String,
    secret: String,
    timeouts: Timeouts,
    /// Where calls are counted and timed, once the Manager attached its metrics.
    metrics: Arc<OnceLock<Metrics>>,
}

/// Install rustls's ring provider unless the program already installed one (reqwest is
/// built without a provider of its own).
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Check the upstream settings without building a client: the base URL (made to end in
/// `/`, so that its path is kept) and the manager id.
pub fn check_config(config: &Config) -> Result<(Url, String), ConfigProblem> {
    let raw = config.flamenco.trim();
    let mut base = Url::parse(raw).map_err(|e| {
        ConfigProblem(format!(
            "flamenco: {raw:?} is not a valid URL ({e}); expected e.g. https://flamenco.example.com/"
        ))
    })?;
    if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
        return Err(ConfigProblem(format!(
            "flamenco: {raw:?} must be an http:// or https:// URL with a host"
        )));
    }
    // Keep the base path: make it a "directory" so relative URLs go below it.
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base.set_query(None);
    base.set_fragment(None);
    let manager_id = config.manager_id.trim().to_string();
    if ObjectId::parse(&manager_id).is_err() {
        return Err(ConfigProblem(format!(
            "manager_id: {manager_id:?} must be the Manager's id on the Flamenco Server (24 hexadecimal characters) when `flamenco` is set"
        )));
    }
    if config.manager_secret.is_empty() {
        return Err(ConfigProblem(
            "manager_secret is empty; set it to the Manager's token from the Flamenco Server when `flamenco` is set".into(),
        ));
    }
    Ok((base, manager_id))
}

impl ServerClient {
    /// A client for the Server the configuration names (`flamenco`, `manager_id`,
    /// `manager_secret`).
    pub fn new(config: &Config, timeouts: Timeouts) -> Result<ServerClient, ConfigProblem> {
        let (base, manager_id) = check_config(config)?;
        ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.total)
            .user_agent(format!("Flamenco-Manager/{}", crate::VERSION))
            .build()
            .map_err(|e| ConfigProblem(format!("cannot build the HTTP client: {e}")))?;
        Ok(ServerClient {
            http,
            base,
            manager_id,
            secret: config.manager_secret.clone(),
            timeouts,
            metrics: Arc::new(OnceLock::new()),
        })
    }

    /// The base URL (always ending in `/`).
    pub fn base(&self) -> &Url {
        &self.base
    }

    pub fn manager_id(&self) -> &str {
        &self.manager_id
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// `path` (no leading `/`) below the base URL.
    pub fn url(&self, path: &str) -> Url {
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    fn manager_url(&self, what: &str) -> Url {
        self.url(&format!("api/flamenco/managers/{}/{what}", self.manager_id))
    }

    fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .basic_auth(&self.secret, Some(""))
    }

    /// Count and time this client's calls in `metrics` (`flamenco_upstream_*`). Only the
    /// first call has an effect.
    pub fn attach_metrics(&self, metrics: Metrics) {
        let _ = self.metrics.set(metrics);
    }

    /// Send, read the whole answer, and record the call under `endpoint`.
    async fn send(
        &self,
        endpoint: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, bytes::Bytes), CallError> {
        let start = Instant::now();
        let result = Self::send_and_read(req).await;
        if let Some(metrics) = self.metrics.get() {
            let outcome = match &result {
                Ok((status, _, _)) => status_class(status.as_u16()),
                Err(_) => "network_error",
            };
            metrics.record_upstream_request(endpoint, outcome, start.elapsed());
        }
        result
    }

    async fn send_and_read(
        req: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, bytes::Bytes), CallError> {
        let resp = req.send().await.map_err(CallError::network)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(CallError::network)?;
        Ok((status, headers, body))
    }

    /// `POST …/startup` (server-protocol.md §2.1). Any 2xx is a success.
    pub async fn startup(&self, body: &StartupBody) -> Result<(), CallError> {
        let json = serde_json::to_vec(body).map_err(|e| CallError::Decode(e.to_string()))?;
        let req = self
            .request(reqwest::Method::POST, self.manager_url("startup"))
            .header(CONTENT_TYPE, "application/json")
            .body(json);
        let (status, _, body) = self.send("startup", req).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(CallError::status(status, &body))
        }
    }

    /// `GET …/depsgraph` (server-protocol.md §2.2), incremental when `since` is given.
    pub async fn depsgraph(&self, since: Option<&str>) -> Result<DepsgraphAnswer, CallError> {
        let mut req = self.request(reqwest::Method::GET, self.manager_url("depsgraph"));
        if let Some(since) = since {
            req = req.header("X-Flamenco-If-Updated-Since", since);
        }
        let (status, headers, body) = self.send("download", req).await?;
        match status {
            StatusCode::NO_CONTENT => Ok(DepsgraphAnswer::NoJobs),
            StatusCode::NOT_MODIFIED => Ok(DepsgraphAnswer::NotModified),
            StatusCode::OK => {
                let parsed = DepsgraphBody::parse(&body).map_err(CallError::Decode)?;
                let last_updated = headers
                    .get("X-Flamenco-Last-Updated")
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_string);
                Ok(DepsgraphAnswer::Tasks {
                    body: parsed,
                    last_updated,
                })
            }
            other => Err(CallError::status(other, &body)),
        }
    }

    /// `POST …/task-update-batch` (server-protocol.md §2.3) with a prepared JSON array,
    /// gzip-compressed when asked.
    pub async fn push(&self, json: &[u8], gzip: bool) -> Result<BatchAnswer, CallError> {
        let mut req = self
            .request(reqwest::Method::POST, self.manager_url("task-update-batch"))
            .header(CONTENT_TYPE, "application/json");
        if gzip {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let compressed = enc
                .write_all(json)
                .and_then(|()| enc.finish())
                .map_err(|e| CallError::Decode(format!("gzip: {e}")))?;
            req = req
                .header(CONTENT_ENCODING, HeaderValue::from_static("gzip"))
                .body(compressed);
        } else {
            req = req.body(json.to_vec());
        }
        let (status, _, body) = self.send("push", req).await?;
        if !status.is_success() {
            return Err(CallError::status(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| CallError::Decode(e.to_string()))
    }

    /// `GET /api/flamenco/tasks/{id}` with `If-None-Match: <etag>` (server-protocol.md §2.4),
    /// within the short re-fetch timeout.
    pub async fn refetch(&self, task_id: ObjectId, etag: &str) -> RefetchAnswer {
        let mut req = self
            .request(
                reqwest::Method::GET,
                self.url(&format!("api/flamenco/tasks/{task_id}")),
            )
            .timeout(self.timeouts.refetch);
        if !etag.is_empty() {
            req = req.header("If-None-Match", etag);
        }
        let (status, _, body) = match self.send("refetch", req).await {
            Ok(answer) => answer,
            Err(e) => return RefetchAnswer::Unknown(e.to_string()),
        };
        match status.as_u16() {
            304 => RefetchAnswer::NotModified,
            200 => match serde_json::from_slice::<Task>(&body) {
                Ok(task) if task.id == task_id => RefetchAnswer::Changed(Box::new(task)),
                Ok(task) => RefetchAnswer::Gone(format!(
                    "the Server answered with task {} instead",
                    task.id
                )),
                Err(e) => RefetchAnswer::Gone(format!("undecodable task: {e}")),
            },
            204 | 400..=499 => RefetchAnswer::Gone(format!("the Server answered {status}")),
            _ => RefetchAnswer::Unknown(format!("the Server answered {status}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> Config {
        Config {
            flamenco: url.into(),
            manager_id: "5852bc5198377351f95d103e".into(),
            manager_secret: "SRVsecret".into(),
            ..Config::default()
        }
    }

    #[test]
    fn base_path_is_kept() {
        for (base, want) in [
            (
                "https://host/prefix/",
                "https://host/prefix/api/flamenco/managers/5852bc5198377351f95d103e/startup",
            ),
            (
                "https://host/prefix",
                "https://host/prefix/api/flamenco/managers/5852bc5198377351f95d103e/startup",
            ),
            (
                "http://localhost:51234/",
                "http://localhost:51234/api/flamenco/managers/5852bc5198377351f95d103e/startup",
            ),
            (
                "http://localhost:51234",
                "http://localhost:51234/api/flamenco/managers/5852bc5198377351f95d103e/startup",
            ),
        ] {
            let c = ServerClient::new(&config(base), Timeouts::default()).expect(base);
            assert_eq!(c.manager_url("startup").as_str(), want, "{base}");
        }
    }

    #[test]
    fn misconfiguration_is_explained() {
        let err = ServerClient::new(&config("not a url"), Timeouts::default()).unwrap_err();
        assert!(err.0.contains("flamenco"), "{err}");
        let err = ServerClient::new(&config("ftp://host/"), Timeouts::default()).unwrap_err();
        assert!(err.0.contains("http"), "{err}");
        let mut c = config("http://host/");
        c.manager_id = "abc".into();
        let err = ServerClient::new(&c, Timeouts::default()).unwrap_err();
        assert!(err.0.contains("manager_id"), "{err}");
        let mut c = config("http://host/");
        c.manager_secret.clear();
        let err = ServerClient::new(&c, Timeouts::default()).unwrap_err();
        assert!(err.0.contains("manager_secret"), "{err}");
    }
}
