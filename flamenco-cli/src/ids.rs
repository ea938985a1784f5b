//! Ids given on the command line: the full 24-character id, or the short id the tables
//! show (its last characters, at least [`MIN_SHORT`]) when exactly one job, task or worker
//! ends with it.

use anyhow::{anyhow, bail, Result};
use flamenco_core::model::ObjectId;
use flamenco_core::store::{JobQuery, TaskQuery};
use flamenco_core::Manager;

/// The shortest accepted ending of an id.
pub const MIN_SHORT: usize = 6;

/// What an id names, for messages and the lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Job,
    Task,
    Worker,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Job => "job",
            Kind::Task => "task",
            Kind::Worker => "worker",
        }
    }
}

/// A full id, or `None` for a short one (to look up with [`resolve`]). `what` names the
/// argument in the error ("job id", "--job").
pub fn parse(what: &str, raw: &str) -> Result<Option<ObjectId>> {
    let raw = raw.trim();
    if let Ok(id) = ObjectId::parse(raw) {
        return Ok(Some(id));
    }
    if raw.len() >= MIN_SHORT && raw.len() < 24 && raw.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(None);
    }
    bail!(
        "{what} {raw:?} is not an id: give the 24 hexadecimal characters, or the short id the \
         tables show (the last {MIN_SHORT} or more of them)"
    )
}

/// The id `raw` names: parsed when full, else the one `kind` whose id ends with it.
pub async fn resolve(manager: &Manager, kind: Kind, what: &str, raw: &str) -> Result<ObjectId> {
    if let Some(id) = parse(what, raw)? {
        return Ok(id);
    }
    let ending = raw.trim().to_ascii_lowercase();
    let ids: Vec<ObjectId> = match kind {
        Kind::Job => manager
            .list_jobs(&JobQuery::default())
            .await?
            .into_iter()
            .map(|j| j.id)
            .collect(),
        Kind::Task => manager
            .list_tasks(&TaskQuery::default())
            .await?
            .into_iter()
            .map(|t| t.id)
            .collect(),
        Kind::Worker => manager
            .list_workers()
            .await?
            .into_iter()
            .map(|w| w.id)
            .collect(),
    };
    let matches: Vec<ObjectId> = ids
        .into_iter()
        .filter(|id| id.to_hex().ends_with(&ending))
        .collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(anyhow!("{} {raw} is unknown", kind.name())),
        many => Err(anyhow!(
            "{what} {raw:?} is ambiguous: {} {}s end with it ({}); give more characters",
            many.len(),
            kind.name(),
            many.iter()
                .take(5)
                .map(|id| id.to_hex())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The ids `raws` name, in order, every one checked before any is used: full ids as they
/// are, short ones looked up in one listing of `kind` (not one per id).
pub async fn resolve_many(
    manager: &Manager,
    kind: Kind,
    what: &str,
    raws: &[String],
) -> Result<Vec<ObjectId>> {
    let mut parsed = Vec::with_capacity(raws.len());
    for raw in raws {
        parsed.push(parse(what, raw)?);
    }
    if parsed.iter().all(Option::is_some) {
        return Ok(parsed.into_iter().flatten().collect());
    }
    let all: Vec<String> = match kind {
        Kind::Job => manager
            .list_jobs(&JobQuery::default())
            .await?
            .into_iter()
            .map(|j| j.id.to_hex())
            .collect(),
        Kind::Task => manager
            .list_tasks(&TaskQuery::default())
            .await?
            .into_iter()
            .map(|t| t.id.to_hex())
            .collect(),
        Kind::Worker => manager
            .list_workers()
            .await?
            .into_iter()
            .map(|w| w.id.to_hex())
            .collect(),
    };
    let mut out = Vec::with_capacity(raws.len());
    for (raw, full) in raws.iter().zip(parsed) {
        if let Some(id) = full {
            out.push(id);
            continue;
        }
        let ending = raw.trim().to_ascii_lowercase();
        let matches: Vec<&String> = all.iter().filter(|h| h.ends_with(&ending)).collect();
        match matches.as_slice() {
            [one] => out.push(ObjectId::parse(one).map_err(|e| anyhow!("{e}"))?),
            [] => return Err(anyhow!("{} {raw} is unknown", kind.name())),
            many => {
                return Err(anyhow!(
                    "{what} {raw:?} is ambiguous: {} {}s end with it ({}); give more characters",
                    many.len(),
                    kind.name(),
                    many.iter()
                        .take(5)
                        .map(|h| h.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_short_and_bad_ids() {
        let full = "5852bc5198377351f95d103e";
        assert_eq!(
            parse("job id", full).unwrap(),
            Some(ObjectId::parse(full).unwrap())
        );
        assert_eq!(parse("job id", "f95d103e").unwrap(), None);
        assert_eq!(parse("job id", "5d103e").unwrap(), None);
        for bad in ["nope", "103e", "f95d103z", ""] {
            let err = parse("job id", bad).unwrap_err().to_string();
            assert!(err.contains("is not an id"), "{bad}: {err}");
        }
    }
}
