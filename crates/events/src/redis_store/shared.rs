//! What belongs to no session, on Redis: the clock and heartbeats, memoized results, pub/sub,
//! and the agents' queue with the task manager (`agent_queue.rs`).

use super::{agent_queue, corrupt, to_json, unavailable, RedisStore, RedisSubscription};
use crate::agent_queue::{
    AgentClaim, AgentItem, AgentReport, ManagedTask, NewTask, Reported, TaskFilter, TaskPage,
    Wanted, WorkflowSummary,
};
use crate::error::Result;
use crate::store::{AgentQueue, Membership, Memo, Notices, Subscription, TaskManager};
use async_trait::async_trait;
use redis::AsyncCommands as _;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::time::Duration;

/// What each member said in its last heartbeat; one hash tag, so the two hashes share a slot.
const MEMBERS: &str = "agency:{members}";
/// When each member was last heard from.
const MEMBERS_SEEN: &str = "agency:{members}:seen";
/// Memoized results live under this prefix, one string key each, apart from every session.
const MEMO_PREFIX: &str = "agency:memo:";

/// `text` with Redis glob's special characters escaped, to match it literally in `SCAN MATCH`.
fn glob_literal(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Members silent this long are forgotten.
const FORGET_MEMBERS_MS: u64 = 24 * 3600 * 1000;
#[async_trait]
impl Membership for RedisStore {
    async fn now_ms(&self) -> Result<u64> {
        let mut connection = self.connection.clone();
        let (seconds, micros): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(seconds * 1000 + micros / 1000)
    }

    async fn heartbeat(&self, member: &str, info: &[u8]) -> Result<()> {
        let mut connection = self.connection.clone();
        self.heartbeat
            .key(MEMBERS)
            .key(MEMBERS_SEEN)
            .arg(member)
            .arg(info)
            .arg(FORGET_MEMBERS_MS)
            .invoke_async::<u64>(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn members(&self) -> Result<Vec<(String, Vec<u8>, u64)>> {
        let mut connection = self.connection.clone();
        let (infos, seen): (HashMap<String, Vec<u8>>, HashMap<String, u64>) = redis::pipe()
            .hgetall(MEMBERS)
            .hgetall(MEMBERS_SEEN)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let mut members: Vec<(String, Vec<u8>, u64)> = infos
            .into_iter()
            .filter_map(|(id, info)| seen.get(&id).map(|at| (id, info, *at)))
            .collect();
        members.sort();
        Ok(members)
    }

    async fn forget_member(&self, member: &str) -> Result<()> {
        let mut connection = self.connection.clone();
        redis::pipe()
            .hdel(MEMBERS, member)
            .ignore()
            .hdel(MEMBERS_SEEN, member)
            .ignore()
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl Memo for RedisStore {
    async fn memo_get(&self, keys: &[String]) -> Result<Vec<Option<Value>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // One GET per key, pipelined (on a cluster, each to its slot's master).
        let gets = keys
            .iter()
            .map(|key| redis::Cmd::get(format!("{MEMO_PREFIX}{key}")))
            .collect();
        let found: Vec<Option<Vec<u8>>> = self.connection.each(gets).await.map_err(unavailable)?;
        keys.iter()
            .zip(found)
            .map(|(key, bytes)| match bytes {
                None => Ok(None),
                Some(bytes) => serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| corrupt(format!("memoized result {key}"), e)),
            })
            .collect()
    }

    async fn memo_put(&self, entries: &[(String, Value)], ttl: Option<Duration>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut sets = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let key = format!("{MEMO_PREFIX}{key}");
            let value = to_json(value)?;
            sets.push(match ttl {
                Some(ttl) => redis::Cmd::pset_ex(
                    key,
                    value,
                    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
                ),
                None => redis::Cmd::set(key, value),
            });
        }
        let _: Vec<()> = self.connection.each(sets).await.map_err(unavailable)?;
        Ok(())
    }

    async fn memo_clear(&self, prefix: &str) -> Result<u64> {
        let pattern = format!("{MEMO_PREFIX}{}*", glob_literal(prefix));
        self.connection
            .unlink_matching(&pattern, &self.access)
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl AgentQueue for RedisStore {
    async fn agent_offer(&self, items: &[AgentItem]) -> Result<()> {
        self.agents.offer(self.connection.clone(), items).await
    }

    async fn agent_claim(
        &self,
        agent: &str,
        wanted: Wanted<'_>,
        token: &str,
    ) -> Result<Option<AgentClaim>> {
        self.agents
            .claim(self.connection.clone(), agent, wanted, token)
            .await
    }

    async fn agent_settle(&self, token: &str, report: &AgentReport) -> Result<Option<AgentClaim>> {
        self.agents
            .settle(self.connection.clone(), token, report)
            .await
    }

    async fn agent_release(&self, token: &str) -> Result<Option<AgentItem>> {
        self.agents.release(self.connection.clone(), token).await
    }

    async fn agent_expire(&self, limit: usize) -> Result<usize> {
        self.agents.expire(self.connection.clone(), limit).await
    }

    async fn agent_reports(&self, limit: usize, lease: Duration) -> Result<Vec<Reported>> {
        self.agents
            .reports(self.connection.clone(), limit, lease)
            .await
    }

    async fn agent_reported(&self, ids: &[String]) -> Result<()> {
        self.agents.reported(self.connection.clone(), ids).await
    }
}

#[async_trait]
impl TaskManager for RedisStore {
    async fn task_create(&self, task: &NewTask) -> Result<()> {
        self.agents.create(self.connection.clone(), task).await
    }

    async fn task_get(&self, id: &str) -> Result<Option<ManagedTask>> {
        agent_queue::task(self.connection.clone(), id).await
    }

    async fn task_children(&self, id: &str) -> Result<Vec<ManagedTask>> {
        agent_queue::children(self.connection.clone(), id).await
    }

    async fn task_cancel(&self, id: &str) -> Result<()> {
        self.agents.cancel(self.connection.clone(), id).await
    }

    async fn task_list(
        &self,
        workflow: &str,
        filter: &TaskFilter,
        from: u64,
        limit: usize,
    ) -> Result<TaskPage> {
        self.agents
            .list(self.connection.clone(), workflow, filter, from, limit)
            .await
    }

    async fn task_summary(&self, workflow: &str) -> Result<WorkflowSummary> {
        agent_queue::summary(self.connection.clone(), workflow).await
    }

    async fn workflow_metadata(
        &self,
        workflow: &str,
        set: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        self.agents
            .metadata(self.connection.clone(), workflow, set)
            .await
    }
}

#[async_trait]
impl Notices for RedisStore {
    async fn publish(&self, channel: &str, payload: Vec<u8>) -> Result<()> {
        let mut connection = self.connection.clone();
        connection
            .publish::<_, _, ()>(channel, payload)
            .await
            .map_err(unavailable)
    }

    async fn subscribe(&self, channel: &str) -> Result<Box<dyn Subscription>> {
        let mut pubsub = self.pubsub().await?;
        pubsub.subscribe(channel).await.map_err(unavailable)?;
        Ok(Box::new(RedisSubscription {
            channel: channel.to_string(),
            messages: pubsub.into_on_message(),
        }))
    }

    async fn subscribe_pattern(&self, pattern: &str) -> Result<Box<dyn Subscription>> {
        let mut pubsub = self.pubsub().await?;
        pubsub.psubscribe(pattern).await.map_err(unavailable)?;
        Ok(Box::new(RedisSubscription {
            channel: pattern.to_string(),
            messages: pubsub.into_on_message(),
        }))
    }
}
