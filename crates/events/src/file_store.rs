//! The state file [`Store`] of durable embedded runs (`agency run --state PATH`): the in-memory
//! store's state, kept in an SQLite file by checkpoints.
//!
//! Every call is answered by a [`MemoryStore`] (the same rules, the same conformance suite), and
//! notes what it changed. A checkpoint writes the changed entries, as they are at that moment, in
//! one SQLite transaction: the file always holds the whole state as it was at some checkpoint.
//! Checkpoints are written every `checkpoint` interval, after a result is stored and after a
//! session's working state is deleted, so a crash loses at most what was recorded since the last
//! one: those outcomes were never written for good, and their instances run again.
//!
//! What lives only in the process is not kept: leases (the process holding them is gone),
//! heartbeats, the workers counted on a range ([`Store::track_range`]) and pub/sub.
//!
//! The file is opened in WAL mode, so other processes can read it while a run writes it
//! ([`FileStore::open_read_only`]: `agency status --state PATH`).

use crate::error::{Error, Result};
use crate::memory_store::{MemoryStore, Sessions};
use crate::messages::{Outcome, TaskRecord, TaskRef};
use crate::origin::Origin;
use crate::store::{Claim, Fence, RangeStep, Renewal, Store, Subscription};
use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags};
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Outcomes are kept in the file by chunks of this many instances, one row each: a million
/// outcomes are a thousand rows, written a chunk at a time.
const CHUNK: u64 = 1024;

/// How often changes are written to the file when nothing asks for it sooner.
pub const DEFAULT_CHECKPOINT: Duration = Duration::from_millis(250);

/// The in-memory store, with its state kept in an SQLite file.
#[derive(Debug, Clone)]
pub struct FileStore {
    memory: MemoryStore,
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// The writer's lock on the file, released when the store is dropped.
    _lock: std::fs::File,
    /// Held for the whole of a checkpoint, so checkpoints are written in the order taken.
    db: Mutex<Connection>,
    dirty: Mutex<HashMap<String, Changed>>,
    memo: Mutex<MemoChanged>,
}

/// What changed of the memoized results since the last checkpoint.
#[derive(Debug, Default)]
struct MemoChanged {
    /// Prefixes cleared, in order.
    cleared: Vec<String>,
    keys: BTreeSet<String>,
}

/// What changed of one session since the last checkpoint.
#[derive(Debug, Default)]
struct Changed {
    /// Everything: write the session anew (after cleanup).
    all: bool,
    /// The small entries: run, cancel, document, state, listing, origin, fence, mappings, the
    /// result and the notes.
    meta: bool,
    /// The whole context (it was replaced).
    context: bool,
    context_keys: BTreeSet<String>,
    tasks: BTreeSet<(usize, usize)>,
    /// Per task, the chunks ([`CHUNK`] instances each) with a changed outcome.
    outcomes: HashMap<(usize, usize), BTreeSet<u64>>,
    blobs: BTreeSet<String>,
}

/// The kinds of entries, the first byte of every key.
mod kind {
    pub const TASK: u8 = b'T';
    pub const OUTCOME: u8 = b'O';
    pub const CONTEXT: u8 = b'C';
    pub const BLOB: u8 = b'B';
    pub const RESULT: u8 = b'R';
    pub const META: u8 = b'M';
    pub const NOTE: u8 = b'N';
    /// Memoized results, under the empty session: they belong to none.
    pub const MEMO: u8 = b'K';
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
fn split(key: &[u8]) -> Option<(u8, String, &[u8])> {
    let (&kind, rest) = key.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let session = std::str::from_utf8(rest.get(4..4 + len)?).ok()?.to_string();
    Some((kind, session, &rest[4 + len..]))
}

fn be_u32(bytes: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
}

/// One change to the file.
enum Write {
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

fn sqlite(operation: &str, error: rusqlite::Error) -> Error {
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

fn corrupt(what: impl Into<String>, message: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        what: what.into(),
        message: message.to_string(),
    }
}

fn json<T: serde::Serialize>(what: &str, value: &T) -> Result<Vec<u8>> {
    crate::error::encode(what, value)
}

impl FileStore {
    /// Opens (or creates) the state file at `path` and loads what it holds; checkpoints are
    /// written every `checkpoint` from then on (on the current Tokio runtime). The file is
    /// locked to this process for writing: a second writer is refused with a clear error.
    pub async fn open(path: &Path, checkpoint: Duration) -> Result<Self> {
        let owned = path.to_path_buf();
        let store = tokio::task::spawn_blocking(move || Self::open_blocking(&owned))
            .await
            .map_err(|e| Error::Unavailable {
                backend: "state file",
                message: format!("opening task: {e}"),
            })??;
        let weak = Arc::downgrade(&store.inner);
        let memory = store.memory.clone();
        tokio::spawn(checkpoints(
            weak,
            memory,
            checkpoint.max(Duration::from_millis(1)),
        ));
        Ok(store)
    }

    fn open_blocking(path: &Path) -> Result<Self> {
        let opening = |e| sqlite(&format!("opening {}", path.display()), e);
        let db = Connection::open(path).map_err(opening)?;
        db.pragma_update(None, "journal_mode", "WAL")
            .map_err(opening)?;
        db.pragma_update(None, "synchronous", "FULL")
            .map_err(opening)?;
        db.busy_timeout(Duration::from_secs(5)).map_err(opening)?;
        // A rowid table: context values and results can be megabytes.
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS entries (k BLOB PRIMARY KEY, v BLOB NOT NULL);",
        )
        .map_err(opening)?;
        // One writer: a lock held for as long as the store lives, so a second `agency run
        // --state` on the same file stops at once instead of interleaving its writes. (An
        // advisory `flock`, apart from SQLite's own locks: readers are not held up.)
        let lock = std::fs::File::open(path).map_err(|e| Error::Refused {
            backend: "state file",
            operation: format!("opening {}", path.display()),
            message: e.to_string(),
        })?;
        // A store of this process just dropped may hold the lock a moment longer (a checkpoint
        // it was writing): wait for that, not for another writer.
        let patience = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < patience => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(error) => {
                    return Err(Error::Refused {
                        backend: "state file",
                        operation: format!("opening {}", path.display()),
                        message: match error {
                            std::fs::TryLockError::WouldBlock => {
                                "another process has it open for writing (one run per state file)"
                                    .into()
                            }
                            std::fs::TryLockError::Error(error) => error.to_string(),
                        },
                    })
                }
            }
        }
        let memory = MemoryStore::new();
        load(&db, &mut *memory.state()?, path)?;
        Ok(Self {
            memory,
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                _lock: lock,
                db: Mutex::new(db),
                dirty: Mutex::new(HashMap::new()),
                memo: Mutex::new(MemoChanged::default()),
            }),
        })
    }

    /// Reads the state file at `path` as it was at its last checkpoint, without writing it, while
    /// a run may be writing it: a snapshot for `agency status --state`.
    pub fn open_read_only(path: &Path) -> Result<MemoryStore> {
        let opening = |e| sqlite(&format!("opening {}", path.display()), e);
        if !path.exists() {
            return Err(Error::Refused {
                backend: "state file",
                operation: format!("opening {}", path.display()),
                message: "no such file".into(),
            });
        }
        let db = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(opening)?;
        db.busy_timeout(Duration::from_secs(5)).map_err(opening)?;
        let memory = MemoryStore::new();
        load(&db, &mut *memory.state()?, path)?;
        Ok(memory)
    }

    /// Where the state file is.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Writes every change made so far to the file, in one transaction, and waits until it is
    /// there (on disk: `synchronous=FULL`).
    pub async fn checkpoint(&self) -> Result<()> {
        let (inner, memory) = (self.inner.clone(), self.memory.clone());
        tokio::task::spawn_blocking(move || inner.checkpoint(&memory))
            .await
            .map_err(|e| Error::Unavailable {
                backend: "state file",
                message: format!("checkpoint task: {e}"),
            })?
    }

    fn changed(&self, session: &str, note: impl FnOnce(&mut Changed)) -> Result<()> {
        let mut dirty = self
            .inner
            .dirty
            .lock()
            .map_err(|_| Error::poisoned("state file changes"))?;
        note(dirty.entry(session.to_string()).or_default());
        Ok(())
    }

    fn meta_changed(&self, session: &str) -> Result<()> {
        self.changed(session, |changed| changed.meta = true)
    }
}

/// Writes a checkpoint every `every` while the store is alive.
async fn checkpoints(inner: Weak<Inner>, memory: MemoryStore, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        let memory = memory.clone();
        let written = tokio::task::spawn_blocking(move || inner.checkpoint(&memory)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot write a checkpoint of the state file; the next one will try again")
            }
            Err(error) => tracing::warn!(%error, "checkpoint task failed"),
        }
    }
}

impl Inner {
    fn checkpoint(&self, memory: &MemoryStore) -> Result<()> {
        let mut db = self.db.lock().map_err(|_| Error::poisoned("state file"))?;
        let changed = std::mem::take(
            &mut *self
                .dirty
                .lock()
                .map_err(|_| Error::poisoned("state file changes"))?,
        );
        let memo = std::mem::take(
            &mut *self
                .memo
                .lock()
                .map_err(|_| Error::poisoned("state file changes"))?,
        );
        if changed.is_empty() && memo.cleared.is_empty() && memo.keys.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let writes = {
            let sessions = memory.state()?;
            let mut writes = Vec::new();
            for (session, changed) in &changed {
                snapshot(&sessions, session, changed, &mut writes)?;
            }
            memo_snapshot(&sessions, &memo, &mut writes);
            writes
        };
        let snapshot_took = started.elapsed();
        let written = write(&mut db, &writes);
        tracing::debug!(writes = writes.len(), ?snapshot_took, took = ?started.elapsed(), "checkpoint written");
        if written.is_err() {
            // Written next time instead, whole: nothing is lost from the file's point of view.
            if let Ok(mut dirty) = self.dirty.lock() {
                for session in changed.into_keys() {
                    dirty.entry(session).or_default().all = true;
                }
            }
            if let Ok(mut again) = self.memo.lock() {
                let later = std::mem::take(&mut *again);
                again.cleared = memo.cleared.into_iter().chain(later.cleared).collect();
                again.keys = memo.keys.into_iter().chain(later.keys).collect();
            }
        }
        written.map_err(|e| {
            sqlite(
                &format!("writing a checkpoint of {}", self.path.display()),
                e,
            )
        })
    }
}

fn write(db: &mut Connection, writes: &[Write]) -> rusqlite::Result<()> {
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
fn snapshot(
    sessions: &Sessions,
    session: &str,
    changed: &Changed,
    writes: &mut Vec<Write>,
) -> Result<()> {
    let name = session.to_string();
    if changed.all {
        for kind in kind::ALL {
            writes.push(Write::DeletePrefix(prefix(kind, session)));
        }
    }
    if changed.all || changed.meta {
        meta(sessions, session, changed.all, writes)?;
    }
    // Tasks and outcomes: every one of the session's on a rewrite, else the ones changed.
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
    // Context: its entries carry their position, so it loads back in order.
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
    Ok(())
}

/// The memoized results that changed, as they stand: cleared prefixes deleted first.
fn memo_snapshot(sessions: &Sessions, changed: &MemoChanged, writes: &mut Vec<Write>) {
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

/// Fills `sessions` from the file.
fn load(db: &Connection, sessions: &mut Sessions, path: &Path) -> Result<()> {
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
            kind::OUTCOME => {
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
                    serde_json::from_slice(&value).map_err(|e| bad(&e.to_string()))?;
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
            }
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
            kind::MEMO => {
                let name =
                    std::str::from_utf8(suffix).map_err(|_| bad("a memo key that is not UTF-8"))?;
                let expires = value
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| bad("a memoized result without its expiry"))?;
                let expires = (expires != 0).then_some(expires);
                sessions
                    .memo
                    .insert(name.to_string(), (value[8..].to_vec(), expires));
            }
            kind::NOTE => {
                let run =
                    std::str::from_utf8(suffix).map_err(|_| bad("a run that is not UTF-8"))?;
                sessions.notes.insert((session, run.to_string()), text()?);
            }
            kind::META => match suffix {
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
            },
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

#[async_trait]
impl Store for FileStore {
    async fn save_task(
        &self,
        session: &str,
        task: TaskRef,
        record: &TaskRecord,
        fence: Fence<'_>,
    ) -> Result<()> {
        self.memory.save_task(session, task, record, fence).await?;
        self.changed(session, |c| {
            c.tasks.insert((task.group, task.task));
        })
    }

    async fn load_task(&self, session: &str, task: TaskRef) -> Result<Option<TaskRecord>> {
        self.memory.load_task(session, task).await
    }

    async fn record_outcomes(
        &self,
        session: &str,
        task: TaskRef,
        run: &str,
        outcomes: &[Outcome],
        notice: Option<&[u8]>,
    ) -> Result<Vec<bool>> {
        let accepted = self
            .memory
            .record_outcomes(session, task, run, outcomes, notice)
            .await?;
        if accepted.iter().any(|&a| a) {
            self.changed(session, |c| {
                let changed = c.outcomes.entry((task.group, task.task)).or_default();
                changed.extend(
                    outcomes
                        .iter()
                        .zip(&accepted)
                        .filter(|(_, &a)| a)
                        .map(|(outcome, _)| outcome.instance / CHUNK),
                );
            })?;
        }
        Ok(accepted)
    }

    async fn start_run(&self, session: &str, run: &str, fence: Fence<'_>) -> Result<()> {
        self.memory.start_run(session, run, fence).await?;
        self.meta_changed(session)
    }

    async fn end_run(&self, session: &str, run: &str, fence: Fence<'_>) -> Result<()> {
        self.memory.end_run(session, run, fence).await?;
        self.meta_changed(session)?;
        self.checkpoint().await
    }

    async fn current_run(&self, session: &str) -> Result<Option<String>> {
        self.memory.current_run(session).await
    }

    async fn request_cancel(&self, session: &str) -> Result<Option<String>> {
        let run = self.memory.request_cancel(session).await?;
        self.meta_changed(session)?;
        Ok(run)
    }

    async fn cancel_requested(&self, session: &str, run: &str) -> Result<bool> {
        self.memory.cancel_requested(session, run).await
    }

    async fn request_pause(&self, session: &str, paused: bool) -> Result<Option<String>> {
        let run = self.memory.request_pause(session, paused).await?;
        self.meta_changed(session)?;
        Ok(run)
    }

    async fn pause_requested(&self, session: &str, run: &str) -> Result<bool> {
        self.memory.pause_requested(session, run).await
    }

    async fn save_document(
        &self,
        session: &str,
        run: &str,
        document: &[u8],
        fence: Fence<'_>,
    ) -> Result<()> {
        self.memory
            .save_document(session, run, document, fence)
            .await?;
        self.meta_changed(session)
    }

    async fn load_document(&self, session: &str) -> Result<Option<(String, Vec<u8>)>> {
        self.memory.load_document(session).await
    }

    async fn note_action(&self, session: &str, run: &str, note: &str) -> Result<()> {
        self.memory.note_action(session, run, note).await?;
        self.meta_changed(session)
    }

    async fn action_note(&self, session: &str, run: &str) -> Result<Option<String>> {
        self.memory.action_note(session, run).await
    }

    async fn now_ms(&self) -> Result<u64> {
        self.memory.now_ms().await
    }

    async fn save_state(
        &self,
        session: &str,
        state: &[u8],
        replace: bool,
        fence: Fence<'_>,
    ) -> Result<()> {
        self.memory
            .save_state(session, state, replace, fence)
            .await?;
        self.meta_changed(session)
    }

    async fn load_state(&self, session: &str) -> Result<Option<Vec<u8>>> {
        self.memory.load_state(session).await
    }

    async fn sessions(&self, limit: usize) -> Result<Vec<(String, u64)>> {
        self.memory.sessions(limit).await
    }

    async fn heartbeat(&self, member: &str, info: &[u8]) -> Result<()> {
        self.memory.heartbeat(member, info).await
    }

    async fn members(&self) -> Result<Vec<(String, Vec<u8>, u64)>> {
        self.memory.members().await
    }

    async fn forget_member(&self, member: &str) -> Result<()> {
        self.memory.forget_member(member).await
    }

    async fn track_range(
        &self,
        session: &str,
        run: &str,
        item: &str,
        step: RangeStep<'_>,
    ) -> Result<Option<u64>> {
        self.memory.track_range(session, run, item, step).await
    }

    async fn outcomes(
        &self,
        session: &str,
        task: TaskRef,
        range: Range<u64>,
    ) -> Result<Vec<Option<Outcome>>> {
        self.memory.outcomes(session, task, range).await
    }

    async fn outcome_count(&self, session: &str, task: TaskRef) -> Result<u64> {
        self.memory.outcome_count(session, task).await
    }

    async fn save_context(
        &self,
        session: &str,
        context: &Map<String, Value>,
        fence: Fence<'_>,
    ) -> Result<()> {
        self.memory.save_context(session, context, fence).await?;
        self.changed(session, |c| c.context = true)
    }

    async fn set_context(
        &self,
        session: &str,
        key: &str,
        value: &Value,
        fence: Fence<'_>,
    ) -> Result<()> {
        self.memory.set_context(session, key, value, fence).await?;
        self.changed(session, |c| {
            c.context_keys.insert(key.to_string());
        })
    }

    async fn load_context(&self, session: &str) -> Result<Option<Map<String, Value>>> {
        self.memory.load_context(session).await
    }

    async fn save_mappings(
        &self,
        session: &str,
        mappings: &Map<String, Value>,
        fence: Fence<'_>,
    ) -> Result<()> {
        self.memory.save_mappings(session, mappings, fence).await?;
        self.meta_changed(session)
    }

    async fn load_mappings(&self, session: &str) -> Result<Option<Map<String, Value>>> {
        self.memory.load_mappings(session).await
    }

    async fn publish_result(
        &self,
        session: &str,
        result: &[u8],
        announcement: &[u8],
        fence: Fence<'_>,
    ) -> Result<()> {
        self.memory
            .publish_result(session, result, announcement, fence)
            .await?;
        self.meta_changed(session)?;
        // A result is on disk when this returns.
        self.checkpoint().await
    }

    async fn load_result(&self, session: &str) -> Result<Option<Value>> {
        self.memory.load_result(session).await
    }

    async fn delete_result(&self, session: &str, fence: Fence<'_>) -> Result<()> {
        self.memory.delete_result(session, fence).await?;
        self.meta_changed(session)
    }

    async fn claim(
        &self,
        session: &str,
        owner: &str,
        origin: &Origin,
        token: &str,
        lease: Duration,
    ) -> Result<Claim> {
        let claim = self
            .memory
            .claim(session, owner, origin, token, lease)
            .await?;
        self.meta_changed(session)?;
        Ok(claim)
    }

    async fn renew(
        &self,
        session: &str,
        owner: &str,
        token: &str,
        lease: Duration,
    ) -> Result<Renewal> {
        self.memory.renew(session, owner, token, lease).await
    }

    async fn release(&self, session: &str, owner: &str) -> Result<()> {
        self.memory.release(session, owner).await
    }

    async fn save_blob(&self, session: &str, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.memory.save_blob(session, name, bytes).await?;
        self.changed(session, |c| {
            c.blobs.insert(name.to_string());
        })
    }

    async fn load_blob(&self, session: &str, name: &str) -> Result<Option<Vec<u8>>> {
        self.memory.load_blob(session, name).await
    }

    async fn cleanup(&self, session: &str, fence: Fence<'_>) -> Result<()> {
        self.memory.cleanup(session, fence).await?;
        self.changed(session, |c| c.all = true)?;
        self.checkpoint().await
    }

    async fn keep_results(&self, session: &str, task: TaskRef, fence: Fence<'_>) -> Result<()> {
        self.memory.keep_results(session, task, fence).await?;
        self.meta_changed(session)
    }

    async fn keep_successes(
        &self,
        session: &str,
        forget: &[TaskRef],
        fence: Fence<'_>,
    ) -> Result<u64> {
        let kept = self.memory.keep_successes(session, forget, fence).await?;
        self.changed(session, |c| c.all = true)?;
        self.checkpoint().await?;
        Ok(kept)
    }

    async fn cleanup_run(&self, session: &str, run: &str) -> Result<()> {
        self.memory.cleanup_run(session, run).await?;
        self.changed(session, |c| c.all = true)?;
        self.checkpoint().await
    }

    async fn memo_get(&self, keys: &[String]) -> Result<Vec<Option<Value>>> {
        self.memory.memo_get(keys).await
    }

    async fn memo_put(&self, entries: &[(String, Value)], ttl: Option<Duration>) -> Result<()> {
        self.memory.memo_put(entries, ttl).await?;
        let mut memo = self
            .inner
            .memo
            .lock()
            .map_err(|_| Error::poisoned("state file changes"))?;
        memo.keys.extend(entries.iter().map(|(key, _)| key.clone()));
        Ok(())
    }

    async fn memo_clear(&self, prefix: &str) -> Result<u64> {
        let removed = self.memory.memo_clear(prefix).await?;
        self.inner
            .memo
            .lock()
            .map_err(|_| Error::poisoned("state file changes"))?
            .cleared
            .push(prefix.to_string());
        self.checkpoint().await?;
        Ok(removed)
    }

    async fn publish(&self, channel: &str, payload: Vec<u8>) -> Result<()> {
        self.memory.publish(channel, payload).await
    }

    async fn subscribe(&self, channel: &str) -> Result<Box<dyn Subscription>> {
        self.memory.subscribe(channel).await
    }

    async fn subscribe_pattern(&self, pattern: &str) -> Result<Box<dyn Subscription>> {
        self.memory.subscribe_pattern(pattern).await
    }
}
