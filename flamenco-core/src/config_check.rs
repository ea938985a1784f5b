//! What a loaded configuration must satisfy before the Manager can serve with it, beyond
//! what the loader checks: addresses that can be bound, a store URL that can be opened,
//! files and folders that exist. `flamenco serve` and `flamenco config check` both call
//! [`Config::validate_for_serving`], so they cannot disagree. (Checks that need the HTTP
//! layer, like parsing the TLS certificate, are added by the caller.)

use std::path::Path;

use crate::config::Config;

/// The outcome of [`Config::validate_for_serving`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServingCheck {
    /// Settings the Manager cannot serve with: `serve` refuses to start, `config check`
    /// exits 1. Each names the key and says what to do.
    pub problems: Vec<String>,
    /// Settings that work but probably not as meant: `serve` logs them and starts,
    /// `config check` prints them and exits 0.
    pub warnings: Vec<String>,
}

impl ServingCheck {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A `listen`-style address (v2 syntax): `:PORT` (every interface), `HOST:PORT`,
/// `[IPv6]:PORT`. Returns the host (empty: every interface; brackets removed) and the
/// port (0: any free port).
pub fn parse_listen(listen: &str) -> Result<(String, u16), String> {
    let listen = listen.trim();
    let bad = |why: &str| {
        format!("invalid listen address {listen:?}: {why}; expected HOST:PORT, [IPv6]:PORT or :PORT, e.g. :8083")
    };
    let (host, port) = listen
        .rsplit_once(':')
        .ok_or_else(|| bad("there is no :PORT"))?;
    let port: u16 = match port.parse::<u64>() {
        Ok(p) => {
            u16::try_from(p).map_err(|_| bad(&format!("port {p} is out of range (0–65535)")))?
        }
        Err(_) => return Err(bad(&format!("{port:?} is not a port number"))),
    };
    let host = host.trim();
    let host = match host.strip_prefix('[') {
        Some(rest) => rest
            .strip_suffix(']')
            .ok_or_else(|| bad("an IPv6 address needs its closing ]"))?,
        None if host.contains(':') => {
            return Err(bad(
                "an IPv6 address must be written in brackets, [::1]:8083",
            ))
        }
        None => host,
    };
    if host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(bad(&format!("{host:?} is not a host name or address")));
    }
    Ok((host.to_string(), port))
}

impl Config {
    /// `database_url` is empty (the embedded store) or a MongoDB URL.
    pub fn check_database_url(&self) -> Result<(), String> {
        let url = self.database_url.trim();
        if url.is_empty() || url.starts_with("mongodb://") || url.starts_with("mongodb+srv://") {
            return Ok(());
        }
        Err(format!(
            "database_url {:?} is not a MongoDB URL (mongodb:// or mongodb+srv://); \
             remove it to use the embedded store in data_dir",
            crate::store::mongo::redact(url)
        ))
    }

    /// Everything the daemon checks before it starts, at once: the `listen` and
    /// `tls_redirect_listen` addresses, `database_url`, `data_dir` (not a file), the TLS
    /// files (readable), the upstream settings, and `watch_for_latest_image` (a warning: the
    /// folder may appear later, and workers' reports still update the image).
    pub fn validate_for_serving(&self) -> ServingCheck {
        let mut check = ServingCheck::default();
        if let Err(e) = parse_listen(&self.listen) {
            check.problems.push(format!("listen: {e}"));
        }
        let redirect = self.tls_redirect_listen.trim();
        if !redirect.is_empty() {
            if let Err(e) = parse_listen(redirect) {
                check.problems.push(format!("tls_redirect_listen: {e}"));
            }
        }
        if let Err(e) = self.check_database_url() {
            check.problems.push(e);
        }
        if self.database_url.trim().is_empty() && self.data_dir.is_file() {
            check.problems.push(format!(
                "data_dir {} is a file; it must be a directory (it is created if missing)",
                self.data_dir.display()
            ));
        }
        for (key, path) in [("tlscert", &self.tlscert), ("tlskey", &self.tlskey)] {
            if !path.trim().is_empty() {
                if let Err(e) = std::fs::File::open(Path::new(path)) {
                    check
                        .problems
                        .push(format!("{key}: cannot read {path}: {e}"));
                }
            }
        }
        if self.is_upstream() {
            if let Err(e) = crate::upstream::check_config(self) {
                check.problems.push(e.to_string());
            }
        }
        let watch = self.watch_for_latest_image.trim();
        if !watch.is_empty() {
            if let Err(e) = crate::latest_image::watch::check_dir(Path::new(watch)) {
                check.warnings.push(format!(
                    "{e}; the latest image is updated from workers' /output-produced reports only"
                ));
            }
        }
        check
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen(":8083").unwrap(), (String::new(), 8083));
        assert_eq!(
            parse_listen("127.0.0.1:0").unwrap(),
            ("127.0.0.1".into(), 0)
        );
        assert_eq!(parse_listen("[::1]:80").unwrap(), ("::1".into(), 80));
        assert_eq!(parse_listen("[::0]:8083").unwrap(), ("::0".into(), 8083));
        assert_eq!(
            parse_listen(" manager.lan:8083 ").unwrap(),
            ("manager.lan".into(), 8083)
        );
        for (bad, why) in [
            ("127.0.0.1:99999", "port 99999 is out of range"),
            ("garbage", "there is no :PORT"),
            ("host:http", "\"http\" is not a port number"),
            ("::1:80", "must be written in brackets"),
            ("[::1:80", "closing ]"),
            ("a b:80", "is not a host name"),
        ] {
            let err = parse_listen(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(err.contains("expected HOST:PORT"), "{bad}: {err}");
        }
    }

    fn problems(yaml: &str) -> Vec<String> {
        Config::from_yaml(yaml, Path::new("test.yaml"))
            .unwrap()
            .validate_for_serving()
            .problems
    }

    #[test]
    fn what_serve_refuses() {
        assert!(problems("listen: '127.0.0.1:0'\n").is_empty());
        let p = problems("listen: '127.0.0.1:99999'\n");
        assert!(p.len() == 1 && p[0].starts_with("listen: "), "{p:?}");
        let p = problems("listen: garbage\n");
        assert!(p.len() == 1 && p[0].contains("garbage"), "{p:?}");
        let p = problems("database_url: postgres://u:secret@db/flamenco\n");
        assert!(p.len() == 1 && p[0].contains("not a MongoDB URL"), "{p:?}");
        assert!(!p[0].contains("secret"), "the password is redacted: {p:?}");
        // Every problem at once.
        let p = problems("listen: garbage\ndatabase_url: postgres://db/x\ntlscert: /nonexistent/c.pem\ntlskey: /nonexistent/k.pem\n");
        assert_eq!(p.len(), 4, "{p:?}");
    }

    #[test]
    fn a_missing_watch_folder_is_a_warning() {
        let c = Config::from_yaml(
            "watch_for_latest_image: /nonexistent/renders\n",
            Path::new("test.yaml"),
        )
        .unwrap();
        let check = c.validate_for_serving();
        assert!(check.is_ok(), "{check:?}");
        assert_eq!(check.warnings.len(), 1, "{check:?}");
    }
}
