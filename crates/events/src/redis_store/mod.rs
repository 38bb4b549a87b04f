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
//! | `agency:{S}:keys` | set | the session's task, outcome, blob and starts keys, for cleanup |
//! | `agency:{S}:starts` | hash | work item (`<g>:<t>:<start>:<end>:<attempt>`) -> JSON list of the workers that started it and did not finish it; a range that keeps killing its workers is failed, not run again |
//! | `agency:{S}:run` | string | the session's current run; outcomes of any other run are refused whole, so late work of an ended run cannot recreate its state |
//! | `agency:{S}:document` | hash | `run` and `document`: the session document the current run runs, for a client submitting the id again to tell a repeat (attached to the run) from another document (refused) |
//! | `agency:actions:{S}` | hash | intake action (`topic/partition/offset`) -> what became of it when it started no run: `attached:<run>` or `refused:<why>`; kept as long as the result |
//! | `agency:{S}:state` | string | the live state (JSON): status, counts per group and task, times, rate and ETA; `pending` from the submission until a coordinator runs it, then written by the coordinator at most once a second |
//! | `agency:sessions` | sorted set | session id by when it was listed (ms), for `agency sessions`; entries older than a result is kept are dropped |
//! | `agency:{members}` | hash | coordinator or worker id -> what its last heartbeat said (JSON: role, host, pid, version, executors, running instances) |
//! | `agency:{members}:seen` | hash | id -> when it was last heard from (ms, Redis's clock); members silent for a day are forgotten |
//! | `agency:{S}:cancel` | string | the run a cancel was asked for; its coordinator, wherever it runs, sees it within a second and ends the run `cancelled` |
//! | `agency:result:{S}` | string | the final or partial result, kept 7 days after cleanup |
//! | `agency:{S}:origin` | string | the `agency_action` position (`topic/partition/offset`) the session id was last started from, kept as long as the result |
//! | `agency:{S}:lease` | string | the coordinator running the session; expires unless renewed |
//! | `agency:{S}:fence` | string | the token of the latest claim; a coordinator's writes carry theirs and are refused once it is replaced |
//!
//! Channels: `agency:notices:{S}` (outcome notices), `agency:progress:{S}` (each live state a
//! run writes), `agency:control`, `agency:results`.
//! Outcomes are recorded by one Lua script per batch, which applies the recording rule
//! atomically per instance (a success is final; a failure is replaced only by a newer attempt).

mod access;
mod agent_queue;
mod connection;
mod runs;
mod session;
mod shared;

pub use access::{shown_url, RedisAccess};

use crate::error::{Error, Result};
use crate::messages::TaskRef;
use crate::redis_scripts::{
    CLAIM_SCRIPT, CLEANUP_SCRIPT, DELETE_SCRIPT, END_RUN_SCRIPT, FENCE, HEARTBEAT_SCRIPT,
    KEEP_RESULTS_SCRIPT, KEEP_SUCCESSES_SCRIPT, RECORD_SCRIPT, RELEASE_SCRIPT, RENEW_SCRIPT,
    REPLACE_HASH_SCRIPT, REQUEST_CANCEL_SCRIPT, RESULT_SCRIPT, RESULT_TTL_SECONDS, RUN_CLEANUP,
    SAVE_DOCUMENT_SCRIPT, SAVE_STATE_SCRIPT, SAVE_TASK_SCRIPT, SET_FIELD_SCRIPT, START_RUN_SCRIPT,
    TRACK_RANGE_SCRIPT, WORKING_TTL_SECONDS,
};
use crate::store::{Fence, Subscription};
use async_trait::async_trait;
use connection::{Connection, ScriptCall};
use futures_util::StreamExt as _;
use redis::AsyncCommands as _;
use serde_json::{Map, Value};
use std::sync::Arc;

/// The [`Store`](crate::Store) on Redis: every write a Lua call or a single command; see the module's key table.
#[derive(Clone)]
pub struct RedisStore {
    /// Where subscriptions are made: the server, or each node of a cluster (a message published
    /// on any node of a cluster reaches subscribers on every node), tried in turn.
    subscribe_to: Vec<redis::Client>,
    /// Whom it talks to, for messages: the URL or the cluster's nodes, passwords hidden.
    address: String,
    /// The credentials and certificates its connections use, for connections to single nodes
    /// of a cluster.
    access: RedisAccess,
    connection: Connection,
    /// Writes that must not be lost at a failover (outcomes, task records, results) wait for a
    /// replica's acknowledgement: on a cluster whose every master has a replica.
    replicas: Arc<connection::ReplicaWait>,
    record: redis::Script,
    track_range: redis::Script,
    request_cancel: redis::Script,
    heartbeat: redis::Script,
    claim: redis::Script,
    /// The fenced writes: each script opens with the [`FENCE`] check.
    fenced: Fenced,
    renew: redis::Script,
    release: redis::Script,
    agents: agent_queue::AgentScripts,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// A connection's trouble, a cluster failing over and a Redis out of memory are `Unavailable`,
/// to be waited out; anything else Redis refused. A
/// reply cut short by a dropped connection can surface as a parse error rather than an I/O one
/// (redis-rs's async decoder reports "Unexpected end of input"), and redis-rs itself replaces
/// the connection on any parse error, so those are the connection's trouble too.
fn unavailable(error: redis::RedisError) -> Error {
    use redis::{ErrorKind, ServerErrorKind};
    crate::telemetry::error("redis");
    // A cluster between a master's loss and its replica's promotion answers CLUSTERDOWN,
    // TRYAGAIN or MASTERDOWN, or has no connection to the slot's node yet: waited out too. So
    // is a MOVED or ASK the cluster client passed on after its redirects ran out (the slot
    // moved while it followed them): its slots are read again before the next try.
    let failing_over = matches!(
        error.kind(),
        ErrorKind::ClusterConnectionNotFound
            | ErrorKind::Server(
                ServerErrorKind::ClusterDown
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::BusyLoading
                    | ServerErrorKind::Moved
                    | ServerErrorKind::Ask
            )
    );
    if out_of_memory(&error) {
        return Error::Unavailable {
            backend: "redis",
            message: format!(
                "out of memory (maxmemory reached): writes wait until it has room again: {error}"
            ),
        };
    }
    if failing_over
        || error.is_io_error()
        || error.is_connection_dropped()
        || error.is_timeout()
        || error.is_connection_refusal()
        || error.kind() == ErrorKind::Parse
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

/// Whether Redis refused a write for want of memory (`OOM`: `maxmemory` reached under the
/// `noeviction` policy), alone or as a command of a pipeline. Like a full disk it passes once
/// memory is freed or raised, so it is waited out: a write given up would lose work accepted
/// (a worker's outcomes, a coordinator's result).
fn out_of_memory(error: &redis::RedisError) -> bool {
    error.code() == Some("OOM")
        || error
            .clone()
            .into_server_errors()
            .is_some_and(|errors| errors.iter().any(|(_, error)| error.code() == "OOM"))
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
    keep_results: redis::Script,
    /// Not fenced by a token: [`RUN_CLEANUP`] checks the run instead.
    cleanup_run: redis::Script,
    start_run: redis::Script,
    save_document: redis::Script,
    save_state: redis::Script,
    keep_successes: redis::Script,
    end_run: redis::Script,
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
            keep_results: fenced(KEEP_RESULTS_SCRIPT),
            cleanup_run: redis::Script::new(&format!("{RUN_CLEANUP}{CLEANUP_SCRIPT}")),
            start_run: fenced(START_RUN_SCRIPT),
            save_document: fenced(SAVE_DOCUMENT_SCRIPT),
            save_state: fenced(SAVE_STATE_SCRIPT),
            keep_successes: fenced(KEEP_SUCCESSES_SCRIPT),
            end_run: fenced(END_RUN_SCRIPT),
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
    fn with(
        subscribe_to: Vec<redis::Client>,
        address: String,
        connection: Connection,
        access: RedisAccess,
    ) -> Self {
        Self {
            subscribe_to,
            address,
            access,
            connection,
            replicas: Arc::new(connection::ReplicaWait::none()),
            record: redis::Script::new(RECORD_SCRIPT),
            track_range: redis::Script::new(TRACK_RANGE_SCRIPT),
            request_cancel: redis::Script::new(REQUEST_CANCEL_SCRIPT),
            heartbeat: redis::Script::new(HEARTBEAT_SCRIPT),
            claim: redis::Script::new(CLAIM_SCRIPT),
            fenced: Fenced::new(),
            renew: redis::Script::new(RENEW_SCRIPT),
            release: redis::Script::new(RELEASE_SCRIPT),
            agents: agent_queue::AgentScripts::new(),
        }
    }

    /// A pub/sub connection: to the server, or to the first node of the cluster that answers.
    async fn pubsub(&self) -> Result<redis::aio::PubSub> {
        let mut last = None;
        for client in &self.subscribe_to {
            match client.get_async_pubsub().await {
                Ok(pubsub) => return Ok(pubsub),
                Err(error) => last = Some(error),
            }
        }
        Err(last.map_or_else(
            || Error::Unavailable {
                backend: "redis",
                message: "no server to subscribe on".into(),
            },
            unavailable,
        ))
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

    /// Runs a cleanup script (fenced by a token, or by the run): KEYS fence, keys index,
    /// context, mappings, run, kept set; ARGV the token or the run, the result TTL.
    async fn delete_working_state(
        &self,
        script: &redis::Script,
        session: &str,
        check: &str,
    ) -> Result<()> {
        let mut invocation = script.key(key(session, "fence"));
        invocation
            .key(key(session, "keys"))
            .key(key(session, "context"))
            .key(key(session, "mappings"))
            .key(key(session, "run"))
            .key(key(session, "kept"))
            .arg(check)
            .arg(RESULT_TTL_SECONDS);
        self.write_fenced(session, &mut invocation).await
    }

    /// As [`RedisStore::write_fenced`], for a write that must not be lost at a failover: on a
    /// cluster with replicas it returns once a replica has it too (or after
    /// [`connection::REPLICA_WAIT_MS`], and then writes stop waiting for a while: see
    /// [`connection::ReplicaWait`]).
    async fn write_fenced_durably(&self, session: &str, call: &ScriptCall<'_>) -> Result<()> {
        let (answer, _) = self.run_durably(call).await.map_err(unavailable)?;
        match answer {
            redis::Value::BulkString(answer) if answer == b"ok" => Ok(()),
            redis::Value::SimpleString(answer) if answer == "ok" => Ok(()),
            redis::Value::BulkString(answer) if answer == b"fenced" => Err(Error::Fenced {
                session: session.to_string(),
            }),
            other => Err(corrupt("a fenced write's answer", format!("{other:?}"))),
        }
    }

    /// Runs `call`, waiting for a replica where this store does ([`RedisStore::replicas`]).
    async fn run_durably(&self, call: &ScriptCall<'_>) -> redis::RedisResult<(redis::Value, bool)> {
        let wait = self.replicas.wanted(&self.connection).await;
        let (answer, replicated) = self.connection.run(call, wait).await?;
        if !replicated {
            self.replicas.missed(&self.address);
        }
        Ok((answer, replicated))
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A server that answers the first command with the start of a long array and hangs up, as
    /// Redis does when `CLIENT KILL` lands mid-reply: the client sees the data end inside an element.
    async fn cut_reply_server() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let address = listener.local_addr().expect("the listener's address");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                // The handshake's commands get `+OK` each; the first LRANGE gets the cut reply.
                while let Ok(read @ 1..) = socket.read(&mut request).await {
                    let request = String::from_utf8_lossy(&request[..read]);
                    if request.contains("LRANGE") {
                        let _ = socket.write_all(b"*20000\r\n$1\r\na\r\n$5\r\nab").await;
                        break;
                    }
                    let commands = request.matches("*").count();
                    let _ = socket
                        .write_all("+OK\r\n".repeat(commands).as_bytes())
                        .await;
                }
            }
        });
        address
    }

    #[tokio::test]
    async fn a_reply_cut_short_is_the_connection_s_trouble() {
        let address = cut_reply_server().await;
        let client = redis::Client::open(format!("redis://{address}")).expect("an address");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("the handshake is answered");
        let cut: redis::RedisResult<Vec<String>> = redis::cmd("LRANGE")
            .arg("k")
            .arg(0)
            .arg(-1)
            .query_async(&mut connection)
            .await;
        let error = cut.expect_err("the reply was cut short");
        assert!(
            matches!(unavailable(error), Error::Unavailable { .. }),
            "a cut reply must be waited out, not refused"
        );
    }

    #[test]
    fn a_cluster_moving_its_slots_and_a_full_redis_are_waited_out_and_a_refusal_is_not() {
        let reply = |text: &str| {
            redis::parse_redis_value(text.as_bytes())
                .expect("a reply")
                .extract_error()
                .expect_err("an error reply")
        };
        for moving in [
            "-MOVED 13637 127.0.0.1:7005\r\n",
            "-ASK 13637 127.0.0.1:7005\r\n",
            "-CLUSTERDOWN The cluster is down\r\n",
            "-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
        ] {
            assert!(
                matches!(unavailable(reply(moving)), Error::Unavailable { .. }),
                "{moving}"
            );
        }
        assert!(matches!(
            unavailable(reply(
                "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
            )),
            Error::Refused { .. }
        ));
    }
}
