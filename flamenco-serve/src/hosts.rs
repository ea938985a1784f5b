//! The `Host` allowlist of the browser-facing routes: a defence against DNS rebinding.
//!
//! A web page on `http://evil.example` can make its own name resolve to the Manager's
//! address and then read (and, with the admin check passed by loopback, act on) the
//! Manager's pages as if they were its own. The browser still sends `Host: evil.example`, so
//! the dashboard, `/api/…`, the images, `/as-json` and `/metrics` answer only to names the
//! Manager owns ([`HostPolicy`]): `localhost`, any IP literal (v4 or v6), this machine's host
//! name (and its first label), `own_url`'s host, and the `allowed_hosts` setting (`*` there
//! turns the check off). Any other name gets `421 Misdirected Request` with a JSON error
//! that names the setting. A request without a `Host` (HTTP/1.0 tools) is served: browsers
//! always send one.
//!
//! The worker API is not behind this check: workers reach the Manager by any DNS name or
//! address, and their requests carry credentials a page cannot have. [`crate::router`]
//! applies [`check`] with `route_layer` to the browser-facing routers only, so a worker
//! request does no extra work.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use flamenco_core::config::Config;

/// The names the browser-facing routes answer to.
#[derive(Clone, Debug)]
pub struct HostPolicy {
    /// `allowed_hosts` holds `*`: every name is served.
    any: bool,
    /// Lower-case names without a trailing dot (IP literals need no entry).
    names: BTreeSet<String>,
}

impl HostPolicy {
    /// The policy for this configuration on this machine (its host name from the OS).
    pub fn from_config(config: &Config) -> HostPolicy {
        let machine = gethostname::gethostname().to_string_lossy().into_owned();
        Self::new(config, &[machine])
    }

    /// The policy for this configuration, with `machine_names` as this machine's names.
    pub fn new(config: &Config, machine_names: &[String]) -> HostPolicy {
        let mut names = BTreeSet::from(["localhost".to_string()]);
        let mut add = |name: &str| {
            let name = normalise(name);
            if !name.is_empty() {
                // The short name of a fully qualified host name is the machine's too.
                if let Some((first, _)) = name.split_once('.') {
                    if name.parse::<IpAddr>().is_err() {
                        names.insert(first.to_string());
                    }
                }
                names.insert(name);
            }
        };
        for name in machine_names {
            add(name);
        }
        if let Some(host) = url_host(&config.own_url) {
            add(&host);
        }
        let mut any = false;
        for name in &config.allowed_hosts {
            if name == "*" {
                any = true;
            } else {
                names.insert(normalise(name));
            }
        }
        HostPolicy { any, names }
    }

    /// Does the Manager answer to this `Host` header value (`name`, `name:port`,
    /// `[v6]:port`, …)?
    pub fn allows(&self, host_header: &str) -> bool {
        if self.any {
            return true;
        }
        match host_name(host_header) {
            Some(name) => name.parse::<IpAddr>().is_ok() || self.names.contains(&name),
            None => false,
        }
    }

    /// The names (besides IP literals) the Manager answers to.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}

fn normalise(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The host of an authority (`Host` header value): lower case, without port, brackets or
/// trailing dot. `None` when it is malformed (user info, a non-numeric port, …).
pub fn host_name(authority: &str) -> Option<String> {
    host_and_port(authority).map(|(host, _)| host)
}

/// The host (as [`host_name`]) and the port, if one is given, of an authority.
pub fn host_and_port(authority: &str) -> Option<(String, Option<u16>)> {
    let authority = authority.trim();
    if authority.contains(['@', '/', ' ']) || authority.is_empty() {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (v6, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok()?)
        }
        Some(_) => return None,
        None => None,
    };
    let host = normalise(host);
    (!host.is_empty()).then_some((host, port))
}

/// The host of a URL such as `own_url` (`http://name:8083/`), if it has one.
fn url_host(url: &str) -> Option<String> {
    let uri: axum::http::Uri = url.trim().parse().ok()?;
    uri.authority().and_then(|a| host_name(a.as_str()))
}

/// The middleware: 421 for a request whose `Host` (or absolute-form authority) is not one
/// of the Manager's names.
pub async fn check(State(policy): State<Arc<HostPolicy>>, req: Request, next: Next) -> Response {
    let header_host = req.headers().get(header::HOST).map(|v| v.to_str());
    let refused = match header_host {
        Some(Ok(host)) if !policy.allows(host) => Some(host.to_string()),
        Some(Err(_)) => Some("(not text)".to_string()),
        _ => None,
    }
    .or_else(|| {
        req.uri()
            .authority()
            .filter(|a| !policy.allows(a.as_str()))
            .map(|a| a.to_string())
    });
    match refused {
        None => next.run(req).await,
        Some(host) => {
            tracing::debug!(%host, path = %req.uri().path(), "refused a request for a foreign host name");
            misdirected(&host)
        }
    }
}

fn misdirected(host: &str) -> Response {
    let shown: String = host.chars().take(100).collect();
    crate::error::json_error(
        StatusCode::MISDIRECTED_REQUEST,
        &format!(
            "this Manager does not answer to the host name {shown:?} on its dashboard and API \
             (a defence against DNS rebinding: it answers to localhost, IP addresses, this \
             machine's host name and own_url's host). If {shown:?} is a name of this Manager, \
             add it to allowed_hosts in flamenco-manager.yaml and restart. The worker API \
             answers to any name."
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_parsed_from_authorities() {
        for (authority, expected) in [
            ("localhost", Some("localhost")),
            ("LocalHost:8083", Some("localhost")),
            ("manager.farm.example.:80", Some("manager.farm.example")),
            ("127.0.0.1:8083", Some("127.0.0.1")),
            ("[::1]:8083", Some("::1")),
            ("[fe80::1]", Some("fe80::1")),
            ("user@evil.example", None),
            ("evil.example:x", None),
            ("evil.example:", None),
            ("[::1]x", None),
            ("", None),
        ] {
            assert_eq!(host_name(authority).as_deref(), expected, "{authority}");
        }
    }

    #[test]
    fn the_policy_allows_own_names_and_ip_literals_only() {
        let mut config = Config {
            own_url: "http://Manager.Farm.Example:8083/".into(),
            allowed_hosts: vec!["render-gateway".into()],
            ..Config::default()
        };
        let policy = HostPolicy::new(&config, &["render01.studio.lan".to_string()]);
        for ok in [
            "localhost",
            "localhost:8083",
            "127.0.0.1:8083",
            "10.1.2.3",
            "[::1]:8083",
            "[2001:db8::7]",
            "render01",
            "render01.studio.lan:8083",
            "manager.farm.example:8083",
            "manager",
            "render-gateway",
        ] {
            assert!(policy.allows(ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "render01.evil.example",
            "user@localhost",
            "",
        ] {
            assert!(!policy.allows(refused), "{refused}");
        }
        config.allowed_hosts.push("*".into());
        assert!(HostPolicy::new(&config, &[]).allows("evil.example"));
    }
}
