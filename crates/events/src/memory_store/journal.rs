//! The one seam where durability is added to the in-memory store: every write tells its
//! [`Journal`] what it changed, and the writes that must be durable when they return wait for
//! [`Journal::sync`]. The state file (`file_store`) is the memory store with a journal that
//! writes the changed entries to SQLite; the memory store without one pays a `None` check.

use crate::error::Result;
use crate::messages::{Outcome, TaskRef};
use async_trait::async_trait;
use serde_json::Value;

/// What one write changed of a session (or of the memoized results, which belong to none).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'a> {
    /// The small entries: run, cancel and pause marks, document, state, listing, origin, fence,
    /// mappings, the result, the notes on actions and the marks of results kept.
    Meta,
    /// A task's record.
    Task(TaskRef),
    /// Outcomes of a task, each with whether it was accepted.
    Outcomes {
        /// Whose outcomes.
        task: TaskRef,
        /// The outcomes offered.
        outcomes: &'a [Outcome],
        /// Per outcome, whether the recording rule accepted it.
        accepted: &'a [bool],
    },
    /// The whole context (it was replaced).
    Context,
    /// One context key.
    ContextKey(&'a str),
    /// One blob.
    Blob(&'a str),
    /// Anything of the session: its working state was deleted or rewritten.
    All,
    /// Memoized results stored under these keys.
    Memo(&'a [(String, Value)]),
    /// Memoized results removed by prefix.
    MemoCleared(&'a str),
    /// The queue for agents and the task manager (they belong to no session).
    Agents,
}

/// Where a memory store notes its changes to make them durable.
#[async_trait]
pub(crate) trait Journal: Send + Sync + std::fmt::Debug + 'static {
    /// Notes what a write changed, after the store made the change and released its lock.
    fn note(&self, session: &str, change: Change<'_>) -> Result<()>;
    /// Makes every change noted so far durable, and waits until it is.
    async fn sync(&self) -> Result<()>;
}
