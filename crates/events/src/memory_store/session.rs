//! The capabilities of a session's state on the memory store: runs and leases, outcomes,
//! context, results and documents. Each write notes what it changed in the journal, if any.

use super::{decode, wall_clock_ms, Change, MemoryStore};
use crate::error::{encode, Result};
use crate::messages::{Outcome, TaskRecord, TaskRef};
use crate::origin::Origin;
use crate::store::{
    notices_channel, Claim, Contexts, Documents, Fence, Notices, Outcomes, RangeStep, Renewal,
    Results, Runs, RESULTS_CHANNEL,
};
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::ops::Range;
use std::time::Duration;
use tokio::time::Instant;

#[async_trait]
impl Runs for MemoryStore {
    async fn claim(
        &self,
        session: &str,
        owner: &str,
        origin: &Origin,
        token: &str,
        lease: Duration,
    ) -> Result<Claim> {
        let claim = self.state()?.claim(session, owner, origin, token, lease);
        self.note(session, Change::Meta)?;
        Ok(claim)
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

    async fn start_run(&self, session: &str, run: &str, fence: Fence<'_>) -> Result<()> {
        self.fenced(session, fence)?
            .runs
            .insert(session.to_string(), run.to_string());
        self.note(session, Change::Meta)
    }

    async fn end_run(&self, session: &str, run: &str, fence: Fence<'_>) -> Result<()> {
        {
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
        }
        self.note_durably(session, Change::Meta).await
    }

    async fn current_run(&self, session: &str) -> Result<Option<String>> {
        Ok(self.state()?.runs.get(session).cloned())
    }

    async fn request_cancel(&self, session: &str) -> Result<Option<String>> {
        let run = {
            let mut sessions = self.state()?;
            let Some(run) = sessions.runs.get(session).cloned() else {
                return Ok(None);
            };
            sessions.cancels.insert(session.to_string(), run.clone());
            run
        };
        self.note(session, Change::Meta)?;
        Ok(Some(run))
    }

    async fn cancel_requested(&self, session: &str, run: &str) -> Result<bool> {
        Ok(self
            .state()?
            .cancels
            .get(session)
            .is_some_and(|cancelled| cancelled == run))
    }

    async fn request_pause(&self, session: &str, paused: bool) -> Result<Option<String>> {
        let run = {
            let mut sessions = self.state()?;
            let Some(run) = sessions.runs.get(session).cloned() else {
                return Ok(None);
            };
            match paused {
                true => sessions.pauses.insert(session.to_string(), run.clone()),
                false => sessions.pauses.remove(session),
            };
            run
        };
        self.note(session, Change::Meta)?;
        Ok(Some(run))
    }

    async fn pause_requested(&self, session: &str, run: &str) -> Result<bool> {
        Ok(self
            .state()?
            .pauses
            .get(session)
            .is_some_and(|paused| paused == run))
    }

    async fn cleanup(&self, session: &str, fence: Fence<'_>) -> Result<()> {
        self.fenced(session, fence)?.forget(session);
        self.note_durably(session, Change::All).await
    }

    async fn cleanup_run(&self, session: &str, run: &str) -> Result<()> {
        {
            let mut sessions = self.state()?;
            if sessions
                .runs
                .get(session)
                .is_some_and(|current| current == run)
            {
                sessions.forget(session);
            }
        }
        self.note_durably(session, Change::All).await
    }
}

#[async_trait]
impl Outcomes for MemoryStore {
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
        self.note(session, Change::Task(task))
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
        if accepted.iter().any(|&a| a) {
            let (outcomes, accepted) = (outcomes, &accepted[..]);
            self.note(
                session,
                Change::Outcomes {
                    task,
                    outcomes,
                    accepted,
                },
            )?;
        }
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

    async fn keep_results(&self, session: &str, task: TaskRef, fence: Fence<'_>) -> Result<()> {
        self.fenced(session, fence)?
            .kept
            .entry(session.to_string())
            .or_default()
            .insert((task.group, task.task));
        self.note(session, Change::Meta)
    }

    async fn keep_successes(
        &self,
        session: &str,
        forget: &[TaskRef],
        fence: Fence<'_>,
    ) -> Result<u64> {
        let kept = self.fenced(session, fence)?.keep_successes(session, forget);
        self.note_durably(session, Change::All).await?;
        Ok(kept)
    }
}

#[async_trait]
impl Contexts for MemoryStore {
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
        self.note(session, Change::Context)
    }

    async fn set_context(
        &self,
        session: &str,
        key: &str,
        value: &Value,
        fence: Fence<'_>,
    ) -> Result<()> {
        let encoded = encode(&format!("context key {key}"), value)?;
        {
            let mut sessions = self.fenced(session, fence)?;
            let entries = sessions.contexts.entry(session.to_string()).or_default();
            match entries.iter_mut().find(|(k, _)| k == key) {
                Some((_, slot)) => *slot = encoded,
                None => entries.push((key.to_string(), encoded)),
            }
        }
        self.note(session, Change::ContextKey(key))
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
        self.note(session, Change::Meta)
    }

    async fn load_mappings(&self, session: &str) -> Result<Option<Map<String, Value>>> {
        Ok(self.state()?.mappings.get(session).cloned())
    }
}

#[async_trait]
impl Results for MemoryStore {
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
        // A result is durable before it is announced (and when this returns).
        self.note_durably(session, Change::Meta).await?;
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
        self.note(session, Change::Meta)
    }

    async fn save_blob(&self, session: &str, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.blobs_saved
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.state()?
            .blobs
            .insert((session.to_string(), name.to_string()), bytes);
        self.note(session, Change::Blob(name))
    }

    async fn load_blob(&self, session: &str, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .state()?
            .blobs
            .get(&(session.to_string(), name.to_string()))
            .cloned())
    }
}

#[async_trait]
impl Documents for MemoryStore {
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
        self.note(session, Change::Meta)
    }

    async fn load_document(&self, session: &str) -> Result<Option<(String, Vec<u8>)>> {
        Ok(self.state()?.documents.get(session).cloned())
    }

    async fn note_action(&self, session: &str, run: &str, note: &str) -> Result<()> {
        self.state()?
            .notes
            .insert((session.to_string(), run.to_string()), note.to_string());
        self.note(session, Change::Meta)
    }

    async fn action_note(&self, session: &str, run: &str) -> Result<Option<String>> {
        Ok(self
            .state()?
            .notes
            .get(&(session.to_string(), run.to_string()))
            .cloned())
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
                    drop(sessions);
                    return self.note(session, Change::Meta);
                }
            }
            sessions.states.insert(session.to_string(), state.to_vec());
        }
        self.note(session, Change::Meta)?;
        if !replace {
            return Ok(());
        }
        self.publish(&crate::store::progress_channel(session), state.to_vec())
            .await
    }

    async fn load_state(&self, session: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.state()?.states.get(session).cloned())
    }

    async fn withdraw(&self, session: &str, mark: &str) -> Result<()> {
        self.state()?
            .withdrawals
            .insert(session.to_string(), mark.to_string());
        Ok(())
    }

    async fn withdrawal(&self, session: &str) -> Result<Option<String>> {
        Ok(self.state()?.withdrawals.get(session).cloned())
    }

    async fn end_withdrawal(&self, session: &str, mark: &str) -> Result<()> {
        let mut sessions = self.state()?;
        if sessions.withdrawals.get(session).is_some_and(|m| m == mark) {
            sessions.withdrawals.remove(session);
        }
        Ok(())
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
}
