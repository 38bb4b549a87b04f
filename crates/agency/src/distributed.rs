//! Distributed mode: the coordinator service that takes sessions from the `agency_action`
//! topic, and the client side (`submit`, waiting for a result) over real Kafka and Redis.
//!
//! An action is seed 002's `handle(key, 'initialize', data, context)` as a Kafka message:
//! `{"key": "session id", "action": "initialize", "data": <session>, "context": {...}}`. The
//! `context` is merged over the session's own. A message that is not such an action goes to the
//! dead-letter topic; a session that does not validate gets a `failed` result with every problem,
//! published like any other result, so whoever waits for it learns why.

#[cfg(feature = "kafka")]
pub use crate::connect::connect_broker;
#[cfg(feature = "redis")]
pub use crate::connect::connect_store;
use crate::coordinator::{Coordinator, Progress};
use crate::dead_letter;
use crate::error::{Error, Result};
use crate::outage::{self, retrying};
use events::{Broker, Fence, Message, Origin, Position, Store, Watermarks, RESULTS_CHANNEL};
use futures_util::FutureExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use taskgroup::{Rules, Session, SessionResult};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Where sessions are submitted.
pub const ACTION_TOPIC: &str = "agency_action";
/// The consumer group coordinators join on `agency_action`.
pub const COORDINATOR_GROUP: &str = "agency-coordinators";

/// A message on `agency_action`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// The session id; the session's own `session_id` or a fresh one when absent.
    #[serde(default)]
    pub key: Option<String>,
    /// What to do.
    pub action: ActionKind,
    /// The session document.
    pub data: Value,
    /// Merged over the session's own context.
    #[serde(default)]
    pub context: Map<String, Value>,
}

/// What an action asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum ActionKind {
    /// Start (or resume) the session.
    Initialize,
}

impl std::str::FromStr for ActionKind {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        match text {
            "initialize" => Ok(Self::Initialize),
            other => Err(format!("unknown action `{other}` (expected initialize)")),
        }
    }
}

impl TryFrom<String> for ActionKind {
    type Error = String;

    fn try_from(text: String) -> std::result::Result<Self, Self::Error> {
        text.parse()
    }
}

impl Action {
    /// Reads an intake message; the error is the dead-letter reason.
    pub fn decode(payload: &[u8]) -> std::result::Result<Self, String> {
        // Another producer may send more than agency's own would: it is malformed all the same.
        if let Some(reason) = events::oversized(payload.len()) {
            return Err(reason);
        }
        /// The message as sent, before its `action` is known to be one.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Sent {
            #[serde(default)]
            key: Option<String>,
            action: String,
            data: Value,
            #[serde(default)]
            context: Map<String, Value>,
        }
        let sent: Sent = serde_json::from_slice(payload)
            .map_err(|error| format!("not an agency action: {error}"))?;
        Ok(Self {
            key: sent.key,
            action: sent.action.parse()?,
            data: sent.data,
            context: sent.context,
        })
    }
}

/// Turns an action into a session document and its id, or says what is wrong with it.
pub fn session_document(action: Action) -> std::result::Result<(String, Value), String> {
    let ActionKind::Initialize = action.action;
    let Value::Object(mut data) = action.data else {
        return Err("`data` must be a session object".into());
    };
    let id = action
        .key
        .or_else(|| {
            data.get("session_id")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if let Some(problem) = taskgroup::session_id_problem(&id) {
        return Err(problem);
    }
    if !action.context.is_empty() {
        let context = data.entry("context").or_insert_with(|| json!({}));
        let Value::Object(context) = context else {
            return Err("`data.context` must be an object".into());
        };
        context.extend(action.context);
    }
    data.insert("session_id".into(), Value::from(id.clone()));
    Ok((id, Value::Object(data)))
}

/// The coordinator service: takes actions until `shutdown`, runs each session concurrently.
///
/// An action's offset is committed only once its session has a result, and only past actions
/// that all do (a watermark per partition). A coordinator that dies, or stops at `shutdown`,
/// leaves its unfinished sessions' actions to be delivered again, to a coordinator that resumes
/// them from the store (see [`Coordinator::run_action`]).
pub async fn run_coordinator(
    broker: Arc<dyn Broker>,
    store: Arc<dyn Store>,
    rules: Rules,
    group: &str,
    chunk: u64,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut consumer = retrying("joining the coordinator group", || {
        broker.subscribe(ACTION_TOPIC, group)
    })
    .await?;
    let coordinator =
        Coordinator::new(broker.clone(), store.clone(), rules.limits).with_chunk(chunk);
    let mut sessions = JoinSet::new();
    let mut watermarks = Watermarks::default();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(finished) = sessions.join_next() => {
                let position: Position = finished?;
                if let Some(next) = watermarks.done(&position) {
                    outage::commit(consumer.as_mut(), &next).await;
                }
            }
            message = outage::next_message(consumer.as_mut()) => {
                let message = message?;
                let position = Position::of(&message);
                watermarks.taken(&position);
                let Some((id, session)) = accept(broker.as_ref(), store.as_ref(), &rules, &message).await else {
                    if let Some(next) = watermarks.done(&position) {
                        outage::commit(consumer.as_mut(), &next).await;
                    }
                    continue;
                };
                let coordinator = coordinator.clone();
                let stop = shutdown.child_token();
                sessions.spawn(async move {
                    let origin = position.origin();
                    tracing::info!(session = %id, %origin, "session taken");
                    let progress = Progress::default();
                    let running = coordinator.run_action(&session, &id, &origin, &progress, stop);
                    match AssertUnwindSafe(running).catch_unwind().await {
                        Ok(Ok(Some(result))) => tracing::info!(session = %id, status = %result.status, "session finished"),
                        Ok(Ok(None)) => tracing::info!(session = %id, "action delivered again; its session was done"),
                        Ok(Err(error)) if error.is_handed_over() => tracing::info!(session = %id, "{error}"),
                        Ok(Err(error)) => tracing::error!(session = %id, %error, "session failed"),
                        Err(_) => tracing::error!(session = %id, "session task panicked"),
                    }
                    position
                });
            }
        }
    }
    // Sessions stop now and are left to be resumed; their actions stay uncommitted.
    while sessions.join_next().await.is_some() {}
    Ok(())
}

/// Reads one action: a valid session to run, or `None` after dead-lettering or rejecting it.
async fn accept(
    broker: &dyn Broker,
    store: &dyn Store,
    rules: &Rules,
    message: &Message,
) -> Option<(String, Session)> {
    let action = match Action::decode(&message.payload) {
        Ok(action) => action,
        Err(reason) => {
            dead_letter::send(broker, message, &reason).await;
            return None;
        }
    };
    let (id, document) = match session_document(action) {
        Ok(parts) => parts,
        Err(reason) => {
            dead_letter::send(broker, message, &reason).await;
            return None;
        }
    };
    match Session::from_json(&document.to_string(), rules) {
        // The coordinator deletes an earlier run's result under the same id as the session starts.
        Ok(session) => Some((id, session)),
        Err(error) => {
            // A well-formed action with an invalid session: its submitter waits for a result.
            let errors: Vec<String> = match &error {
                taskgroup::Error::Invalid(problems) => {
                    problems.iter().map(ToString::to_string).collect()
                }
                other => vec![other.to_string()],
            };
            let mut result = SessionResult::failed(&id, errors);
            result.run = Some(Position::of(message).origin().to_string());
            tracing::warn!(session = %id, %error, "rejecting an invalid session");
            if let Err(error) =
                crate::coordinator::publish_result(store, &result, Fence::Open).await
            {
                tracing::error!(session = %id, %error, "cannot publish the rejection");
            }
            None
        }
    }
}

/// A session produced to `agency_action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The session's id.
    pub id: String,
    /// The run it starts: the action's position, which its result names
    /// ([`SessionResult::run`]).
    pub run: Origin,
}

/// Produces a session to `agency_action`. A result stored for the same id by an earlier run is
/// deleted first, and the result of this run names it, so whoever waits for this run's result
/// gets neither an earlier nor a later run's.
pub async fn submit(broker: &dyn Broker, store: &dyn Store, document: Value) -> Result<Submitted> {
    let action = Action {
        key: None,
        action: ActionKind::Initialize,
        data: document,
        context: Map::new(),
    };
    let (id, data) = session_document(action).map_err(Error::Action)?;
    let action = Action {
        key: Some(id.clone()),
        action: ActionKind::Initialize,
        data,
        context: Map::new(),
    };
    let encoded = events::encode("the action", &action)?;
    // Refused before anything changes: an earlier result stays.
    if encoded.len() > events::MAX_MESSAGE_BYTES {
        return Err(Error::Action(format!(
            "session {id} is {} bytes as an agency_action message, over the limit of {} bytes; pass large inputs by reference (a URL, a file, a store key) instead",
            encoded.len(),
            events::MAX_MESSAGE_BYTES
        )));
    }
    retrying("deleting an earlier result", || {
        store.delete_result(&id, Fence::Open)
    })
    .await?;
    let position = broker.publish(ACTION_TOPIC, &id, encoded).await?;
    Ok(Submitted {
        id,
        run: position.origin(),
    })
}

/// Whether `result` answers a wait for run `run` of session `id`: yes when it is that run's, or
/// when no run is asked for or the result names none; `None` for an earlier run's (keep
/// waiting); an error when a later submission of the id replaced the run.
fn answers(id: &str, run: Option<&Origin>, result: SessionResult) -> Result<Option<SessionResult>> {
    let (Some(run), Some(theirs)) = (run, result.run.as_deref()) else {
        return Ok(Some(result));
    };
    match theirs.parse::<Origin>() {
        Ok(theirs) if theirs == *run => Ok(Some(result)),
        Ok(theirs) if theirs.supersedes(run) => Err(Error::Superseded {
            session: id.to_string(),
            run: run.to_string(),
            by: theirs.to_string(),
        }),
        _ => Ok(None),
    }
}

/// A stored or announced result, read back; a value that is not one says so, naming the session.
pub fn read_result(session: &str, value: Value) -> Result<SessionResult> {
    serde_json::from_value(value).map_err(|error| Error::Corrupt {
        what: format!("the stored result of session {session}"),
        message: format!("not a session result: {error}"),
    })
}

/// The session's stored result, if it has one, waiting out an unreachable store.
pub async fn load_result(store: &dyn Store, id: &str) -> Result<Option<SessionResult>> {
    match retrying("reading a result", || store.load_result(id)).await? {
        Some(value) => Ok(Some(read_result(id, value)?)),
        None => Ok(None),
    }
}

/// Waits for a session's result (of run `run`, when given): read from the store when
/// `agency:results` announces it, and every second too, so a result published before this
/// call, or an announcement lost, is still found.
pub async fn wait_result(
    store: &dyn Store,
    id: &str,
    run: Option<&Origin>,
    timeout: Option<Duration>,
) -> Result<SessionResult> {
    ResultWaiter::subscribe(store)
        .await?
        .wait(store, id, run, timeout)
        .await
}

/// A subscription to `agency:results`, opened before submitting so waiting adds no connection
/// setup to a session's latency.
pub struct ResultWaiter {
    results: Box<dyn events::Subscription>,
}

impl std::fmt::Debug for ResultWaiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResultWaiter")
    }
}

impl ResultWaiter {
    /// Subscribes to the results channel; do it before submitting, so no result is missed.
    pub async fn subscribe(store: &dyn Store) -> Result<Self> {
        Ok(Self {
            results: retrying("subscribing to results", || {
                store.subscribe(RESULTS_CHANNEL)
            })
            .await?,
        })
    }

    /// The result of session `id`, of run `run` when given (see [`Submitted::run`]); other
    /// sessions' and earlier runs' results are skipped, and a later run's is an error
    /// ([`Error::Superseded`]).
    pub async fn wait(
        &mut self,
        store: &dyn Store,
        id: &str,
        run: Option<&Origin>,
        timeout: Option<Duration>,
    ) -> Result<SessionResult> {
        let stored = |result: Option<SessionResult>| match result {
            Some(result) => answers(id, run, result),
            None => Ok(None),
        };
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut poll = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                payload = self.results.next() => match payload {
                    // An announcement names the session; its result is read from the store (it
                    // may be too large for pub/sub).
                    Ok(payload) => {
                        let announced = serde_json::from_slice::<events::Announcement>(&payload);
                        if announced.is_ok_and(|announced| announced.session_id == id) {
                            if let Some(result) = stored(load_result(store, id).await?)? {
                                return Ok(result);
                            }
                        }
                    }
                    // Lost with the connection: subscribe again, then read what was published
                    // meanwhile from the store.
                    Err(error) if error.is_retryable() => {
                        tracing::warn!(%error, "the results subscription dropped; subscribing again");
                        self.results = retrying("subscribing to results", || store.subscribe(RESULTS_CHANNEL)).await?;
                        if let Some(result) = stored(load_result(store, id).await?)? {
                            return Ok(result);
                        }
                    }
                    Err(error) => return Err(error.into()),
                },
                _ = poll.tick() => {
                    if let Some(result) = stored(load_result(store, id).await?)? {
                        return Ok(result);
                    }
                }
                () = crate::coordinator::sleep_until(deadline) => {
                    return Err(Error::NoResult { session: id.to_string(), seconds: timeout.unwrap_or_default().as_secs() });
                }
            }
        }
    }
}
