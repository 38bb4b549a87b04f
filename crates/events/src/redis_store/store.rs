//! The [`Store`] operations on Redis: reads as plain commands, every write a Lua call (fenced
//! where a coordinator makes it) or one atomic pipeline.

use super::{
    agents, connection::ScriptCall, corrupt, key, outcomes_key, result_key, task_key, to_json,
    unavailable, RedisStore, RedisSubscription,
};
use crate::agents::{
    AgentClaim, AgentItem, AgentReport, ManagedTask, NewTask, Reported, WorkflowSummary,
};
use crate::error::{Error, Result};
use crate::messages::{Outcome, TaskRecord, TaskRef};
use crate::origin::Origin;
use crate::redis_scripts::{RESULT_TTL_SECONDS, WORKING_TTL_SECONDS};

/// The recent sessions, by when they were listed.
const SESSIONS: &str = "agency:sessions";
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
use crate::store::{
    notices_channel, Claim, Fence, RangeStep, Renewal, Store, Subscription, RESULTS_CHANNEL,
};
use async_trait::async_trait;
use redis::AsyncCommands as _;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

#[async_trait]
impl Store for RedisStore {
    async fn save_task(
        &self,
        session: &str,
        task: TaskRef,
        record: &TaskRecord,
        fence: Fence<'_>,
    ) -> Result<()> {
        let mut call = ScriptCall::new(&self.fenced.save_task);
        call.key(key(session, "fence"))
            .key(task_key(session, task))
            .key(key(session, "keys"))
            .arg(fence.token())
            .arg(to_json(record)?)
            .arg(WORKING_TTL_SECONDS);
        self.write_fenced_durably(session, &call).await
    }

    async fn load_task(&self, session: &str, task: TaskRef) -> Result<Option<TaskRecord>> {
        self.get_json(&task_key(session, task)).await
    }

    async fn record_outcomes(
        &self,
        session: &str,
        task: TaskRef,
        run: &str,
        outcomes: &[Outcome],
        notice: Option<&[u8]>,
    ) -> Result<Vec<bool>> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = ScriptCall::new(&self.record);
        invocation
            .key(outcomes_key(session, task))
            .key(key(session, "keys"))
            .key(key(session, "run"));
        match notice {
            Some(notice) => invocation.arg(notices_channel(session)).arg(notice),
            None => invocation.arg("").arg(""),
        };
        invocation.arg(run).arg(WORKING_TTL_SECONDS);
        for outcome in outcomes {
            let mut stored = format!(
                "{}|{}|",
                outcome.attempt,
                if outcome.succeeded() { "S" } else { "F" }
            )
            .into_bytes();
            stored.extend_from_slice(&to_json(&outcome.status)?);
            invocation.arg(outcome.instance).arg(stored);
        }
        // Before the worker commits its offset, a replica holds them too (on a cluster with
        // replicas): a record a failover would lose is delivered again instead.
        let (reply, _) = self.run_durably(&invocation).await.map_err(unavailable)?;
        let what = || format!("the reply recording {}", outcomes_key(session, task));
        match reply {
            redis::Value::Int(all) if all as usize == outcomes.len() => {
                Ok(vec![true; outcomes.len()])
            }
            // Outcomes of a run that is not the session's current one: nothing was written.
            redis::Value::BulkString(answer) if answer == b"stale" => {
                Ok(vec![false; outcomes.len()])
            }
            redis::Value::Array(each) if each.len() == outcomes.len() => each
                .into_iter()
                .map(|flag| match flag {
                    redis::Value::Int(flag) => Ok(flag == 1),
                    other => Err(corrupt(what(), format!("{other:?} is not 0 or 1"))),
                })
                .collect(),
            other => Err(corrupt(
                what(),
                format!("{other:?} for {} outcomes", outcomes.len()),
            )),
        }
    }

    async fn outcomes(
        &self,
        session: &str,
        task: TaskRef,
        range: Range<u64>,
    ) -> Result<Vec<Option<Outcome>>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let key = outcomes_key(session, task);
        let fields: Vec<u64> = range.clone().collect();
        let mut connection = self.connection.clone();
        let stored: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(&key)
            .arg(&fields)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        stored
            .into_iter()
            .zip(range)
            .map(|(bytes, instance)| {
                let Some(bytes) = bytes else { return Ok(None) };
                let mut parts = bytes.splitn(3, |&b| b == b'|');
                let attempt = parts
                    .next()
                    .and_then(|a| std::str::from_utf8(a).ok()?.parse().ok());
                let (Some(attempt), Some(_), Some(json)) = (attempt, parts.next(), parts.next())
                else {
                    return Err(corrupt(
                        format!("{key} {instance}"),
                        "not attempt|status|json",
                    ));
                };
                let status = serde_json::from_slice(json)
                    .map_err(|e| corrupt(format!("{key} {instance}"), e))?;
                Ok(Some(Outcome {
                    instance,
                    attempt,
                    status,
                }))
            })
            .collect()
    }

    async fn outcome_count(&self, session: &str, task: TaskRef) -> Result<u64> {
        let mut connection = self.connection.clone();
        redis::cmd("HLEN")
            .arg(outcomes_key(session, task))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn save_context(
        &self,
        session: &str,
        context: &Map<String, Value>,
        fence: Fence<'_>,
    ) -> Result<()> {
        self.replace_hash(session, "context", context, fence).await
    }

    async fn set_context(
        &self,
        session: &str,
        context_key: &str,
        value: &Value,
        fence: Fence<'_>,
    ) -> Result<()> {
        let mut call = ScriptCall::new(&self.fenced.set_field);
        call.key(key(session, "fence"))
            .key(key(session, "context"))
            .arg(fence.token())
            .arg(WORKING_TTL_SECONDS)
            .arg(context_key)
            .arg(to_json(value)?);
        self.write_fenced_durably(session, &call).await
    }

    async fn load_context(&self, session: &str) -> Result<Option<Map<String, Value>>> {
        self.hash_json(&key(session, "context")).await
    }

    async fn save_mappings(
        &self,
        session: &str,
        mappings: &Map<String, Value>,
        fence: Fence<'_>,
    ) -> Result<()> {
        self.replace_hash(session, "mappings", mappings, fence)
            .await
    }

    async fn load_mappings(&self, session: &str) -> Result<Option<Map<String, Value>>> {
        self.hash_json(&key(session, "mappings")).await
    }

    async fn publish_result(
        &self,
        session: &str,
        result: &[u8],
        announcement: &[u8],
        fence: Fence<'_>,
    ) -> Result<()> {
        let mut call = ScriptCall::new(&self.fenced.result);
        call.key(key(session, "fence"))
            .key(result_key(session))
            .key(key(session, "origin"))
            .arg(fence.token())
            .arg(result)
            .arg(RESULT_TTL_SECONDS)
            .arg(RESULTS_CHANNEL)
            .arg(announcement);
        self.write_fenced_durably(session, &call).await
    }

    async fn load_result(&self, session: &str) -> Result<Option<Value>> {
        self.get_json(&result_key(session)).await
    }

    async fn save_blob(&self, session: &str, name: &str, bytes: Vec<u8>) -> Result<()> {
        let mut connection = self.connection.clone();
        let blob = key(session, &format!("blob:{name}"));
        redis::pipe()
            .atomic()
            .set_ex(&blob, bytes, WORKING_TTL_SECONDS)
            .sadd(key(session, "keys"), &blob)
            .expire(key(session, "keys"), WORKING_TTL_SECONDS as i64)
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn load_blob(&self, session: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let mut connection = self.connection.clone();
        connection
            .get(key(session, &format!("blob:{name}")))
            .await
            .map_err(unavailable)
    }

    async fn delete_result(&self, session: &str, fence: Fence<'_>) -> Result<()> {
        let mut invocation = self.fenced.delete.key(key(session, "fence"));
        invocation.key(result_key(session)).arg(fence.token());
        self.write_fenced(session, &mut invocation).await
    }

    async fn claim(
        &self,
        session: &str,
        owner: &str,
        origin: &Origin,
        token: &str,
        lease: Duration,
    ) -> Result<Claim> {
        let mut connection = self.connection.clone();
        let answer: String = self
            .claim
            .key(key(session, "lease"))
            .key(key(session, "origin"))
            .key(result_key(session))
            .key(key(session, "fence"))
            .arg(owner)
            .arg(lease.as_millis().max(1) as u64)
            .arg(origin.to_string())
            .arg(RESULT_TTL_SECONDS)
            .arg(token)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(match answer.as_str() {
            "fresh" => Claim::Fresh,
            "stale" => Claim::Stale,
            "resume" => Claim::Resume,
            "finished" => Claim::Finished,
            "held" => Claim::Held,
            "superseded" => Claim::Superseded,
            other => return Err(corrupt("the claim script's answer", other)),
        })
    }

    async fn renew(
        &self,
        session: &str,
        owner: &str,
        token: &str,
        lease: Duration,
    ) -> Result<Renewal> {
        let mut connection = self.connection.clone();
        let found: i64 = self
            .renew
            .key(key(session, "lease"))
            .key(key(session, "origin"))
            .key(key(session, "fence"))
            .arg(owner)
            .arg(lease.as_millis().max(1) as u64)
            .arg(RESULT_TTL_SECONDS)
            .arg(token)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(match found {
            1 => Renewal::Held,
            0 => Renewal::Taken,
            _ => Renewal::StateLost,
        })
    }

    async fn release(&self, session: &str, owner: &str) -> Result<()> {
        let mut connection = self.connection.clone();
        self.release
            .key(key(session, "lease"))
            .arg(owner)
            .invoke_async::<i64>(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn cleanup(&self, session: &str, fence: Fence<'_>) -> Result<()> {
        self.delete_working_state(&self.fenced.cleanup, session, fence.token())
            .await
    }

    async fn keep_results(&self, session: &str, task: TaskRef, fence: Fence<'_>) -> Result<()> {
        let mut call = ScriptCall::new(&self.fenced.keep_results);
        call.key(key(session, "fence"))
            .key(key(session, "kept"))
            .arg(fence.token())
            .arg(outcomes_key(session, task))
            .arg(WORKING_TTL_SECONDS);
        self.write_fenced_durably(session, &call).await
    }

    async fn keep_successes(
        &self,
        session: &str,
        forget: &[TaskRef],
        fence: Fence<'_>,
    ) -> Result<u64> {
        let mut connection = self.connection.clone();
        let mut invocation = self.fenced.keep_successes.key(key(session, "fence"));
        invocation
            .key(key(session, "keys"))
            .key(key(session, "cancel"))
            .key(key(session, "starts"))
            .key(key(session, "pause"));
        for &task in forget {
            invocation.key(outcomes_key(session, task));
        }
        let answer: redis::Value = invocation
            .arg(fence.token())
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        match answer {
            redis::Value::Int(kept) => Ok(u64::try_from(kept).unwrap_or(0)),
            _ => Err(Error::Fenced {
                session: session.to_string(),
            }),
        }
    }

    async fn cleanup_run(&self, session: &str, run: &str) -> Result<()> {
        self.delete_working_state(&self.fenced.cleanup_run, session, run)
            .await
    }

    async fn track_range(
        &self,
        session: &str,
        run: &str,
        item: &str,
        step: RangeStep<'_>,
    ) -> Result<Option<u64>> {
        let mut connection = self.connection.clone();
        let count: i64 = self
            .track_range
            .key(key(session, "run"))
            .key(key(session, "starts"))
            .key(key(session, "keys"))
            .arg(run)
            .arg(item)
            .arg(match step {
                RangeStep::Started(worker) => worker,
                RangeStep::Finished => "",
            })
            .arg(WORKING_TTL_SECONDS)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(u64::try_from(count).ok())
    }

    async fn start_run(&self, session: &str, run: &str, fence: Fence<'_>) -> Result<()> {
        let mut invocation = self.fenced.start_run.key(key(session, "fence"));
        invocation
            .key(key(session, "run"))
            .arg(fence.token())
            .arg(run)
            .arg(WORKING_TTL_SECONDS);
        self.write_fenced(session, &mut invocation).await
    }

    async fn end_run(&self, session: &str, run: &str, fence: Fence<'_>) -> Result<()> {
        let mut invocation = self.fenced.end_run.key(key(session, "fence"));
        invocation
            .key(key(session, "run"))
            .key(key(session, "cancel"))
            .key(key(session, "pause"))
            .arg(fence.token())
            .arg(run);
        self.write_fenced(session, &mut invocation).await
    }

    async fn current_run(&self, session: &str) -> Result<Option<String>> {
        let mut connection = self.connection.clone();
        connection
            .get(key(session, "run"))
            .await
            .map_err(unavailable)
    }

    async fn request_cancel(&self, session: &str) -> Result<Option<String>> {
        let mut connection = self.connection.clone();
        self.request_cancel
            .key(key(session, "run"))
            .key(key(session, "cancel"))
            .key(key(session, "keys"))
            .arg(WORKING_TTL_SECONDS)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn save_document(
        &self,
        session: &str,
        run: &str,
        document: &[u8],
        fence: Fence<'_>,
    ) -> Result<()> {
        let mut invocation = self.fenced.save_document.key(key(session, "fence"));
        invocation
            .key(key(session, "document"))
            .key(key(session, "keys"))
            .arg(fence.token())
            .arg(WORKING_TTL_SECONDS)
            .arg(run)
            .arg(document);
        self.write_fenced(session, &mut invocation).await
    }

    async fn load_document(&self, session: &str) -> Result<Option<(String, Vec<u8>)>> {
        let mut connection = self.connection.clone();
        let (run, document): (Option<String>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(key(session, "document"))
            .arg("run")
            .arg("document")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(run.zip(document))
    }

    async fn note_action(&self, session: &str, run: &str, note: &str) -> Result<()> {
        let mut connection = self.connection.clone();
        let actions = format!("agency:actions:{{{session}}}");
        redis::pipe()
            .atomic()
            .hset(&actions, run, note)
            .ignore()
            .expire(&actions, RESULT_TTL_SECONDS as i64)
            .ignore()
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn action_note(&self, session: &str, run: &str) -> Result<Option<String>> {
        let mut connection = self.connection.clone();
        connection
            .hget(format!("agency:actions:{{{session}}}"), run)
            .await
            .map_err(unavailable)
    }

    async fn now_ms(&self) -> Result<u64> {
        let mut connection = self.connection.clone();
        let (seconds, micros): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(seconds * 1000 + micros / 1000)
    }

    async fn save_state(
        &self,
        session: &str,
        state: &[u8],
        replace: bool,
        fence: Fence<'_>,
    ) -> Result<()> {
        let mut invocation = self.fenced.save_state.key(key(session, "fence"));
        invocation
            .key(key(session, "state"))
            .key(key(session, "keys"))
            .arg(fence.token())
            .arg(WORKING_TTL_SECONDS)
            .arg(state)
            .arg(if replace { "1" } else { "0" })
            .arg(crate::store::progress_channel(session));
        let mut connection = self.connection.clone();
        let answer: String = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let now: u64 = match answer.as_str() {
            "fenced" => {
                return Err(Error::Fenced {
                    session: session.to_string(),
                })
            }
            time => time
                .parse()
                .map_err(|_| corrupt("the live state write's answer", time))?,
        };
        // The index is a key of its own (another Cluster slot): listed apart, not atomically.
        let mut listing = redis::pipe();
        if replace {
            listing
                .cmd("ZADD")
                .arg(SESSIONS)
                .arg("NX")
                .arg(now)
                .arg(session)
                .ignore();
        } else {
            let kept_since = now.saturating_sub(RESULT_TTL_SECONDS * 1000);
            listing
                .cmd("ZADD")
                .arg(SESSIONS)
                .arg(now)
                .arg(session)
                .ignore()
                .cmd("ZREMRANGEBYSCORE")
                .arg(SESSIONS)
                .arg("-inf")
                .arg(kept_since)
                .ignore();
        }
        listing
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn load_state(&self, session: &str) -> Result<Option<Vec<u8>>> {
        let mut connection = self.connection.clone();
        connection
            .get(key(session, "state"))
            .await
            .map_err(unavailable)
    }

    async fn sessions(&self, limit: usize) -> Result<Vec<(String, u64)>> {
        let mut connection = self.connection.clone();
        let listed: Vec<(String, u64)> = redis::cmd("ZRANGE")
            .arg(SESSIONS)
            .arg("+inf")
            .arg("-inf")
            .arg("BYSCORE")
            .arg("REV")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .arg("WITHSCORES")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(listed)
    }

    async fn agent_offer(&self, items: &[AgentItem]) -> Result<()> {
        self.agents.offer(self.connection.clone(), items).await
    }

    async fn agent_claim(
        &self,
        agent: &str,
        types: &[String],
        token: &str,
    ) -> Result<Option<AgentClaim>> {
        self.agents
            .claim(self.connection.clone(), agent, types, token)
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

    async fn task_create(&self, task: &NewTask) -> Result<()> {
        self.agents.create(self.connection.clone(), task).await
    }

    async fn task_get(&self, id: &str) -> Result<Option<ManagedTask>> {
        agents::task(self.connection.clone(), id).await
    }

    async fn task_children(&self, id: &str) -> Result<Vec<ManagedTask>> {
        agents::children(self.connection.clone(), id).await
    }

    async fn task_cancel(&self, id: &str) -> Result<()> {
        self.agents.cancel(self.connection.clone(), id).await
    }

    async fn task_summary(&self, workflow: &str) -> Result<WorkflowSummary> {
        agents::summary(self.connection.clone(), workflow).await
    }

    async fn workflow_metadata(
        &self,
        workflow: &str,
        set: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        agents::metadata(self.connection.clone(), workflow, set).await
    }

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
            .unlink_matching(&pattern)
            .await
            .map_err(unavailable)
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

    async fn request_pause(&self, session: &str, paused: bool) -> Result<Option<String>> {
        let mut connection = self.connection.clone();
        if paused {
            return self
                .request_cancel
                .key(key(session, "run"))
                .key(key(session, "pause"))
                .key(key(session, "keys"))
                .arg(WORKING_TTL_SECONDS)
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable);
        }
        let (run,): (Option<String>,) = redis::pipe()
            .atomic()
            .get(key(session, "run"))
            .del(key(session, "pause"))
            .ignore()
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(run)
    }

    async fn pause_requested(&self, session: &str, run: &str) -> Result<bool> {
        let mut connection = self.connection.clone();
        let paused: Option<String> = connection
            .get(key(session, "pause"))
            .await
            .map_err(unavailable)?;
        Ok(paused.is_some_and(|paused| paused == run))
    }

    async fn cancel_requested(&self, session: &str, run: &str) -> Result<bool> {
        let mut connection = self.connection.clone();
        let cancelled: Option<String> = connection
            .get(key(session, "cancel"))
            .await
            .map_err(unavailable)?;
        Ok(cancelled.is_some_and(|cancelled| cancelled == run))
    }

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
