//! The in-memory [`Store`]: the embedded default and the test double for Redis. It keeps the
//! same recording rule, lease and result semantics, checked by the shared conformance suite.

use crate::agents::{
    AgentClaim, AgentItem, AgentReport, ManagedTask, NewTask, Reported, WorkflowSummary,
};
use crate::error::{encode, Error, Result};
use crate::messages::{Outcome, TaskRecord, TaskRef};
use crate::origin::Origin;
use crate::store::{
    notices_channel, Claim, Fence, RangeStep, Renewal, Store, Subscription, RESULTS_CHANNEL,
};
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
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
    /// Each session's current run (see [`Store::start_run`]).
    pub(crate) runs: HashMap<String, String>,
    /// The run each session was asked to cancel (see [`Store::request_cancel`]).
    pub(crate) cancels: HashMap<String, String>,
    /// The run each session was asked to pause (see [`Store::request_pause`]).
    pub(crate) pauses: HashMap<String, String>,
    /// Each session's last run document (see [`Store::save_document`]).
    pub(crate) documents: HashMap<String, (String, Vec<u8>)>,
    /// Notes on intake actions that started no run (see [`Store::note_action`]).
    pub(crate) notes: HashMap<(String, String), String>,
    /// Each session's live state (see [`Store::save_state`]).
    pub(crate) states: HashMap<String, Vec<u8>>,
    /// Sessions by when they were listed (see [`Store::sessions`]).
    pub(crate) listed: HashMap<String, u64>,
    /// Members by id: what they said last and when (see [`Store::heartbeat`]).
    pub(crate) members: HashMap<String, (Vec<u8>, u64)>,
    /// The workers that started each work item and did not finish it (see
    /// [`Store::track_range`]).
    pub(crate) starts: HashMap<(String, String), std::collections::BTreeSet<String>>,
    /// Memoized results by key: the result's JSON and when it expires (wall-clock ms), if it
    /// does (see [`Store::memo_get`]).
    pub(crate) memo: HashMap<String, (Vec<u8>, Option<u64>)>,
    /// Items for agents (see [`Store::agent_claim`]).
    pub(crate) agents: crate::agents::AgentQueue,
    /// The tasks whose outcomes the next cleanup keeps (see [`Store::keep_results`]).
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

    pub(crate) fn state(&self) -> Result<MutexGuard<'_, Sessions>> {
        self.sessions
            .lock()
            .map_err(|_| Error::poisoned("memory store"))
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

#[async_trait]
impl Store for MemoryStore {
    async fn save_task(
        &self,
        session: &str,
        task: TaskRef,
        record: &TaskRecord,
        fence: Fence<'_>,
    ) -> Result<()> {
        self.fenced(session, fence)?
            .tasks
            .insert((session.to_string(), task), record.clone());
        Ok(())
    }

    async fn load_task(&self, session: &str, task: TaskRef) -> Result<Option<TaskRecord>> {
        Ok(self
            .state()?
            .tasks
            .get(&(session.to_string(), task))
            .cloned())
    }

    async fn record_outcomes(
        &self,
        session: &str,
        task: TaskRef,
        run: &str,
        outcomes: &[Outcome],
        notice: Option<&[u8]>,
    ) -> Result<Vec<bool>> {
        let accepted: Vec<bool> = {
            let mut sessions = self.state()?;
            if !sessions.is_current(session, run) {
                return Ok(vec![false; outcomes.len()]);
            }
            let slots = sessions
                .outcomes
                .entry((session.to_string(), task))
                .or_default();
            outcomes
                .iter()
                .map(|outcome| slots.record(outcome.clone()))
                .collect()
        };
        if let Some(notice) = notice.filter(|_| accepted.iter().all(|&a| a)) {
            self.publish(&notices_channel(session), notice.to_vec())
                .await?;
        }
        Ok(accepted)
    }

    async fn outcomes(
        &self,
        session: &str,
        task: TaskRef,
        range: Range<u64>,
    ) -> Result<Vec<Option<Outcome>>> {
        let sessions = self.state()?;
        let slots = sessions.outcomes.get(&(session.to_string(), task));
        Ok(range
            .map(|i| slots.and_then(|s| s.get(i as usize)))
            .collect())
    }

    async fn outcome_count(&self, session: &str, task: TaskRef) -> Result<u64> {
        let sessions = self.state()?;
        let slots = sessions.outcomes.get(&(session.to_string(), task));
        Ok(slots.map_or(0, crate::outcome_slots::Slots::recorded))
    }

    async fn save_context(
        &self,
        session: &str,
        context: &Map<String, Value>,
        fence: Fence<'_>,
    ) -> Result<()> {
        let entries = context
            .iter()
            .map(|(key, value)| Ok((key.clone(), encode(&format!("context key {key}"), value)?)))
            .collect::<Result<_>>()?;
        self.fenced(session, fence)?
            .contexts
            .insert(session.to_string(), entries);
        Ok(())
    }

    async fn set_context(
        &self,
        session: &str,
        key: &str,
        value: &Value,
        fence: Fence<'_>,
    ) -> Result<()> {
        let encoded = encode(&format!("context key {key}"), value)?;
        let mut sessions = self.fenced(session, fence)?;
        let entries = sessions.contexts.entry(session.to_string()).or_default();
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some((_, slot)) => *slot = encoded,
            None => entries.push((key.to_string(), encoded)),
        }
        Ok(())
    }

    async fn load_context(&self, session: &str) -> Result<Option<Map<String, Value>>> {
        let sessions = self.state()?;
        let Some(entries) = sessions.contexts.get(session) else {
            return Ok(None);
        };
        entries
            .iter()
            .map(|(key, bytes)| Ok((key.clone(), decode(&format!("context key {key}"), bytes)?)))
            .collect::<Result<_>>()
            .map(Some)
    }

    async fn save_mappings(
        &self,
        session: &str,
        mappings: &Map<String, Value>,
        fence: Fence<'_>,
    ) -> Result<()> {
        self.fenced(session, fence)?
            .mappings
            .insert(session.to_string(), mappings.clone());
        Ok(())
    }

    async fn load_mappings(&self, session: &str) -> Result<Option<Map<String, Value>>> {
        Ok(self.state()?.mappings.get(session).cloned())
    }

    async fn publish_result(
        &self,
        session: &str,
        result: &[u8],
        announcement: &[u8],
        fence: Fence<'_>,
    ) -> Result<()> {
        let earlier = self
            .fenced(session, fence)?
            .results
            .insert(session.to_string(), result.to_vec());
        // The same result stored again (a retry whose answer was lost) is not announced again.
        if earlier.as_deref() == Some(result) {
            return Ok(());
        }
        self.publish(RESULTS_CHANNEL, announcement.to_vec()).await
    }

    async fn load_result(&self, session: &str) -> Result<Option<Value>> {
        let sessions = self.state()?;
        sessions
            .results
            .get(session)
            .map(|bytes| decode(&format!("result of session {session}"), bytes))
            .transpose()
    }

    async fn delete_result(&self, session: &str, fence: Fence<'_>) -> Result<()> {
        self.fenced(session, fence)?.results.remove(session);
        Ok(())
    }

    async fn claim(
        &self,
        session: &str,
        owner: &str,
        origin: &Origin,
        token: &str,
        lease: Duration,
    ) -> Result<Claim> {
        let mut sessions = self.state()?;
        let previous = sessions.origins.get(session).cloned();
        if previous
            .as_ref()
            .is_some_and(|previous| previous.supersedes(origin))
        {
            return Ok(Claim::Superseded);
        }
        if sessions
            .holder(session)
            .is_some_and(|holder| holder != owner)
        {
            return Ok(Claim::Held);
        }
        if previous.as_ref() == Some(origin) && sessions.results.contains_key(session) {
            return Ok(Claim::Finished);
        }
        sessions.leases.insert(
            session.to_string(),
            (owner.to_string(), Instant::now() + lease),
        );
        sessions
            .fences
            .insert(session.to_string(), token.to_string());
        Ok(match previous {
            Some(previous) if previous == *origin => Claim::Resume,
            previous => {
                sessions.origins.insert(session.to_string(), origin.clone());
                sessions.results.remove(session);
                if previous.is_some() {
                    Claim::Stale
                } else {
                    Claim::Fresh
                }
            }
        })
    }

    async fn renew(
        &self,
        session: &str,
        owner: &str,
        token: &str,
        lease: Duration,
    ) -> Result<Renewal> {
        let mut sessions = self.state()?;
        let replaced = sessions.fences.get(session).is_some_and(|t| t != token);
        if replaced
            || sessions
                .holder(session)
                .is_some_and(|holder| holder != owner)
        {
            return Ok(Renewal::Taken);
        }
        if !sessions.origins.contains_key(session) {
            return Ok(Renewal::StateLost);
        }
        sessions.leases.insert(
            session.to_string(),
            (owner.to_string(), Instant::now() + lease),
        );
        Ok(Renewal::Held)
    }

    async fn release(&self, session: &str, owner: &str) -> Result<()> {
        let mut sessions = self.state()?;
        if sessions.holder(session) == Some(owner) {
            sessions.leases.remove(session);
        }
        Ok(())
    }

    async fn save_blob(&self, session: &str, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.blobs_saved
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.state()?
            .blobs
            .insert((session.to_string(), name.to_string()), bytes);
        Ok(())
    }

    async fn load_blob(&self, session: &str, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .state()?
            .blobs
            .get(&(session.to_string(), name.to_string()))
            .cloned())
    }

    async fn start_run(&self, session: &str, run: &str, fence: Fence<'_>) -> Result<()> {
        self.fenced(session, fence)?
            .runs
            .insert(session.to_string(), run.to_string());
        Ok(())
    }

    async fn end_run(&self, session: &str, run: &str, fence: Fence<'_>) -> Result<()> {
        let mut sessions = self.fenced(session, fence)?;
        if sessions
            .runs
            .get(session)
            .is_some_and(|current| current == run)
        {
            sessions.runs.remove(session);
            sessions.cancels.remove(session);
            sessions.pauses.remove(session);
        }
        Ok(())
    }

    async fn current_run(&self, session: &str) -> Result<Option<String>> {
        Ok(self.state()?.runs.get(session).cloned())
    }

    async fn request_cancel(&self, session: &str) -> Result<Option<String>> {
        let mut sessions = self.state()?;
        let Some(run) = sessions.runs.get(session).cloned() else {
            return Ok(None);
        };
        sessions.cancels.insert(session.to_string(), run.clone());
        Ok(Some(run))
    }

    async fn request_pause(&self, session: &str, paused: bool) -> Result<Option<String>> {
        let mut sessions = self.state()?;
        let Some(run) = sessions.runs.get(session).cloned() else {
            return Ok(None);
        };
        match paused {
            true => sessions.pauses.insert(session.to_string(), run.clone()),
            false => sessions.pauses.remove(session),
        };
        Ok(Some(run))
    }

    async fn pause_requested(&self, session: &str, run: &str) -> Result<bool> {
        Ok(self
            .state()?
            .pauses
            .get(session)
            .is_some_and(|paused| paused == run))
    }

    async fn save_document(
        &self,
        session: &str,
        run: &str,
        document: &[u8],
        fence: Fence<'_>,
    ) -> Result<()> {
        self.fenced(session, fence)?
            .documents
            .insert(session.to_string(), (run.to_string(), document.to_vec()));
        Ok(())
    }

    async fn load_document(&self, session: &str) -> Result<Option<(String, Vec<u8>)>> {
        Ok(self.state()?.documents.get(session).cloned())
    }

    async fn note_action(&self, session: &str, run: &str, note: &str) -> Result<()> {
        self.state()?
            .notes
            .insert((session.to_string(), run.to_string()), note.to_string());
        Ok(())
    }

    async fn action_note(&self, session: &str, run: &str) -> Result<Option<String>> {
        Ok(self
            .state()?
            .notes
            .get(&(session.to_string(), run.to_string()))
            .cloned())
    }

    async fn now_ms(&self) -> Result<u64> {
        Ok(wall_clock_ms())
    }

    async fn agent_offer(&self, items: &[AgentItem]) -> Result<()> {
        self.state()?.agents.offer(items, wall_clock_ms());
        Ok(())
    }

    async fn agent_claim(
        &self,
        agent: &str,
        types: &[String],
        token: &str,
    ) -> Result<Option<AgentClaim>> {
        Ok(self
            .state()?
            .agents
            .claim(agent, types, token, wall_clock_ms()))
    }

    async fn agent_settle(&self, token: &str, report: &AgentReport) -> Result<Option<AgentClaim>> {
        Ok(self.state()?.agents.settle(token, report, wall_clock_ms()))
    }

    async fn agent_release(&self, token: &str) -> Result<Option<AgentItem>> {
        Ok(self.state()?.agents.release(token, wall_clock_ms()))
    }

    async fn agent_expire(&self, limit: usize) -> Result<usize> {
        Ok(self.state()?.agents.expire(wall_clock_ms(), limit))
    }

    async fn agent_reports(&self, limit: usize, lease: Duration) -> Result<Vec<Reported>> {
        let lease = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        Ok(self.state()?.agents.reports(wall_clock_ms(), limit, lease))
    }

    async fn agent_reported(&self, ids: &[String]) -> Result<()> {
        self.state()?.agents.reported(ids);
        Ok(())
    }

    async fn task_create(&self, task: &NewTask) -> Result<()> {
        self.state()?
            .agents
            .create(task, wall_clock_ms())
            .map_err(|message| refused("creating a task", message))
    }

    async fn task_get(&self, id: &str) -> Result<Option<ManagedTask>> {
        Ok(self.state()?.agents.task(id))
    }

    async fn task_children(&self, id: &str) -> Result<Vec<ManagedTask>> {
        Ok(self.state()?.agents.children(id))
    }

    async fn task_cancel(&self, id: &str) -> Result<()> {
        self.state()?
            .agents
            .cancel(id, wall_clock_ms())
            .map_err(|message| refused("cancelling a task", message))
    }

    async fn task_summary(&self, workflow: &str) -> Result<WorkflowSummary> {
        Ok(self.state()?.agents.summary(workflow))
    }

    async fn workflow_metadata(
        &self,
        workflow: &str,
        set: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        Ok(self.state()?.agents.metadata(workflow, set))
    }

    async fn save_state(
        &self,
        session: &str,
        state: &[u8],
        replace: bool,
        fence: Fence<'_>,
    ) -> Result<()> {
        {
            let mut sessions = self.fenced(session, fence)?;
            let now = wall_clock_ms();
            if replace {
                sessions.listed.entry(session.to_string()).or_insert(now);
            } else {
                sessions.listed.insert(session.to_string(), now);
                if sessions.states.contains_key(session) {
                    return Ok(());
                }
            }
            sessions.states.insert(session.to_string(), state.to_vec());
            if !replace {
                return Ok(());
            }
        }
        self.publish(&crate::store::progress_channel(session), state.to_vec())
            .await
    }

    async fn load_state(&self, session: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.state()?.states.get(session).cloned())
    }

    async fn sessions(&self, limit: usize) -> Result<Vec<(String, u64)>> {
        let sessions = self.state()?;
        let mut listed: Vec<(String, u64)> = sessions
            .listed
            .iter()
            .map(|(id, at)| (id.clone(), *at))
            .collect();
        listed.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        listed.truncate(limit);
        Ok(listed)
    }

    async fn heartbeat(&self, member: &str, info: &[u8]) -> Result<()> {
        let now = wall_clock_ms();
        let mut sessions = self.state()?;
        sessions
            .members
            .retain(|_, (_, seen)| now.saturating_sub(*seen) < FORGET_MEMBERS_MS);
        sessions
            .members
            .insert(member.to_string(), (info.to_vec(), now));
        Ok(())
    }

    async fn members(&self) -> Result<Vec<(String, Vec<u8>, u64)>> {
        let mut members: Vec<(String, Vec<u8>, u64)> = self
            .state()?
            .members
            .iter()
            .map(|(id, (info, seen))| (id.clone(), info.clone(), *seen))
            .collect();
        members.sort();
        Ok(members)
    }

    async fn forget_member(&self, member: &str) -> Result<()> {
        self.state()?.members.remove(member);
        Ok(())
    }

    async fn cancel_requested(&self, session: &str, run: &str) -> Result<bool> {
        Ok(self
            .state()?
            .cancels
            .get(session)
            .is_some_and(|cancelled| cancelled == run))
    }

    async fn track_range(
        &self,
        session: &str,
        run: &str,
        item: &str,
        step: RangeStep<'_>,
    ) -> Result<Option<u64>> {
        let mut sessions = self.state()?;
        if !sessions.is_current(session, run) {
            return Ok(None);
        }
        let key = (session.to_string(), item.to_string());
        Ok(Some(match step {
            RangeStep::Started(worker) => {
                let starts = sessions.starts.entry(key).or_default();
                starts.insert(worker.to_string());
                starts.len() as u64
            }
            RangeStep::Finished => {
                sessions.starts.remove(&key);
                0
            }
        }))
    }

    async fn cleanup(&self, session: &str, fence: Fence<'_>) -> Result<()> {
        self.fenced(session, fence)?.forget(session);
        Ok(())
    }

    async fn keep_results(&self, session: &str, task: TaskRef, fence: Fence<'_>) -> Result<()> {
        self.fenced(session, fence)?
            .kept
            .entry(session.to_string())
            .or_default()
            .insert((task.group, task.task));
        Ok(())
    }

    async fn keep_successes(
        &self,
        session: &str,
        forget: &[TaskRef],
        fence: Fence<'_>,
    ) -> Result<u64> {
        let mut sessions = self.fenced(session, fence)?;
        sessions
            .outcomes
            .retain(|(name, task), _| name != session || !forget.contains(task));
        let mut kept = 0u64;
        for ((name, _), slots) in sessions.outcomes.iter_mut() {
            if name != session {
                continue;
            }
            kept += slots.keep_successes();
        }
        sessions.cancels.remove(session);
        sessions.pauses.remove(session);
        sessions.starts.retain(|(name, _), _| name != session);
        Ok(kept)
    }

    async fn cleanup_run(&self, session: &str, run: &str) -> Result<()> {
        let mut sessions = self.state()?;
        if sessions
            .runs
            .get(session)
            .is_some_and(|current| current == run)
        {
            sessions.forget(session);
        }
        Ok(())
    }

    async fn memo_get(&self, keys: &[String]) -> Result<Vec<Option<Value>>> {
        let now = wall_clock_ms();
        let memo = &self.state()?.memo;
        keys.iter()
            .map(|key| match memo.get(key) {
                Some((bytes, expires)) if expires.is_none_or(|at| at > now) => {
                    decode(&format!("memoized result {key}"), bytes).map(Some)
                }
                _ => Ok(None),
            })
            .collect()
    }

    async fn memo_put(&self, entries: &[(String, Value)], ttl: Option<Duration>) -> Result<()> {
        let expires = ttl.map(|ttl| {
            wall_clock_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
        });
        let encoded = entries
            .iter()
            .map(|(key, value)| Ok((key.clone(), encode("a memoized result", value)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut sessions = self.state()?;
        for (key, bytes) in encoded {
            sessions.memo.insert(key, (bytes, expires));
        }
        Ok(())
    }

    async fn memo_clear(&self, prefix: &str) -> Result<u64> {
        let now = wall_clock_ms();
        let mut sessions = self.state()?;
        let mut removed = 0u64;
        sessions.memo.retain(|key, (_, expires)| {
            let gone = key.starts_with(prefix);
            // Expired entries go too, uncounted: they were already not there.
            if gone && expires.is_none_or(|at| at > now) {
                removed += 1;
            }
            !gone
        });
        Ok(removed)
    }

    async fn publish(&self, channel: &str, payload: Vec<u8>) -> Result<()> {
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| Error::poisoned("memory pub/sub"))?;
        // Like Redis, a message goes to whoever is subscribed now; closed subscribers are dropped.
        if let Some(subscribers) = channels.exact.get_mut(channel) {
            subscribers.retain(|subscriber| subscriber.send(payload.clone()).is_ok());
        }
        channels.patterns.retain(|(pattern, subscriber)| {
            !glob_matches(pattern.as_bytes(), channel.as_bytes())
                || subscriber.send(payload.clone()).is_ok()
        });
        Ok(())
    }

    async fn subscribe(&self, channel: &str) -> Result<Box<dyn Subscription>> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.channels
            .lock()
            .map_err(|_| Error::poisoned("memory pub/sub"))?
            .exact
            .entry(channel.to_string())
            .or_default()
            .push(sender);
        Ok(Box::new(MemorySubscription {
            channel: channel.to_string(),
            receiver,
        }))
    }

    async fn subscribe_pattern(&self, pattern: &str) -> Result<Box<dyn Subscription>> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.channels
            .lock()
            .map_err(|_| Error::poisoned("memory pub/sub"))?
            .patterns
            .push((pattern.to_string(), sender));
        Ok(Box::new(MemorySubscription {
            channel: pattern.to_string(),
            receiver,
        }))
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
