//! The capabilities of the memory store that belong to no session (the clock and heartbeats,
//! memoized results, pub/sub) and the agents' queue with the task manager.

use super::{
    decode, glob_matches, refused, wall_clock_ms, Change, MemoryStore, MemorySubscription,
    FORGET_MEMBERS_MS,
};
use crate::agent_queue::{
    AgentClaim, AgentItem, AgentReport, ManagedTask, NewTask, Reported, TaskFilter, TaskPage,
    Wanted, WorkflowSummary,
};
use crate::error::{encode, Error, Result};
use crate::store::{AgentQueue, Membership, Memo, Notices, Subscription, TaskManager};
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::time::Duration;
use tokio::sync::mpsc;

#[async_trait]
impl Membership for MemoryStore {
    async fn now_ms(&self) -> Result<u64> {
        Ok(wall_clock_ms())
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
}

#[async_trait]
impl Memo for MemoryStore {
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
        {
            let mut sessions = self.state()?;
            for (key, bytes) in encoded {
                sessions.memo.insert(key, (bytes, expires));
            }
        }
        self.note("", Change::Memo(entries))
    }

    async fn memo_clear(&self, prefix: &str) -> Result<u64> {
        let now = wall_clock_ms();
        let mut removed = 0u64;
        self.state()?.memo.retain(|key, (_, expires)| {
            let gone = key.starts_with(prefix);
            // Expired entries go too, uncounted: they were already not there.
            if gone && expires.is_none_or(|at| at > now) {
                removed += 1;
            }
            !gone
        });
        self.note_durably("", Change::MemoCleared(prefix)).await?;
        Ok(removed)
    }
}

#[async_trait]
impl AgentQueue for MemoryStore {
    async fn agent_offer(&self, items: &[AgentItem]) -> Result<()> {
        self.agents_changing(|agents| agents.offer(items, wall_clock_ms()))
    }

    async fn agent_claim(
        &self,
        agent: &str,
        wanted: Wanted<'_>,
        token: &str,
    ) -> Result<Option<AgentClaim>> {
        self.agents_changing(|agents| agents.claim(agent, wanted, token, wall_clock_ms()))
    }

    async fn agent_settle(&self, token: &str, report: &AgentReport) -> Result<Option<AgentClaim>> {
        self.agents_changing(|agents| agents.settle(token, report, wall_clock_ms()))
    }

    async fn agent_release(&self, token: &str) -> Result<Option<AgentItem>> {
        self.agents_changing(|agents| agents.release(token, wall_clock_ms()))
    }

    // Workers look for these every 200 ms: only a look that found something is a change.
    async fn agent_expire(&self, limit: usize) -> Result<usize> {
        let ended = self.state()?.agents.expire(wall_clock_ms(), limit);
        if ended > 0 {
            self.agents_changed()?;
        }
        Ok(ended)
    }

    async fn agent_reports(&self, limit: usize, lease: Duration) -> Result<Vec<Reported>> {
        let lease = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        let due = self.state()?.agents.reports(wall_clock_ms(), limit, lease);
        if !due.is_empty() {
            self.agents_changed()?;
        }
        Ok(due)
    }

    async fn agent_reported(&self, ids: &[String]) -> Result<()> {
        self.agents_changing(|agents| agents.reported(ids))
    }
}

#[async_trait]
impl TaskManager for MemoryStore {
    async fn task_create(&self, task: &NewTask) -> Result<()> {
        self.agents_changing(|agents| agents.create(task, wall_clock_ms()))?
            .map_err(|message| refused("creating a task", message))
    }

    async fn task_get(&self, id: &str) -> Result<Option<ManagedTask>> {
        Ok(self.state()?.agents.task(id))
    }

    async fn task_children(&self, id: &str) -> Result<Vec<ManagedTask>> {
        Ok(self.state()?.agents.children(id))
    }

    async fn task_cancel(&self, id: &str) -> Result<()> {
        self.agents_changing(|agents| agents.cancel(id, wall_clock_ms()))?
            .map_err(|message| refused("cancelling a task", message))
    }

    async fn task_list(
        &self,
        workflow: &str,
        filter: &TaskFilter,
        from: u64,
        limit: usize,
    ) -> Result<TaskPage> {
        Ok(self.state()?.agents.list(workflow, filter, from, limit))
    }

    async fn task_summary(&self, workflow: &str) -> Result<WorkflowSummary> {
        Ok(self.state()?.agents.summary(workflow))
    }

    async fn workflow_metadata(
        &self,
        workflow: &str,
        set: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        self.agents_changing(|agents| agents.metadata(workflow, set, wall_clock_ms()))
    }
}

#[async_trait]
impl Notices for MemoryStore {
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
