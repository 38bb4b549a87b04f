//! Filling a memory store from the state file's entries (the form `entries.rs` writes).

use super::entries::{be_u32, corrupt, kind, split, sqlite, CHUNK};
use crate::error::{Error, Result};
use crate::memory_store::Sessions;
use crate::messages::{Outcome, TaskRecord, TaskRef};
use crate::origin::Origin;
use rusqlite::Connection;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// Fills `sessions` from the file.
pub(super) fn load(db: &Connection, sessions: &mut Sessions, path: &Path) -> Result<()> {
    let reading = |e| sqlite(&format!("reading {}", path.display()), e);
    let mut statement = db
        .prepare("SELECT k, v FROM entries ORDER BY k")
        .map_err(reading)?;
    let mut rows = statement.query([]).map_err(reading)?;
    let mut contexts: HashMap<String, Vec<(usize, String, Vec<u8>)>> = HashMap::new();
    while let Some(row) = rows.next().map_err(reading)? {
        let key: Vec<u8> = row.get(0).map_err(reading)?;
        let value: Vec<u8> = row.get(1).map_err(reading)?;
        let bad = |why: &str| corrupt(format!("entry {key:?} of {}", path.display()), why);
        let (kind, session, suffix) = split(&key).ok_or_else(|| bad("unreadable key"))?;
        let text = || String::from_utf8(value.clone()).map_err(|_| bad("not UTF-8"));
        match kind {
            kind::TASK => {
                let (group, task) = (be_u32(suffix, 0), be_u32(suffix, 4));
                let (Some(group), Some(task)) = (group, task) else {
                    return Err(bad("a task key without its indices"));
                };
                let record: TaskRecord =
                    serde_json::from_slice(&value).map_err(|e| bad(&e.to_string()))?;
                sessions
                    .tasks
                    .insert((session, TaskRef { group, task }), record);
            }
            kind::OUTCOME => load_outcomes(sessions, session, suffix, &value, &bad)?,
            kind::CONTEXT => {
                let position =
                    be_u32(suffix, 0).ok_or_else(|| bad("a context key without position"))?;
                let name = std::str::from_utf8(&suffix[4..])
                    .map_err(|_| bad("a context key that is not UTF-8"))?;
                contexts
                    .entry(session)
                    .or_default()
                    .push((position, name.to_string(), value));
            }
            kind::BLOB => {
                let name = std::str::from_utf8(suffix)
                    .map_err(|_| bad("a blob name that is not UTF-8"))?;
                sessions.blobs.insert((session, name.to_string()), value);
            }
            kind::RESULT => {
                sessions.results.insert(session, value);
            }
            kind::MEMO => load_memo(sessions, suffix, &value, &bad)?,
            kind::AGENTS => {
                sessions.agents =
                    serde_json::from_slice(&value).map_err(|e| bad(&e.to_string()))?;
                sessions.agents.recount();
            }
            kind::NOTE => {
                let run =
                    std::str::from_utf8(suffix).map_err(|_| bad("a run that is not UTF-8"))?;
                sessions.notes.insert((session, run.to_string()), text()?);
            }
            kind::META => load_meta(sessions, session, suffix, value, &bad)?,
            _ => return Err(bad("an unknown kind of entry")),
        }
    }
    for (session, mut entries) in contexts {
        entries.sort_by_key(|(position, _, _)| *position);
        sessions.contexts.insert(
            session,
            entries
                .into_iter()
                .map(|(_, name, value)| (name, value))
                .collect(),
        );
    }
    Ok(())
}

/// Says what is wrong with the entry being read.
type Bad<'a> = dyn Fn(&str) -> Error + 'a;

/// A chunk of a task's outcomes.
fn load_outcomes(
    sessions: &mut Sessions,
    session: String,
    suffix: &[u8],
    value: &[u8],
    bad: &Bad<'_>,
) -> Result<()> {
    let (Some(group), Some(task), Some(chunk)) = (
        be_u32(suffix, 0),
        be_u32(suffix, 4),
        suffix
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes),
    ) else {
        return Err(bad("an outcomes key without its indices"));
    };
    let part: Vec<Option<Outcome>> =
        serde_json::from_slice(value).map_err(|e| bad(&e.to_string()))?;
    let slots = sessions
        .outcomes
        .entry((session, TaskRef { group, task }))
        .or_default();
    let start = usize::try_from(chunk * CHUNK).map_err(|_| bad("chunk too large"))?;
    for (offset, outcome) in part.into_iter().enumerate() {
        if outcome.is_some() || start + offset < slots.len() {
            slots.set(start + offset, outcome);
        }
    }
    Ok(())
}

/// A memoized result, with its expiry.
fn load_memo(sessions: &mut Sessions, suffix: &[u8], value: &[u8], bad: &Bad<'_>) -> Result<()> {
    let name = std::str::from_utf8(suffix).map_err(|_| bad("a memo key that is not UTF-8"))?;
    let expires = value
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| bad("a memoized result without its expiry"))?;
    let expires = (expires != 0).then_some(expires);
    sessions
        .memo
        .insert(name.to_string(), (value[8..].to_vec(), expires));
    Ok(())
}

/// One of a session's fields.
fn load_meta(
    sessions: &mut Sessions,
    session: String,
    suffix: &[u8],
    value: Vec<u8>,
    bad: &Bad<'_>,
) -> Result<()> {
    let text = || String::from_utf8(value.clone()).map_err(|_| bad("not UTF-8"));
    match suffix {
        b"run" => {
            sessions.runs.insert(session, text()?);
        }
        b"cancel" => {
            sessions.cancels.insert(session, text()?);
        }
        b"pause" => {
            sessions.pauses.insert(session, text()?);
        }
        b"document" => {
            let len = be_u32(&value, 0).ok_or_else(|| bad("a document without its run"))?;
            let run = value
                .get(4..4 + len)
                .and_then(|run| std::str::from_utf8(run).ok())
                .ok_or_else(|| bad("a document's run"))?
                .to_string();
            sessions
                .documents
                .insert(session, (run, value[4 + len..].to_vec()));
        }
        b"state" => {
            sessions.states.insert(session, value);
        }
        b"listed" => {
            let at = value
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| bad("a listing time"))?;
            sessions.listed.insert(session, at);
        }
        b"origin" => {
            let origin: Origin = text()?.parse().map_err(|e: String| bad(&e))?;
            sessions.origins.insert(session, origin);
        }
        b"fence" => {
            sessions.fences.insert(session, text()?);
        }
        b"mappings" => {
            let mappings: Map<String, Value> =
                serde_json::from_slice(&value).map_err(|e| bad(&e.to_string()))?;
            sessions.mappings.insert(session, mappings);
        }
        b"kept" => {
            let kept = serde_json::from_slice(&value).map_err(|e| bad(&e.to_string()))?;
            sessions.kept.insert(session, kept);
        }
        _ => return Err(bad("an unknown field")),
    }
    Ok(())
}
