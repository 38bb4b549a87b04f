//! The state file of durable embedded runs (`agency run --state PATH`): the in-memory store,
//! with a journal that keeps its state in an SQLite file by checkpoints.
//!
//! Every call is answered by a [`MemoryStore`] (the same rules, the same conformance suite);
//! its writes note what they changed in the [`FileJournal`] (the memory store's one seam for
//! durability, `memory_store/journal.rs`). A checkpoint writes the changed entries, as they are
//! at that moment, in one SQLite transaction: the file always holds the whole state as it was at
//! some checkpoint. Checkpoints are written every `checkpoint` interval, and before a write that
//! must be durable returns (a result, the end of a run, a session's working state deleted or
//! rewritten, memoized results removed), so a crash loses at most what was recorded since the
//! last one: those outcomes were never written for good, and their instances run again.
//!
//! What lives only in the process is not kept: leases (the process holding them is gone),
//! heartbeats, the workers counted on a range ([`crate::Outcomes::track_range`]) and pub/sub.
//! The queue for agents and the task manager are kept whole, as one entry: the task manager
//! runs on a state file (`agency tasks --state PATH`), each command holding the file's lock
//! ([`FileStore::open_waiting`]), so claims are atomic between the processes of one machine.
//!
//! The file is opened in WAL mode, so other processes can read it while a run writes it
//! ([`FileStore::open_read_only`]: `agency status --state PATH`). The layout of its entries is
//! in `entries.rs`.

mod entries;
mod load;

use crate::error::{Error, Result};
use crate::memory_store::{Change, Journal, MemoryStore, Sessions};
use async_trait::async_trait;
use entries::{memo_snapshot, snapshot, sqlite, write, Changed, MemoChanged, CHUNK};
use load::load;
use rusqlite::{Connection, OpenFlags};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How long opening waits for the file's lock by default: a store of this process just
/// dropped may hold it a moment longer (a checkpoint it was writing); not another writer.
const OWN_LOCK_PATIENCE: Duration = Duration::from_secs(2);

/// How often changes are written to the file when nothing asks for it sooner.
pub const DEFAULT_CHECKPOINT: Duration = Duration::from_millis(250);

/// The in-memory store, with its state kept in an SQLite file: use it as the [`MemoryStore`] it
/// derefs to ([`FileStore::store`] for a handle of its own).
#[derive(Debug, Clone)]
pub struct FileStore {
    memory: MemoryStore,
    journal: Arc<FileJournal>,
}

/// Where the memory store's writes note what they changed, and the file they are written to.
#[derive(Debug)]
struct FileJournal {
    path: PathBuf,
    /// The writer's lock on the file, released when the store is dropped.
    _lock: std::fs::File,
    /// Held for the whole of a checkpoint, so checkpoints are written in the order taken.
    db: Mutex<Connection>,
    dirty: Mutex<HashMap<String, Changed>>,
    memo: Mutex<MemoChanged>,
    /// The memory store's state, read at each checkpoint (weak: the store owns the journal).
    sessions: Weak<Mutex<Sessions>>,
    /// This journal, to hand a checkpoint to a blocking thread.
    me: Weak<FileJournal>,
}

impl FileStore {
    /// Opens (or creates) the state file at `path` and loads what it holds; checkpoints are
    /// written every `checkpoint` from then on (on the current Tokio runtime). The file is
    /// locked to this process for writing: a second writer is refused with a clear error.
    pub async fn open(path: &Path, checkpoint: Duration) -> Result<Self> {
        Self::open_waiting(path, checkpoint, OWN_LOCK_PATIENCE).await
    }

    /// As [`FileStore::open`], waiting up to `patience` for another process holding the file
    /// to let it go (the task manager's commands take turns so: seed 003's lock timeout).
    pub async fn open_waiting(
        path: &Path,
        checkpoint: Duration,
        patience: Duration,
    ) -> Result<Self> {
        let owned = path.to_path_buf();
        let store = tokio::task::spawn_blocking(move || Self::open_blocking(&owned, patience))
            .await
            .map_err(|e| Error::Unavailable {
                backend: "state file",
                message: format!("opening task: {e}"),
            })??;
        tokio::spawn(checkpoints(
            Arc::downgrade(&store.journal),
            checkpoint.max(Duration::from_millis(1)),
        ));
        Ok(store)
    }

    fn open_blocking(path: &Path, patience: Duration) -> Result<Self> {
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
        let lock = lock(path, patience)?;
        let mut sessions = Sessions::default();
        load(&db, &mut sessions, path)?;
        let mut journal = None;
        let memory = MemoryStore::journaled(sessions, |sessions| {
            let made = Arc::new_cyclic(|me| FileJournal {
                path: path.to_path_buf(),
                _lock: lock,
                db: Mutex::new(db),
                dirty: Mutex::new(HashMap::new()),
                memo: Mutex::new(MemoChanged::default()),
                sessions,
                me: me.clone(),
            });
            journal = Some(made.clone());
            made
        });
        let journal = journal.ok_or_else(|| Error::poisoned("state file journal"))?;
        Ok(Self { memory, journal })
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

    /// Whether a process holds the state file at `path` for writing: a run under way in it.
    /// A file whose run says `running` and that no process holds was stopped or killed before
    /// it finished. (A shared lock, let go at once: a writer starting meanwhile waits for it.)
    pub fn is_held(path: &Path) -> Result<bool> {
        let file = std::fs::File::open(path).map_err(|e| Error::Refused {
            backend: "state file",
            operation: format!("opening {}", path.display()),
            message: e.to_string(),
        })?;
        match file.try_lock_shared() {
            Ok(()) => Ok(false),
            Err(std::fs::TryLockError::WouldBlock) => Ok(true),
            Err(std::fs::TryLockError::Error(error)) => Err(Error::Refused {
                backend: "state file",
                operation: format!("locking {}", path.display()),
                message: error.to_string(),
            }),
        }
    }

    /// Where the state file is.
    pub fn path(&self) -> &Path {
        &self.journal.path
    }

    /// The store, as a handle of its own (it shares the state and the file).
    pub fn store(&self) -> MemoryStore {
        self.memory.clone()
    }

    /// Writes every change made so far to the file, in one transaction, and waits until it is
    /// there (on disk: `synchronous=FULL`).
    pub async fn checkpoint(&self) -> Result<()> {
        self.journal.sync().await
    }
}

impl std::ops::Deref for FileStore {
    type Target = MemoryStore;

    fn deref(&self) -> &MemoryStore {
        &self.memory
    }
}

/// The writer's lock on the state file: held for as long as the store lives, so a second `agency
/// run --state` on the same file stops at once instead of interleaving its writes. (An advisory
/// `flock`, apart from SQLite's own locks: readers are not held up.)
fn lock(path: &Path, patience: Duration) -> Result<std::fs::File> {
    let lock = std::fs::File::open(path).map_err(|e| Error::Refused {
        backend: "state file",
        operation: format!("opening {}", path.display()),
        message: e.to_string(),
    })?;
    let patience = std::time::Instant::now() + patience;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(lock),
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
}

/// Writes a checkpoint every `every` while the store is alive.
async fn checkpoints(journal: Weak<FileJournal>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(journal) = journal.upgrade() else {
            return;
        };
        match journal.sync().await {
            Ok(()) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot write a checkpoint of the state file; the next one will try again")
            }
        }
    }
}

#[async_trait]
impl Journal for FileJournal {
    fn note(&self, session: &str, change: Change<'_>) -> Result<()> {
        fn poisoned<T>(_: T) -> Error {
            Error::poisoned("state file changes")
        }
        match change {
            Change::Memo(entries) => {
                let mut memo = self.memo.lock().map_err(poisoned)?;
                memo.keys.extend(entries.iter().map(|(key, _)| key.clone()));
                return Ok(());
            }
            Change::MemoCleared(prefix) => {
                let mut memo = self.memo.lock().map_err(poisoned)?;
                memo.cleared.push(prefix.to_string());
                return Ok(());
            }
            Change::Agents => {
                self.memo.lock().map_err(poisoned)?.agents = true;
                return Ok(());
            }
            _ => {}
        }
        let mut dirty = self.dirty.lock().map_err(poisoned)?;
        let changed = dirty.entry(session.to_string()).or_default();
        match change {
            Change::Meta => changed.meta = true,
            Change::Task(task) => {
                changed.tasks.insert((task.group, task.task));
            }
            Change::Outcomes {
                task,
                outcomes,
                accepted,
            } => {
                let chunks = changed.outcomes.entry((task.group, task.task)).or_default();
                chunks.extend(
                    outcomes
                        .iter()
                        .zip(accepted)
                        .filter(|(_, &a)| a)
                        .map(|(outcome, _)| outcome.instance / CHUNK),
                );
            }
            Change::Context => changed.context = true,
            Change::ContextKey(key) => {
                changed.context_keys.insert(key.to_string());
            }
            Change::Blob(name) => {
                changed.blobs.insert(name.to_string());
            }
            Change::All => changed.all = true,
            Change::Memo(_) | Change::MemoCleared(_) | Change::Agents => {}
        }
        Ok(())
    }

    async fn sync(&self) -> Result<()> {
        let Some(journal) = self.me.upgrade() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || journal.checkpoint())
            .await
            .map_err(|e| Error::Unavailable {
                backend: "state file",
                message: format!("checkpoint task: {e}"),
            })?
    }
}

impl FileJournal {
    fn checkpoint(&self) -> Result<()> {
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
        if changed.is_empty() && memo.cleared.is_empty() && memo.keys.is_empty() && !memo.agents {
            return Ok(());
        }
        // The store is gone: nothing is left to write from.
        let Some(sessions) = self.sessions.upgrade() else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let writes = {
            let sessions = sessions
                .lock()
                .map_err(|_| Error::poisoned("memory store"))?;
            let mut writes = Vec::new();
            for (session, changed) in &changed {
                snapshot(&sessions, session, changed, &mut writes)?;
            }
            memo_snapshot(&sessions, &memo, &mut writes)?;
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
                again.agents |= memo.agents;
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
