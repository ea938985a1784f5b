//! Control needs intent: the cross-site checks of the Manager's state-changing API.
//!
//! Any web page a user opens can make the browser send a `POST` to the Manager (a form,
//! or `fetch` in `no-cors` mode), with the user's network position: from the Manager's own
//! machine it passes the loopback admin check. Such a request cannot hide where it comes
//! from, and it cannot choose its `Content-Type` freely. So a state-changing request
//! (`POST`, `PUT`, `PATCH`, `DELETE`) to `/api/…` or a dashboard action is refused with 403,
//! before its handler runs, when:
//!
//! * its `Origin` (or, without one, its `Referer`) is another site: the scheme, host and
//!   port differ from the request's own `Host`, and from `own_url` (a reverse proxy may
//!   rewrite `Host`). `Origin: null` (sandboxed pages, `file://`) is another site too. Over
//!   plain HTTP an `https://` origin with the same host and port is accepted (TLS ends at a
//!   reverse proxy); with `tlscert` set only `https://` is.
//! * its `Content-Type` is anything but `application/json` (with an optional `charset`), or
//!   it has a body and no `Content-Type`. Pages can send `text/plain`, form encodings and
//!   untyped bodies to any site without asking; `application/json` needs a CORS preflight,
//!   which the Manager never grants.
//!
//! Requests with neither `Origin` nor `Referer` (the `flamenco` CLI, curl, scripts) are
//! judged by the admin check alone. Reads (`GET`, `HEAD`) are not checked here: the
//! browser does not let another site read the answers, and DNS rebinding is stopped by
//! [`crate::hosts`]. See docs/security.md.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::Response;
use flamenco_core::config::Config;

/// What the checks need from the configuration.
#[derive(Clone, Debug)]
pub struct IntentPolicy {
    /// `tlscert` is set: the Manager's pages are `https://` only.
    tls: bool,
    /// `own_url` as an origin, if it is a URL.
    own_origin: Option<Origin>,
}

/// A web origin: scheme, lower-case host (IPv6 without brackets), port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// The origin of an absolute URL (`http://host:port/...`); `None` for anything else
    /// (`null`, relative references, unknown schemes).
    pub fn of_url(url: &str) -> Option<Origin> {
        let uri: Uri = url.trim().parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let authority = uri.authority()?;
        let host = crate::hosts::host_name(authority.as_str())?;
        Some(Origin {
            scheme,
            host,
            port: authority.port_u16().unwrap_or(default_port),
        })
    }
}

/// Why a request was refused (403).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `Origin`/`Referer` names another site; the header and its value.
    CrossSite { header: &'static str, value: String },
    /// The body is not declared as JSON; the `Content-Type` sent, if any.
    NotJson(Option<String>),
}

impl IntentPolicy {
    pub fn from_config(config: &Config) -> IntentPolicy {
        IntentPolicy {
            tls: config.tls_enabled(),
            own_origin: Origin::of_url(&config.own_url),
        }
    }

    /// The checks, on a state-changing request's headers.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let source = match headers.get(header::ORIGIN) {
            Some(value) => Some(("Origin", value)),
            None => headers.get(header::REFERER).map(|value| ("Referer", value)),
        };
        if let Some((name, value)) = source {
            let text = value.to_str().unwrap_or("");
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
            let same = Origin::of_url(text).is_some_and(|origin| self.is_own(&origin, host));
            if !same {
                return Err(Refusal::CrossSite {
                    header: name,
                    value: shown(value),
                });
            }
        }
        match headers.get(header::CONTENT_TYPE) {
            Some(value) if is_json(value) => Ok(()),
            Some(value) => Err(Refusal::NotJson(Some(shown(value)))),
            None if has_body(headers) => Err(Refusal::NotJson(None)),
            None => Ok(()),
        }
    }

    /// Is `origin` the Manager itself: the request's own `Host`, or `own_url`?
    fn is_own(&self, origin: &Origin, host_header: Option<&str>) -> bool {
        let scheme_ok = match origin.scheme.as_str() {
            "https" => true,
            "http" => !self.tls,
            _ => false,
        };
        if !scheme_ok {
            return false;
        }
        let matches_host = host_header
            .and_then(crate::hosts::host_and_port)
            .is_some_and(|(name, port)| {
                // `Host` without a port: the default port of the scheme the client used.
                let port = port.unwrap_or(if origin.scheme == "https" { 443 } else { 80 });
                name == origin.host && port == origin.port
            });
        matches_host
            || self
                .own_origin
                .as_ref()
                .is_some_and(|own| own.host == origin.host && own.port == origin.port)
    }
}

/// `application/json`, optionally with a `charset` parameter.
fn is_json(value: &HeaderValue) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        && parts.all(|p| {
            p.split_once('=')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("charset"))
        })
}

/// Does the request carry a body (a non-zero `Content-Length`, or chunked)?
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

fn shown(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes())
        .chars()
        .take(200)
        .collect()
}

fn is_state_changing(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The middleware: 403 before the handler for a state-changing request that fails
/// [`IntentPolicy::check`].
pub async fn check(State(policy): State<Arc<IntentPolicy>>, req: Request, next: Next) -> Response {
    if !is_state_changing(req.method()) {
        return next.run(req).await;
    }
    match policy.check(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            tracing::debug!(method = %req.method(), path = %req.uri().path(), ?refusal, "refused a state-changing request");
            let message = match &refusal {
                Refusal::CrossSite { header, value } => format!(
                    "refused: this request comes from another site ({header}: {value}), not from \
                     the Manager's own pages. The Manager acts only on requests from its own \
                     dashboard, or from programs that send no Origin or Referer (the flamenco \
                     CLI, curl). If a reverse proxy serves the dashboard under another name, \
                     set own_url to that address."
                ),
                Refusal::NotJson(sent) => format!(
                    "refused: {} {} takes a JSON body with `Content-Type: application/json` \
                     (this request has {}). Other content types can be sent by any web page, \
                     so they are not accepted.",
                    req.method(),
                    req.uri().path(),
                    match sent {
                        Some(ct) => format!("`Content-Type: {ct}`"),
                        None => "a body without Content-Type".to_string(),
                    }
                ),
            };
            crate::error::json_error(StatusCode::FORBIDDEN, &message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    fn policy(tls: bool, own_url: &str) -> IntentPolicy {
        IntentPolicy {
            tls,
            own_origin: Origin::of_url(own_url),
        }
    }

    #[test]
    fn origins_of_urls() {
        assert_eq!(
            Origin::of_url("HTTP://LocalHost:8083/path?q=1"),
            Some(Origin {
                scheme: "http".into(),
                host: "localhost".into(),
                port: 8083
            })
        );
        assert_eq!(Origin::of_url("https://[::1]").map(|o| o.port), Some(443));
        assert_eq!(
            Origin::of_url("https://[::1]").map(|o| o.host),
            Some("::1".into())
        );
        for bad in [
            "null",
            "",
            "/relative",
            "file:///etc/passwd",
            "evil.example",
        ] {
            assert_eq!(Origin::of_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn same_origin_and_no_origin_pass_other_sites_do_not() {
        let p = policy(false, "");
        let host = ("host", "127.0.0.1:8083");
        assert_eq!(p.check(&headers(&[host])), Ok(()));
        assert_eq!(
            p.check(&headers(&[host, ("origin", "http://127.0.0.1:8083")])),
            Ok(())
        );
        assert_eq!(
            p.check(&headers(&[
                host,
                ("referer", "http://127.0.0.1:8083/#jobs")
            ])),
            Ok(())
        );
        for (name, value) in [
            ("origin", "http://evil.example"),
            ("origin", "null"),
            ("origin", "http://127.0.0.1:3000"),
            ("origin", "http://localhost:8083"),
            ("referer", "http://evil.example/page.html"),
            ("referer", "garbage"),
        ] {
            assert!(
                matches!(
                    p.check(&headers(&[host, (name, value)])),
                    Err(Refusal::CrossSite { .. })
                ),
                "{name}: {value}"
            );
        }
        // Origin wins over Referer.
        assert!(p
            .check(&headers(&[
                host,
                ("origin", "http://evil.example"),
                ("referer", "http://127.0.0.1:8083/")
            ]))
            .is_err());
        // Without a port in Host, the default port of the origin's scheme.
        let host = ("host", "manager.farm.example");
        assert_eq!(
            p.check(&headers(&[
                host,
                ("origin", "https://manager.farm.example")
            ])),
            Ok(())
        );
        assert!(p
            .check(&headers(&[
                host,
                ("origin", "https://manager.farm.example:8443")
            ]))
            .is_err());
    }

    #[test]
    fn own_url_and_tls_decide_the_accepted_schemes() {
        let behind_proxy = policy(false, "https://manager.farm.example/");
        let rewritten = ("host", "127.0.0.1:8083");
        assert_eq!(
            behind_proxy.check(&headers(&[
                rewritten,
                ("origin", "https://manager.farm.example")
            ])),
            Ok(())
        );
        let tls = policy(true, "");
        let host = ("host", "manager:8083");
        assert!(tls
            .check(&headers(&[host, ("origin", "http://manager:8083")]))
            .is_err());
        assert_eq!(
            tls.check(&headers(&[host, ("origin", "https://manager:8083")])),
            Ok(())
        );
    }

    #[test]
    fn only_json_bodies() {
        let p = policy(false, "");
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/json;charset=UTF-8",
        ] {
            assert_eq!(p.check(&headers(&[("content-type", ok)])), Ok(()), "{ok}");
        }
        for bad in [
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json-patch+json",
            "application/json; boundary=x",
        ] {
            assert!(
                matches!(
                    p.check(&headers(&[("content-type", bad)])),
                    Err(Refusal::NotJson(Some(_)))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            p.check(&headers(&[("content-length", "12")])),
            Err(Refusal::NotJson(None))
        );
        assert_eq!(
            p.check(&headers(&[("transfer-encoding", "chunked")])),
            Err(Refusal::NotJson(None))
        );
        assert_eq!(p.check(&headers(&[("content-length", "0")])), Ok(()));
    }
}
