//! Turning a `database_url` into a connected client: the driver options (short timeouts,
//! durable writes), the database name, and the reachability check with an error message
//! that says what to do — and never shows the password.

use std::time::Duration;

use mongodb::bson::doc;
use mongodb::options::{ClientOptions, WriteConcern};
use mongodb::{Client, Database};

use super::errors::{map_err, reason};
use crate::store::{StoreError, StoreResult};

/// The database used when the URL names none (`mongodb://host/` or `mongodb://host`).
pub const DEFAULT_DATABASE: &str = "flamenco";

/// How long an operation waits for a usable server before failing with `Unavailable`
/// (unless the URL sets `serverSelectionTimeoutMS`). Short, so that a worker request
/// during an outage gets a 503 within a few seconds instead of hanging for the driver's
/// default 30 s.
pub const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// TCP connect (and TLS handshake) limit, unless the URL sets `connectTimeoutMS`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the driver checks the server, unless the URL sets `heartbeatFrequencyMS`. A
/// server that stops answering (hung, not gone) is noticed by the next failed check, which
/// also interrupts the operations waiting on it: within this plus [`CONNECT_TIMEOUT`].
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// `url` with the password replaced by `****`, for messages and logs.
pub fn redact(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[after_scheme..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_string();
    };
    let password_start = after_scheme + colon + 1;
    let password_end = after_scheme + at;
    format!("{}****{}", &url[..password_start], &url[password_end..])
}

/// Parse the URL and fill in our defaults; returns the options and the database name.
pub(super) async fn options(url: &str) -> StoreResult<(ClientOptions, String)> {
    let shown = redact(url);
    let mut options = ClientOptions::parse(url).await.map_err(|e| {
        let why = reason(&e);
        match map_err(e) {
            // mongodb+srv:// looks the hosts up in DNS while parsing.
            StoreError::Unavailable(_) => StoreError::Unavailable(format!(
                "cannot reach MongoDB at {shown}: {why}; check database_url or start MongoDB"
            )),
            _ => StoreError::Other(format!("invalid MongoDB URL {shown}: {why}")),
        }
    })?;
    options
        .server_selection_timeout
        .get_or_insert(SERVER_SELECTION_TIMEOUT);
    options.connect_timeout.get_or_insert(CONNECT_TIMEOUT);
    options.heartbeat_freq.get_or_insert(HEARTBEAT);
    options
        .app_name
        .get_or_insert_with(|| format!("flamenco-manager/{}", crate::VERSION));
    // An acknowledged update must survive a crash of the database server: majority and
    // journaled, unless the URL chose a write concern.
    options.write_concern.get_or_insert_with(|| {
        let mut wc = WriteConcern::majority();
        wc.journal = Some(true);
        wc
    });
    let name = options
        .default_database
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_DATABASE.to_string());
    Ok((options, name))
}

/// Connect and check that the server answers (`ping`), with a message naming the URL.
pub(super) async fn client(url: &str, options: ClientOptions) -> StoreResult<Client> {
    let shown = redact(url);
    let client = Client::with_options(options)
        .map_err(|e| StoreError::Other(format!("invalid MongoDB URL {shown}: {}", reason(&e))))?;
    if let Err(e) = client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
    {
        let why = reason(&e);
        return Err(match map_err(e) {
            StoreError::Unavailable(_) => StoreError::Unavailable(format!(
                "cannot reach MongoDB at {shown}: {why}; check database_url or start MongoDB"
            )),
            _ => StoreError::Other(format!("cannot use MongoDB at {shown}: {why}")),
        });
    }
    check_version(&client, &shown).await?;
    Ok(client)
}

/// The oldest server this store works with: a claim writes its task with an update
/// pipeline (4.2) and reads with `$unionWith` (4.4).
const OLDEST_SERVER: [i64; 2] = [4, 4];

/// Refuse a server older than [`OLDEST_SERVER`] at connect, with a message that says
/// so, instead of failing every claim later. A server that does not say its version
/// (`buildInfo` refused or without `versionArray`) is given the benefit of the doubt.
async fn check_version(client: &Client, shown: &str) -> StoreResult<()> {
    let info = match client
        .database("admin")
        .run_command(doc! { "buildInfo": 1 })
        .await
    {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(
                "MongoDB at {shown} did not say its version ({}); assuming 4.4 or later",
                reason(&e)
            );
            return Ok(());
        }
    };
    let version: Vec<i64> = info
        .get_array("versionArray")
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p.as_i32().map(i64::from).or(p.as_i64()))
                .collect()
        })
        .unwrap_or_default();
    if too_old(&version) {
        let shown_version = info.get_str("version").unwrap_or("older than 4.4");
        return Err(StoreError::Other(format!(
            "MongoDB at {shown} is version {shown_version}; this Manager needs MongoDB {}.{} or later \
             (its claims read with $unionWith); upgrade the database server",
            OLDEST_SERVER[0], OLDEST_SERVER[1]
        )));
    }
    Ok(())
}

/// Is this `versionArray` older than [`OLDEST_SERVER`]? An empty one is not known to be.
fn too_old(version: &[i64]) -> bool {
    !version.is_empty()
        && version.iter().take(2).copied().collect::<Vec<_>>() < OLDEST_SERVER.to_vec()
}

/// A message for a failure while preparing the database (indices).
pub(super) fn preparing(db: &Database, e: StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => {
            StoreError::Unavailable(format!("preparing MongoDB database {}: {m}", db.name()))
        }
        StoreError::Other(m) => {
            StoreError::Other(format!("preparing MongoDB database {}: {m}", db.name()))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_older_than_4_4_are_refused() {
        assert!(too_old(&[4, 2, 24, 0]));
        assert!(too_old(&[3, 6, 23, 0]));
        assert!(too_old(&[4]));
        assert!(!too_old(&[4, 4, 0, 0]));
        assert!(!too_old(&[8, 2, 11, 0]));
        assert!(!too_old(&[5, 0]));
        assert!(!too_old(&[]), "a server that does not say is not refused");
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("mongodb://admin:hunter2@db:27017/flamenco?authSource=admin"),
            "mongodb://admin:****@db:27017/flamenco?authSource=admin"
        );
        assert_eq!(
            redact("mongodb+srv://u:p%40ss@cluster.example.com/"),
            "mongodb+srv://u:****@cluster.example.com/"
        );
        assert_eq!(redact("mongodb://db/flamenco"), "mongodb://db/flamenco");
        assert_eq!(redact("mongodb://user@db/"), "mongodb://user@db/");
    }

    #[tokio::test]
    async fn database_name_comes_from_the_path() {
        let (_, name) = options("mongodb://127.0.0.1:1/").await.expect("parse");
        assert_eq!(name, DEFAULT_DATABASE);
        let (_, name) = options("mongodb://127.0.0.1:1").await.expect("parse");
        assert_eq!(name, DEFAULT_DATABASE);
        let (o, name) = options("mongodb://127.0.0.1:1/farm?serverSelectionTimeoutMS=500")
            .await
            .expect("parse");
        assert_eq!(name, "farm");
        assert_eq!(o.server_selection_timeout, Some(Duration::from_millis(500)));
        assert_eq!(o.connect_timeout, Some(CONNECT_TIMEOUT));
        let err = options("mongodb://u:secret@[bad/")
            .await
            .expect_err("invalid");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
