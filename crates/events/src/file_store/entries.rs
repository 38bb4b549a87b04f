//! How the state file holds a memory store's state: one `entries` table of keys (a kind byte,
//! the session, what follows) and values, and the writes a checkpoint makes of what changed
//! (`load.rs` fills a memory store from the file).

use crate::error::{Error, Result};
use crate::memory_store::Sessions;
use crate::messages::{Outcome, TaskRef};
use rusqlite::{params, Connection};
use std::collections::{BTreeSet, HashMap};

/// Outcomes are kept in the file by chunks of this many instances, one row each: a million
/// outcomes are a thousand rows, written a chunk at a time.
pub(super) const CHUNK: u64 = 1024;

/// What changed of the memoized results since the last checkpoint.
#[derive(Debug, Default)]
pub(super) struct MemoChanged {
    /// Prefixes cleared, in order.
    pub(super) cleared: Vec<String>,
    pub(super) keys: BTreeSet<String>,
    /// The queue for agents and the task manager changed.
    pub(super) agents: bool,
}

/// What changed of one session since the last checkpoint.
#[derive(Debug, Default)]
pub(super) struct Changed {
    /// Everything: write the session anew (after cleanup).
    pub(super) all: bool,
    /// The small entries: run, cancel, document, state, listing, origin, fence, mappings, the
    /// result and the notes.
    pub(super) meta: bool,
    /// The whole context (it was replaced).
    pub(super) context: bool,
    pub(super) context_keys: BTreeSet<String>,
    pub(super) tasks: BTreeSet<(usize, usize)>,
    /// Per task, the chunks ([`CHUNK`] instances each) with a changed outcome.
    pub(super) outcomes: HashMap<(usize, usize), BTreeSet<u64>>,
    pub(super) blobs: BTreeSet<String>,
}

/// The kinds of entries, the first byte of every key.
pub(super) mod kind {
    pub const TASK: u8 = b'T';
    pub const OUTCOME: u8 = b'O';
    pub const CONTEXT: u8 = b'C';
    pub const BLOB: u8 = b'B';
    pub const RESULT: u8 = b'R';
    pub const META: u8 = b'M';
    pub const NOTE: u8 = b'N';
    /// Memoized results, under the empty session: they belong to none.
    pub const MEMO: u8 = b'K';
    /// The queue for agents and the task manager, whole, under the empty session.
    pub const AGENTS: u8 = b'A';
    /// The kinds a session's entries have.
    pub const ALL: [u8; 7] = [TASK, OUTCOME, CONTEXT, BLOB, RESULT, META, NOTE];
}

/// `kind`, the session's length and the session: every key of one session's kind starts so.
fn prefix(kind: u8, session: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(5 + session.len() + 16);
    key.push(kind);
    key.extend_from_slice(&(session.len() as u32).to_be_bytes());
    key.extend_from_slice(session.as_bytes());
    key
}

fn key(kind: u8, session: &str, suffix: &[u8]) -> Vec<u8> {
    let mut key = prefix(kind, session);
    key.extend_from_slice(suffix);
    key
}

fn task_suffix(group: usize, task: usize) -> Vec<u8> {
    let mut suffix = (group as u32).to_be_bytes().to_vec();
    suffix.extend_from_slice(&(task as u32).to_be_bytes());
    suffix
}

fn chunk_suffix(group: usize, task: usize, chunk: u64) -> Vec<u8> {
    let mut suffix = task_suffix(group, task);
    suffix.extend_from_slice(&chunk.to_be_bytes());
    suffix
}

/// A key taken apart: its kind, session and what follows.
pub(super) fn split(key: &[u8]) -> Option<(u8, String, &[u8])> {
    let (&kind, rest) = key.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let session = std::str::from_utf8(rest.get(4..4 + len)?).ok()?.to_string();
    Some((kind, session, &rest[4 + len..]))
}

pub(super) fn be_u32(bytes: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
}

/// One change to the file.
pub(super) enum Write {
    Put(Vec<u8>, Vec<u8>),
    /// A chunk of outcomes, copied under the store's lock and encoded after it is released.
    Chunk(Vec<u8>, Vec<Option<Outcome>>),
    Delete(Vec<u8>),
    /// Every key starting with this.
    DeletePrefix(Vec<u8>),
}

/// The first key after every key starting with `prefix` (none when it is all `0xff`).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

pub(super) fn sqlite(operation: &str, error: rusqlite::Error) -> Error {
    crate::telemetry::error("file");
    let busy = matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    if busy {
        Error::Unavailable {
            backend: "state file",
            message: format!("{operation}: {error}"),
        }
    } else {
        Error::Refused {
            backend: "state file",
            operation: operation.to_string(),
            message: error.to_string(),
        }
    }
}

pub(super) fn corrupt(what: impl Into<String>, message: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        what: what.into(),
        message: message.to_string(),
    }
}

fn json<T: serde::Serialize>(what: &str, value: &T) -> Result<Vec<u8>> {
    crate::error::encode(what, value)
}

pub(super) fn write(db: &mut Connection, writes: &[Write]) -> rusqlite::Result<()> {
    let transaction = db.transaction()?;
    {
        let mut put =
            transaction.prepare_cached("INSERT OR REPLACE INTO entries (k, v) VALUES (?1, ?2)")?;
        let mut delete = transaction.prepare_cached("DELETE FROM entries WHERE k = ?1")?;
        let mut delete_range =
            transaction.prepare_cached("DELETE FROM entries WHERE k >= ?1 AND k < ?2")?;
        let mut delete_from = transaction.prepare_cached("DELETE FROM entries WHERE k >= ?1")?;
        for write in writes {
            match write {
                Write::Put(key, value) => {
                    put.execute(params![key, value])?;
                }
                Write::Chunk(key, outcomes) => {
                    let value = serde_json::to_vec(outcomes)
                        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                    put.execute(params![key, value])?;
                }
                Write::Delete(key) => {
                    delete.execute(params![key])?;
                }
                Write::DeletePrefix(prefix) => match prefix_end(prefix) {
                    Some(end) => {
                        delete_range.execute(params![prefix, end])?;
                    }
                    None => {
                        delete_from.execute(params![prefix])?;
                    }
                },
            }
        }
    }
    transaction.commit()
}

/// The writes that bring the file's copy of `session` up to `sessions`' for what `changed` says.
pub(super) fn snapshot(
    sessions: &Sessions,
    session: &str,
    changed: &Changed,
    writes: &mut Vec<Write>,
) -> Result<()> {
    if changed.all {
        for kind in kind::ALL {
            writes.push(Write::DeletePrefix(prefix(kind, session)));
        }
    }
    if changed.all || changed.meta {
        meta(sessions, session, changed.all, writes)?;
    }
    task_writes(sessions, session, changed, writes)?;
    outcome_writes(sessions, session, changed, writes);
    context_writes(sessions, session, changed, writes);
    blob_writes(sessions, session, changed, writes);
    Ok(())
}

/// Task records: every one of the session's on a rewrite, else the ones changed.
fn task_writes(
    sessions: &Sessions,
    session: &str,
    changed: &Changed,
    writes: &mut Vec<Write>,
) -> Result<()> {
    let name = session.to_string();
    let tasks: Vec<(usize, usize)> = if changed.all {
        sessions
            .tasks
            .keys()
            .filter(|(s, _)| *s == name)
            .map(|(_, t)| (t.group, t.task))
            .collect()
    } else {
        changed.tasks.iter().copied().collect()
    };
    for (group, task) in tasks {
        let at = key(kind::TASK, session, &task_suffix(group, task));
        match sessions.tasks.get(&(name.clone(), TaskRef { group, task })) {
            Some(record) => writes.push(Write::Put(at, json("a task record", record)?)),
            None => writes.push(Write::Delete(at)),
        }
    }
    Ok(())
}

/// Outcomes, a chunk of [`CHUNK`] at a time: every chunk of the session's on a rewrite, else
/// the chunks changed.
fn outcome_writes(sessions: &Sessions, session: &str, changed: &Changed, writes: &mut Vec<Write>) {
    let name = session.to_string();
    let chunk = |group: usize, task: usize, chunk: u64| -> Write {
        let at = key(kind::OUTCOME, session, &chunk_suffix(group, task, chunk));
        let empty = crate::outcome_slots::Slots::default();
        let slots = sessions
            .outcomes
            .get(&(name.clone(), TaskRef { group, task }))
            .unwrap_or(&empty);
        let start = usize::try_from(chunk * CHUNK)
            .unwrap_or(usize::MAX)
            .min(slots.len());
        let end = usize::try_from((chunk + 1) * CHUNK)
            .unwrap_or(usize::MAX)
            .min(slots.len());
        let part = slots.range(start..end);
        if part.iter().all(Option::is_none) {
            Write::Delete(at)
        } else {
            Write::Chunk(at, part)
        }
    };
    if changed.all {
        for ((s, task), slots) in &sessions.outcomes {
            if *s == name {
                for c in 0..(slots.len() as u64).div_ceil(CHUNK) {
                    writes.push(chunk(task.group, task.task, c));
                }
            }
        }
    } else {
        for (&(group, task), chunks) in &changed.outcomes {
            for &c in chunks {
                writes.push(chunk(group, task, c));
            }
        }
    }
}

/// The context: its entries carry their position, so it loads back in order.
fn context_writes(sessions: &Sessions, session: &str, changed: &Changed, writes: &mut Vec<Write>) {
    let entries = sessions.contexts.get(session);
    if changed.context && !changed.all {
        writes.push(Write::DeletePrefix(prefix(kind::CONTEXT, session)));
    }
    let context_entry = |position: usize, (key_name, value): &(String, Vec<u8>)| {
        let mut suffix = (position as u32).to_be_bytes().to_vec();
        suffix.extend_from_slice(key_name.as_bytes());
        Write::Put(key(kind::CONTEXT, session, &suffix), value.clone())
    };
    match entries {
        Some(entries) if changed.all || changed.context => {
            for (position, entry) in entries.iter().enumerate() {
                writes.push(context_entry(position, entry));
            }
        }
        Some(entries) => {
            for (position, entry) in entries.iter().enumerate() {
                if changed.context_keys.contains(&entry.0) {
                    writes.push(context_entry(position, entry));
                }
            }
        }
        None => {}
    }
}

/// Blobs: every one of the session's on a rewrite, else the ones changed.
fn blob_writes(sessions: &Sessions, session: &str, changed: &Changed, writes: &mut Vec<Write>) {
    let name = session.to_string();
    let blobs: Vec<String> = if changed.all {
        sessions
            .blobs
            .keys()
            .filter(|(s, _)| *s == name)
            .map(|(_, blob)| blob.clone())
            .collect()
    } else {
        changed.blobs.iter().cloned().collect()
    };
    for blob in blobs {
        let at = key(kind::BLOB, session, blob.as_bytes());
        match sessions.blobs.get(&(name.clone(), blob)) {
            Some(bytes) => writes.push(Write::Put(at, bytes.clone())),
            None => writes.push(Write::Delete(at)),
        }
    }
}

/// The memoized results that changed, as they stand: cleared prefixes deleted first.
pub(super) fn memo_snapshot(
    sessions: &Sessions,
    changed: &MemoChanged,
    writes: &mut Vec<Write>,
) -> Result<()> {
    if changed.agents {
        let queue = serde_json::to_vec(&sessions.agents)
            .map_err(|e| corrupt("the queue for agents", e.to_string()))?;
        writes.push(Write::Put(key(kind::AGENTS, "", b""), queue));
    }
    for prefix in &changed.cleared {
        writes.push(Write::DeletePrefix(key(kind::MEMO, "", prefix.as_bytes())));
    }
    for name in &changed.keys {
        let at = key(kind::MEMO, "", name.as_bytes());
        match sessions.memo.get(name) {
            Some((bytes, expires)) => {
                let mut value = expires.unwrap_or(0).to_be_bytes().to_vec();
                value.extend_from_slice(bytes);
                writes.push(Write::Put(at, value));
            }
            None => writes.push(Write::Delete(at)),
        }
    }
    Ok(())
}

/// The session's small entries and its notes, each written or deleted as it stands.
fn meta(
    sessions: &Sessions,
    session: &str,
    rewritten: bool,
    writes: &mut Vec<Write>,
) -> Result<()> {
    let mut field = |name: &str, value: Option<Vec<u8>>| {
        let at = key(kind::META, session, name.as_bytes());
        match value {
            Some(value) => writes.push(Write::Put(at, value)),
            None if !rewritten => writes.push(Write::Delete(at)),
            None => {}
        }
    };
    field(
        "run",
        sessions
            .runs
            .get(session)
            .map(|run| run.as_bytes().to_vec()),
    );
    field(
        "cancel",
        sessions
            .cancels
            .get(session)
            .map(|run| run.as_bytes().to_vec()),
    );
    field(
        "document",
        sessions.documents.get(session).map(|(run, document)| {
            let mut bytes = (run.len() as u32).to_be_bytes().to_vec();
            bytes.extend_from_slice(run.as_bytes());
            bytes.extend_from_slice(document);
            bytes
        }),
    );
    field("state", sessions.states.get(session).cloned());
    field(
        "listed",
        sessions
            .listed
            .get(session)
            .map(|at| at.to_be_bytes().to_vec()),
    );
    field(
        "origin",
        sessions
            .origins
            .get(session)
            .map(|o| o.to_string().into_bytes()),
    );
    field(
        "fence",
        sessions.fences.get(session).map(|t| t.as_bytes().to_vec()),
    );
    let mappings = match sessions.mappings.get(session) {
        Some(mappings) => Some(json("the mappings", mappings)?),
        None => None,
    };
    field("mappings", mappings);
    let kept = match sessions.kept.get(session) {
        Some(kept) if !kept.is_empty() => Some(json("the results kept", kept)?),
        _ => None,
    };
    field("kept", kept);
    let result_at = key(kind::RESULT, session, &[]);
    match sessions.results.get(session) {
        Some(result) => writes.push(Write::Put(result_at, result.clone())),
        None if !rewritten => writes.push(Write::Delete(result_at)),
        None => {}
    }
    if !rewritten {
        writes.push(Write::DeletePrefix(prefix(kind::NOTE, session)));
    }
    for ((s, run), note) in &sessions.notes {
        if s == session {
            writes.push(Write::Put(
                key(kind::NOTE, session, run.as_bytes()),
                note.as_bytes().to_vec(),
            ));
        }
    }
    Ok(())
}
