//! The Redis `Store`. Every key of a session carries the session id as a hash tag, so a session
//! lives in one Redis Cluster slot and its multi-key operations stay legal:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `agency:{S}:task:<g>:<t>` | string | the `TaskRecord` workers read |
//! | `agency:{S}:outcomes:<g>:<t>` | hash | instance -> `attempt|S or F|outcome JSON` |
//! | `agency:{S}:context` | hash | context key -> JSON value |
//! | `agency:{S}:mappings` | hash | task id -> context key |
//! | `agency:{S}:blob:<g>:<t>:<i>:<attempt>` | string | a large instance result stored by reference |
//! | `agency:{S}:keys` | set | the session's task, outcome and blob keys, for cleanup |
//! | `agency:{S}:run` | string | the session's current run; outcomes of any other run are refused whole, so late work of an ended run cannot recreate its state |
//! | `agency:result:{S}` | string | the final or partial result, kept 7 days after cleanup |
//! | `agency:{S}:origin` | string | the `agency_action` position (`topic/partition/offset`) the session id was last started from, kept as long as the result |
//! | `agency:{S}:lease` | string | the coordinator running the session; expires unless renewed |
//! | `agency:{S}:fence` | string | the token of the latest claim; a coordinator's writes carry theirs and are refused once it is replaced |
//!
//! Channels: `agency:notices:{S}` (outcome notices), `agency:control`, `agency:results`.
//! Outcomes are recorded by one Lua script per batch, which applies the recording rule
//! atomically per instance (a success is final; a failure is replaced only by a newer attempt).

use crate::error::{Error, Result};
use crate::messages::{Outcome, TaskRecord, TaskRef};
use crate::origin::Origin;
use crate::redis_scripts::{
    CLAIM_SCRIPT, CLEANUP_SCRIPT, DELETE_SCRIPT, FENCE, RECORD_SCRIPT, RELEASE_SCRIPT,
    RENEW_SCRIPT, REPLACE_HASH_SCRIPT, RESULT_SCRIPT, RESULT_TTL_SECONDS, SAVE_TASK_SCRIPT,
    SET_FIELD_SCRIPT, START_RUN_SCRIPT, WORKING_TTL_SECONDS,
};
use crate::store::{notices_channel, Claim, Fence, Renewal, Store, Subscription, RESULTS_CHANNEL};
use async_trait::async_trait;
use futures_util::StreamExt as _;
use redis::aio::ConnectionManager;
use redis::AsyncCommands as _;
use serde_json::{Map, Value};
use std::ops::Range;
use std::time::Duration;

/// The [`Store`] on Redis: every write a Lua call or a single command; see the module's key table.
#[derive(Clone)]
pub struct RedisStore {
    client: redis::Client,
    connection: ConnectionManager,
    record: redis::Script,
    claim: redis::Script,
    /// The fenced writes: each script opens with the [`FENCE`] check.
    fenced: Fenced,
    renew: redis::Script,
    release: redis::Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.client.get_connection_info().addr().to_string())
            .finish_non_exhaustive()
    }
}

fn unavailable(error: redis::RedisError) -> Error {
    if error.is_io_error()
        || error.is_connection_dropped()
        || error.is_timeout()
        || error.is_connection_refusal()
    {
        Error::Unavailable {
            backend: "redis",
            message: error.to_string(),
        }
    } else {
        Error::Refused {
            backend: "redis",
            operation: error.code().unwrap_or("command").to_string(),
            message: error.to_string(),
        }
    }
}

fn corrupt(what: impl Into<String>, error: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        what: what.into(),
        message: error.to_string(),
    }
}

/// The scripts of the writes a coordinator fences with its claim's token.
#[derive(Clone)]
struct Fenced {
    result: redis::Script,
    save_task: redis::Script,
    replace_hash: redis::Script,
    set_field: redis::Script,
    delete: redis::Script,
    cleanup: redis::Script,
    start_run: redis::Script,
}

impl Fenced {
    fn new() -> Self {
        let fenced = |body: &str| redis::Script::new(&format!("{FENCE}{body}"));
        Self {
            result: fenced(RESULT_SCRIPT),
            save_task: fenced(SAVE_TASK_SCRIPT),
            replace_hash: fenced(REPLACE_HASH_SCRIPT),
            set_field: fenced(SET_FIELD_SCRIPT),
            delete: fenced(DELETE_SCRIPT),
            cleanup: fenced(CLEANUP_SCRIPT),
            start_run: fenced(START_RUN_SCRIPT),
        }
    }
}

fn key(session: &str, rest: &str) -> String {
    format!("agency:{{{session}}}:{rest}")
}

fn task_key(session: &str, task: TaskRef) -> String {
    key(session, &format!("task:{}:{}", task.group, task.task))
}

fn outcomes_key(session: &str, task: TaskRef) -> String {
    key(session, &format!("outcomes:{}:{}", task.group, task.task))
}

fn result_key(session: &str) -> String {
    format!("agency:result:{{{session}}}")
}

impl RedisStore {
    /// Connects to `url` (`redis://127.0.0.1:6379`); the connection reconnects by itself.
    pub async fn connect(url: &str) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| Error::Refused {
            backend: "redis",
            operation: "open".into(),
            message: format!("bad address `{url}`: {e}"),
        })?;
        let connection = client.get_connection_manager().await.map_err(unavailable)?;
        Ok(Self {
            client,
            connection,
            record: redis::Script::new(RECORD_SCRIPT),
            claim: redis::Script::new(CLAIM_SCRIPT),
            fenced: Fenced::new(),
            renew: redis::Script::new(RENEW_SCRIPT),
            release: redis::Script::new(RELEASE_SCRIPT),
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let mut connection = self.connection.clone();
        let bytes: Option<Vec<u8>> = connection.get(key).await.map_err(unavailable)?;
        bytes
            .map(|b| serde_json::from_slice(&b).map_err(|e| corrupt(key, e)))
            .transpose()
    }

    async fn hash_json(&self, key: &str) -> Result<Option<Map<String, Value>>> {
        let mut connection = self.connection.clone();
        let entries: Vec<(String, Vec<u8>)> = connection.hgetall(key).await.map_err(unavailable)?;
        if entries.is_empty() {
            return Ok(None);
        }
        entries
            .into_iter()
            .map(|(field, bytes)| {
                Ok((
                    field.clone(),
                    serde_json::from_slice(&bytes)
                        .map_err(|e| corrupt(format!("{key} {field}"), e))?,
                ))
            })
            .collect::<Result<_>>()
            .map(Some)
    }

    /// Runs a fenced write (a script opening with [`FENCE`], its first key the fence and its
    /// first argument the token, already given) and reads its answer.
    async fn write_fenced(
        &self,
        session: &str,
        invocation: &mut redis::ScriptInvocation<'_>,
    ) -> Result<()> {
        let mut connection = self.connection.clone();
        let answer: String = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        match answer.as_str() {
            "ok" => Ok(()),
            "fenced" => Err(Error::Fenced {
                session: session.to_string(),
            }),
            other => Err(corrupt("a fenced write's answer", other)),
        }
    }

    /// Replaces the session's hash `name` with `entries`, fenced.
    async fn replace_hash(
        &self,
        session: &str,
        name: &str,
        entries: &Map<String, Value>,
        fence: Fence<'_>,
    ) -> Result<()> {
        let mut invocation = self.fenced.replace_hash.key(key(session, "fence"));
        invocation
            .key(key(session, name))
            .arg(fence.token())
            .arg(WORKING_TTL_SECONDS);
        for (field, value) in entries {
            invocation.arg(field).arg(to_json(value)?);
        }
        self.write_fenced(session, &mut invocation).await
    }
}

fn to_json(value: &impl serde::Serialize) -> Result<Vec<u8>> {
    crate::encode("a value to store", value)
}

#[async_trait]
impl Store for RedisStore {
    async fn save_task(
        &self,
        session: &str,
        task: TaskRef,
        record: &TaskRecord,
        fence: Fence<'_>,
    ) -> Result<()> {
        let mut invocation = self.fenced.save_task.key(key(session, "fence"));
        invocation
            .key(task_key(session, task))
            .key(key(session, "keys"))
            .arg(fence.token())
            .arg(to_json(record)?)
            .arg(WORKING_TTL_SECONDS);
        self.write_fenced(session, &mut invocation).await
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
        let mut invocation = self.record.key(outcomes_key(session, task));
        invocation
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
        let mut connection = self.connection.clone();
        let reply: redis::Value = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
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
        let mut invocation = self.fenced.set_field.key(key(session, "fence"));
        invocation
            .key(key(session, "context"))
            .arg(fence.token())
            .arg(WORKING_TTL_SECONDS)
            .arg(context_key)
            .arg(to_json(value)?);
        self.write_fenced(session, &mut invocation).await
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

    async fn publish_result(&self, session: &str, result: &[u8], fence: Fence<'_>) -> Result<()> {
        let mut invocation = self.fenced.result.key(key(session, "fence"));
        invocation
            .key(result_key(session))
            .key(key(session, "origin"))
            .arg(fence.token())
            .arg(result)
            .arg(RESULT_TTL_SECONDS)
            .arg(RESULTS_CHANNEL);
        self.write_fenced(session, &mut invocation).await
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
        let mut invocation = self.fenced.cleanup.key(key(session, "fence"));
        invocation
            .key(key(session, "keys"))
            .key(key(session, "context"))
            .key(key(session, "mappings"))
            .key(key(session, "run"))
            .arg(fence.token());
        self.write_fenced(session, &mut invocation).await
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

    async fn publish(&self, channel: &str, payload: Vec<u8>) -> Result<()> {
        let mut connection = self.connection.clone();
        connection
            .publish::<_, _, ()>(channel, payload)
            .await
            .map_err(unavailable)
    }

    async fn subscribe(&self, channel: &str) -> Result<Box<dyn Subscription>> {
        let mut pubsub = self.client.get_async_pubsub().await.map_err(unavailable)?;
        pubsub.subscribe(channel).await.map_err(unavailable)?;
        Ok(Box::new(RedisSubscription {
            channel: channel.to_string(),
            messages: pubsub.into_on_message(),
        }))
    }

    async fn subscribe_pattern(&self, pattern: &str) -> Result<Box<dyn Subscription>> {
        let mut pubsub = self.client.get_async_pubsub().await.map_err(unavailable)?;
        pubsub.psubscribe(pattern).await.map_err(unavailable)?;
        Ok(Box::new(RedisSubscription {
            channel: pattern.to_string(),
            messages: pubsub.into_on_message(),
        }))
    }
}

struct RedisSubscription {
    channel: String,
    messages: redis::aio::PubSubStream,
}

#[async_trait]
impl Subscription for RedisSubscription {
    async fn next(&mut self) -> Result<Vec<u8>> {
        match self.messages.next().await {
            Some(message) => Ok(message.get_payload_bytes().to_vec()),
            // The connection dropped: messages published meanwhile are gone, so the caller must
            // resubscribe and reconcile from the stored state.
            None => Err(Error::Unavailable {
                backend: "redis",
                message: format!("subscription to {} lost its connection", self.channel),
            }),
        }
    }
}
