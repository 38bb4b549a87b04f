//! A session's state on Redis: task records and outcomes (reads as plain commands, every write
//! a Lua call, fenced where a coordinator makes it), context, results and documents.

use super::{
    connection::ScriptCall, corrupt, key, outcomes_key, result_key, task_key, to_json, unavailable,
    RedisStore,
};
use crate::error::{Error, Result};
use crate::messages::{Outcome, TaskRecord, TaskRef};
use crate::redis_scripts::{RESULT_TTL_SECONDS, WORKING_TTL_SECONDS};
use crate::store::{
    notices_channel, Contexts, Documents, Fence, Outcomes, RangeStep, Results, RESULTS_CHANNEL,
};
use async_trait::async_trait;
use redis::AsyncCommands as _;
use serde_json::{Map, Value};
use std::ops::Range;

/// The recent sessions, by when they were listed.
const SESSIONS: &str = "agency:sessions";

#[async_trait]
impl Outcomes for RedisStore {
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
}

#[async_trait]
impl Contexts for RedisStore {
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
}

#[async_trait]
impl Results for RedisStore {
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

    async fn delete_result(&self, session: &str, fence: Fence<'_>) -> Result<()> {
        let mut invocation = self.fenced.delete.key(key(session, "fence"));
        invocation.key(result_key(session)).arg(fence.token());
        self.write_fenced(session, &mut invocation).await
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
}

#[async_trait]
impl Documents for RedisStore {
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

    async fn withdraw(&self, session: &str, mark: &str) -> Result<()> {
        let mut connection = self.connection.clone();
        connection
            .set_ex(key(session, "withdrawn"), mark, WORKING_TTL_SECONDS)
            .await
            .map_err(unavailable)
    }

    async fn withdrawal(&self, session: &str) -> Result<Option<String>> {
        let mut connection = self.connection.clone();
        connection
            .get(key(session, "withdrawn"))
            .await
            .map_err(unavailable)
    }

    async fn end_withdrawal(&self, session: &str, mark: &str) -> Result<()> {
        let mut connection = self.connection.clone();
        self.release
            .key(key(session, "withdrawn"))
            .arg(mark)
            .invoke_async::<i64>(&mut connection)
            .await
            .map(|_| ())
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
}
