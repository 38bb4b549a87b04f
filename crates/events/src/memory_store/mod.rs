//! The in-memory [`Store`](crate::Store): the embedded default and the test double for Redis.
//! It keeps the same recording rule, lease and result semantics, checked by the shared
//! conformance suite. With a [`Journal`] it is also the state file's store: every write notes
//! what it changed there (`journal.rs`).
//!
//! The capabilities are implemented in `session.rs` (a session's state) and `shared.rs` (what
//! belongs to no session, and the agents' queue).

mod journal;
mod session;
mod shared;

pub(crate) use journal::{Change, Journal};

use crate::error::{Error, Result};
use crate::messages::{TaskRecord, TaskRef};
use crate::origin::Origin;
use crate::store::{Claim, Fence, Subscription};
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Sessions' state. Context values and results are kept serialized, as Redis keeps them: a
/// million-element context value costs its JSON text here, not a second tree of `Value`s.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    pub(crate) tasks: HashMap<(String, TaskRef), TaskRecord>,
    pub(crate) outcomes: HashMap<(String, TaskRef), crate::outcome_slots::Slots>,
    pub(crate) contexts: HashMap<String, Vec<(String, Vec<u8>)>>,
    pub(crate) blobs: HashMap<(String, String), Vec<u8>>,
    pub(crate) mappings: HashMap<String, Map<String, Value>>,
    pub(crate) results: HashMap<String, Vec<u8>>,
    /// The action each session id was last started from.
    pub(crate) origins: HashMap<String, Origin>,
    /// Lease holders and until when they hold it.
    pub(crate) leases: HashMap<String, (String, Instant)>,
    /// The token of each session's latest claim (see [`Fence`]).
    pub(crate) fences: HashMap<String, String>,
    /// Each session's current run (see [`Runs::start_run`]).
    pub(crate) runs: HashMap<String, String>,
    /// The run each session was asked to cancel (see [`Runs::request_cancel`]).
    pub(crate) cancels: HashMap<String, String>,
    /// The run each session was asked to pause (see [`Runs::request_pause`]).
    pub(crate) pauses: HashMap<String, String>,
    /// Each session's last run document (see [`Documents::save_document`]).
    pub(crate) documents: HashMap<String, (String, Vec<u8>)>,
    /// Notes on intake actions that started no run (see [`Documents::note_action`]).
    pub(crate) notes: HashMap<(String, String), String>,
    /// Each session's withdrawal mark (see [`Documents::withdraw`]); not working state.
    pub(crate) withdrawals: HashMap<String, String>,
    /// Each session's live state (see [`Documents::save_state`]).
    pub(crate) states: HashMap<String, Vec<u8>>,
    /// Sessions by when they were listed (see [`Documents::sessions`]).
    pub(crate) listed: HashMap<String, u64>,
    /// Members by id: what they said last and when (see [`Membership::heartbeat`]).
    pub(crate) members: HashMap<String, (Vec<u8>, u64)>,
    /// The workers that started each work item and did not finish it (see
    /// [`Outcomes::track_range`]).
    pub(crate) starts: HashMap<(String, String), std::collections::BTreeSet<String>>,
    /// Memoized results by key: the result's JSON and when it expires (wall-clock ms), if it
    /// does (see [`Memo::memo_get`]).
    pub(crate) memo: HashMap<String, (Vec<u8>, Option<u64>)>,
    /// Items for agents (see [`AgentQueue::agent_claim`]).
    pub(crate) agents: crate::agent_queue::MemoryAgentQueue,
    /// The tasks whose outcomes the next cleanup keeps (see [`Outcomes::keep_results`]).
    pub(crate) kept: HashMap<String, std::collections::BTreeSet<(usize, usize)>>,
}

impl Sessions {
    /// Refuses a write whose token a later claim replaced. With no token stored (the store lost
    /// the session, see [`Renewal::StateLost`]) nobody claimed it since, so the write goes ahead.
    fn check(&self, session: &str, fence: Fence<'_>) -> Result<()> {
        match (fence, self.fences.get(session)) {
            (Fence::Token(token), Some(current)) if current != token => Err(Error::Fenced {
                session: session.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Whether `run` is the session's current run (an empty run is not checked).
    fn is_current(&self, session: &str, run: &str) -> bool {
        run.is_empty() || self.runs.get(session).is_some_and(|current| current == run)
    }

    /// Deletes the session's working state, not its result, lease or fence.
    fn forget(&mut self, session: &str) {
        self.runs.remove(session);
        self.cancels.remove(session);
        self.pauses.remove(session);
        self.documents.remove(session);
        self.states.remove(session);
        self.tasks.retain(|(name, _), _| name != session);
        let kept = self.kept.remove(session).unwrap_or_default();
        self.outcomes
            .retain(|(name, task), _| name != session || kept.contains(&(task.group, task.task)));
        if kept.is_empty() {
            self.blobs.retain(|(name, _), _| name != session);
        }
        self.contexts.remove(session);
        self.mappings.remove(session);
        self.starts.retain(|(name, _), _| name != session);
    }

    /// Takes `session`'s lease: see [`Runs::claim`](crate::Runs::claim).
    fn claim(
        &mut self,
        session: &str,
        owner: &str,
        origin: &Origin,
        token: &str,
        lease: std::time::Duration,
    ) -> Claim {
        let previous = self.origins.get(session).cloned();
        if previous
            .as_ref()
            .is_some_and(|previous| previous.supersedes(origin))
        {
            return Claim::Superseded;
        }
        if self.holder(session).is_some_and(|holder| holder != owner) {
            return Claim::Held;
        }
        if previous.as_ref() == Some(origin) && self.results.contains_key(session) {
            return Claim::Finished;
        }
        self.leases.insert(
            session.to_string(),
            (owner.to_string(), Instant::now() + lease),
        );
        self.fences.insert(session.to_string(), token.to_string());
        match previous {
            Some(previous) if previous == *origin => Claim::Resume,
            previous => {
                self.origins.insert(session.to_string(), origin.clone());
                self.results.remove(session);
                if previous.is_some() {
                    Claim::Stale
                } else {
                    Claim::Fresh
                }
            }
        }
    }

    /// Keeps the session's successes for a rerun: see
    /// [`Outcomes::keep_successes`](crate::Outcomes::keep_successes).
    fn keep_successes(&mut self, session: &str, forget: &[TaskRef]) -> u64 {
        self.outcomes
            .retain(|(name, task), _| name != session || !forget.contains(task));
        let mut kept = 0u64;
        for ((name, _), slots) in self.outcomes.iter_mut() {
            if name != session {
                continue;
            }
            kept += slots.keep_successes();
        }
        self.cancels.remove(session);
        self.pauses.remove(session);
        self.starts.retain(|(name, _), _| name != session);
        kept
    }

    /// Who holds `session`'s lease now, if anyone.
    fn holder(&self, session: &str) -> Option<&str> {
        self.leases
            .get(session)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(owner, _)| owner.as_str())
    }
}

fn decode(what: &str, bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        what: what.to_string(),
        message: e.to_string(),
    })
}

/// State and pub/sub in memory: the embedded default and the test double for Redis.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    sessions: Arc<Mutex<Sessions>>,
    channels: Arc<Mutex<Channels>>,
    blobs_saved: Arc<std::sync::atomic::AtomicU64>,
    /// Where writes note what they changed, to make it durable (the state file).
    journal: Option<Arc<dyn Journal>>,
}

type Subscriber = mpsc::UnboundedSender<Vec<u8>>;

/// Subscribers by channel, and by pattern.
#[derive(Debug, Default)]
struct Channels {
    exact: HashMap<String, Vec<Subscriber>>,
    patterns: Vec<(String, Subscriber)>,
}

/// Whether `channel` matches the Redis glob `pattern` (`*`, `?`, `\` escapes; no `[...]`).
fn glob_matches(pattern: &[u8], channel: &[u8]) -> bool {
    match pattern.split_first() {
        None => channel.is_empty(),
        Some((b'*', rest)) => (0..=channel.len()).any(|skip| glob_matches(rest, &channel[skip..])),
        Some((b'?', rest)) => !channel.is_empty() && glob_matches(rest, &channel[1..]),
        Some((b'\\', [literal, rest @ ..])) | Some((literal, rest)) => {
            channel.first() == Some(literal) && glob_matches(rest, &channel[1..])
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store on `sessions` whose writes note their changes in the journal `journal` makes: it
    /// is given a weak handle on the sessions, to read them at a checkpoint without keeping
    /// them alive.
    pub(crate) fn journaled(
        sessions: Sessions,
        journal: impl FnOnce(Weak<Mutex<Sessions>>) -> Arc<dyn Journal>,
    ) -> Self {
        let sessions = Arc::new(Mutex::new(sessions));
        let journal = journal(Arc::downgrade(&sessions));
        Self {
            sessions,
            journal: Some(journal),
            ..Self::default()
        }
    }

    /// Notes in the journal, if there is one, what a write changed.
    fn note(&self, session: &str, change: Change<'_>) -> Result<()> {
        match &self.journal {
            Some(journal) => journal.note(session, change),
            None => Ok(()),
        }
    }

    /// Notes a change and waits until every change noted is durable: for the writes that must
    /// be when they return.
    async fn note_durably(&self, session: &str, change: Change<'_>) -> Result<()> {
        match &self.journal {
            Some(journal) => {
                journal.note(session, change)?;
                journal.sync().await
            }
            None => Ok(()),
        }
    }

    pub(crate) fn state(&self) -> Result<MutexGuard<'_, Sessions>> {
        self.sessions
            .lock()
            .map_err(|_| Error::poisoned("memory store"))
    }

    /// Runs `change` on the queue for agents and the task manager, then notes it for the
    /// journal (the state file keeps them whole, `file_store`).
    fn agents_changing<T>(
        &self,
        change: impl FnOnce(&mut crate::agent_queue::MemoryAgentQueue) -> T,
    ) -> Result<T> {
        let changed = change(&mut self.state()?.agents);
        self.agents_changed()?;
        Ok(changed)
    }

    /// Notes that the queue for agents changed (for a call that changed it only sometimes).
    fn agents_changed(&self) -> Result<()> {
        self.note("", Change::Agents)
    }

    /// The sessions' state, for a write with `fence`: refused when a later claim replaced it.
    fn fenced(&self, session: &str, fence: Fence<'_>) -> Result<MutexGuard<'_, Sessions>> {
        let sessions = self.state()?;
        sessions.check(session, fence)?;
        Ok(sessions)
    }

    /// How many blobs (results stored by reference) were ever saved.
    pub fn blobs_saved(&self) -> u64 {
        self.blobs_saved.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many sessions still hold working state (for tests of cleanup).
    pub fn working_sessions(&self) -> usize {
        self.sessions.lock().map_or(0, |s| {
            let mut names: Vec<&String> = s.contexts.keys().chain(s.mappings.keys()).collect();
            names.extend(
                s.tasks
                    .keys()
                    .chain(s.outcomes.keys())
                    .map(|(name, _)| name),
            );
            names.extend(s.blobs.keys().map(|(name, _)| name));
            names.sort();
            names.dedup();
            names.len()
        })
    }
}

#[derive(Debug)]
struct MemorySubscription {
    channel: String,
    receiver: mpsc::UnboundedReceiver<Vec<u8>>,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Result<Vec<u8>> {
        self.receiver
            .recv()
            .await
            .ok_or_else(|| Error::Closed(format!("subscription to {}", self.channel)))
    }
}

/// Members not heard from for this long are forgotten.
const FORGET_MEMBERS_MS: u64 = 24 * 3600 * 1000;

/// The machine's wall clock in milliseconds since the Unix epoch: the in-memory twin's stand-in
/// for Redis's `TIME`, the one clock the store shows times by (for display only).
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// What the in-memory store refused, and why.
fn refused(operation: &str, message: String) -> Error {
    Error::Refused {
        backend: "memory",
        operation: operation.into(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn glob_patterns_match_like_redis() {
        let matches =
            |pattern: &str, channel: &str| glob_matches(pattern.as_bytes(), channel.as_bytes());
        assert!(matches("agency:notices:*", "agency:notices:{s1}"));
        assert!(matches("agency:notices:*", "agency:notices:"));
        assert!(!matches("agency:notices:*", "agency:results"));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
        assert!(matches("*:{*}", "x:{y}"));
        assert!(matches(r"a\*", "a*"));
        assert!(!matches(r"a\*", "ab"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
    }
}
