//! The coordinator's intake: the service that takes sessions from the `agency_action` topic
//! and runs each on a [`Coordinator`]. The side that produces actions is
//! [`crate::client::actions`]; waiting for a result is [`crate::results::ResultWaiter`].
//!
//! An action is seed 002's `handle(key, 'initialize', data, context)` as a Kafka message:
//! `{"key": "session id", "action": "initialize", "data": <session>, "context": {...}}`. The
//! `context` is merged over the session's own. `{"key": "session id", "action": "cancel"}` ends
//! the session's run `cancelled`, with the results of what completed. A message that is not such
//! an action goes to the dead-letter topic; a session that does not validate gets a `failed`
//! result with every problem, published like any other result, so whoever waits for it learns
//! why.

use crate::coordinator::{Coordinator, Progress};
use crate::dead_letter;
use crate::error::{Error, Result};
use crate::metrics::DeadLetter;
use crate::outage::{self, retrying};
use crate::results::load_result;
use events::{Broker, Fence, Message, Origin, Position, Store, Watermarks};
use futures_util::FutureExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
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
    /// The session document (`initialize`; `null` for `cancel`).
    #[serde(default, skip_serializing_if = "Value::is_null")]
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
    /// Stop the session's run: nothing more is dispatched, running instances are cancelled, and
    /// the result is `cancelled` with what completed.
    Cancel,
    /// Run the session (its document in `data`, as the run before ran it) again, reusing every
    /// success its run before recorded: only what failed or never finished is executed.
    Rerun,
    /// Pause the session's run: nothing new is dispatched or started; what runs finishes.
    Pause,
    /// Resume a paused run.
    Resume,
}

impl ActionKind {
    /// The action as it is written.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initialize => "initialize",
            Self::Cancel => "cancel",
            Self::Rerun => "rerun",
            Self::Pause => "pause",
            Self::Resume => "resume",
        }
    }
}

impl std::str::FromStr for ActionKind {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        match text {
            "initialize" => Ok(Self::Initialize),
            "cancel" => Ok(Self::Cancel),
            "rerun" => Ok(Self::Rerun),
            "pause" => Ok(Self::Pause),
            "resume" => Ok(Self::Resume),
            other => Err(format!(
                "unknown action `{other}` (expected initialize, cancel, rerun, pause or resume)"
            )),
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
            #[serde(default)]
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

/// Turns an `initialize` (or `rerun`) action into a session document and its id, or says what
/// is wrong with it.
pub fn session_document(action: Action) -> std::result::Result<(String, Value), String> {
    if !matches!(action.action, ActionKind::Initialize | ActionKind::Rerun) {
        return Err("only an `initialize` or `rerun` action carries a session".into());
    }
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
    let join = || {
        retrying("joining the coordinator group", || {
            broker.subscribe(ACTION_TOPIC, group)
        })
    };
    let mut consumer = join().await?;
    let coordinator =
        Coordinator::new(broker.clone(), store.clone(), rules.limits).with_chunk(chunk);
    let watching = {
        let (coordinator, stop) = (coordinator.clone(), shutdown.child_token());
        tokio::spawn(async move { coordinator.watch_dispatch_log(stop).await })
    };
    let mut sessions = JoinSet::new();
    let mut watermarks = Watermarks::default();
    // Which consumer an action came from: after the broker lost its log the coordinator joins
    // again, and the old consumer's actions are carried out but never committed.
    let mut member = 0u64;
    // The runs this coordinator has under way, by session id: a cancel action reaches them at
    // once (others, through the store, within a second), and a session submitted again while
    // one runs is attached to it or refused. Every unfinished action of this coordinator's
    // partitions is here (its offset stays uncommitted until its run ends), so this decides
    // for every action of a session id, which its key keeps on one partition.
    let mut running: HashMap<String, Vec<LocalRun>> = HashMap::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(finished) = sessions.join_next() => {
                let (from, position, id): (u64, Position, String) = finished?;
                if let Some(runs) = running.get_mut(&id) {
                    runs.retain(|run| run.origin != position.origin());
                    if runs.is_empty() {
                        running.remove(&id);
                    }
                }
                if from == member {
                    if let Some(next) = watermarks.done(&position) {
                        outage::commit(consumer.as_mut(), &next).await;
                    }
                }
            }
            message = outage::next_message(consumer.as_mut()) => {
                let message = match message {
                    Ok(message) => message,
                    Err(events::Error::LogLost { detail, .. }) => {
                        tracing::warn!(%detail, running = running.len(), "the broker lost actions; joining the coordinator group again");
                        consumer = join().await?;
                        (watermarks, member) = (Watermarks::default(), member + 1);
                        continue;
                    }
                    Err(error) => return Err(error.into()),
                };
                let position = Position::of(&message);
                watermarks.taken(&position);
                let (id, session, document, rerun) = match accept(broker.as_ref(), store.as_ref(), &rules, &message).await {
                    Accepted::Run(id, session, document, rerun) => {
                        let under_way = running.get(&id).and_then(|runs| runs.last());
                        match under_way {
                            Some(under_way) if one_run_at_a_time(broker.as_ref(), store.as_ref(), &message, &id, under_way, &document).await => {
                                if let Some(next) = watermarks.done(&position) {
                                    outage::commit(consumer.as_mut(), &next).await;
                                }
                                continue;
                            }
                            _ => (id, session, document, rerun),
                        }
                    }
                    Accepted::Cancel(id) => {
                        let here = running.get(&id).map_or(&[][..], Vec::as_slice);
                        cancel_runs(store.as_ref(), &id, here).await;
                        if let Some(next) = watermarks.done(&position) {
                            outage::commit(consumer.as_mut(), &next).await;
                        }
                        continue;
                    }
                    Accepted::Pause(id, paused) => {
                        match retrying("pausing a session", || store.request_pause(&id, paused)).await {
                            Ok(Some(run)) => tracing::info!(session = %id, %run, paused, "pause requested"),
                            Ok(None) => tracing::info!(session = %id, "pause of a session with no run under way: nothing changed"),
                            Err(error) => tracing::error!(session = %id, %error, "cannot mark the session paused"),
                        }
                        if let Some(next) = watermarks.done(&position) {
                            outage::commit(consumer.as_mut(), &next).await;
                        }
                        continue;
                    }
                    Accepted::Nothing => {
                        if let Some(next) = watermarks.done(&position) {
                            outage::commit(consumer.as_mut(), &next).await;
                        }
                        continue;
                    }
                };
                let coordinator = coordinator.clone();
                let stop = shutdown.child_token();
                let cancel = CancellationToken::new();
                let progress = Arc::new(Progress::default());
                running.entry(id.clone()).or_default().push(LocalRun {
                    origin: position.origin(),
                    cancel: cancel.clone(),
                    document: document.clone(),
                    progress: progress.clone(),
                });
                sessions.spawn(async move {
                    let origin = position.origin();
                    tracing::info!(session = %id, %origin, "session taken");
                    let running = coordinator.run_action(&session, &document, &id, &origin, rerun, &progress, stop, cancel);
                    match AssertUnwindSafe(running).catch_unwind().await {
                        Ok(Ok(Some(result))) => tracing::info!(session = %id, status = %result.status, "session finished"),
                        Ok(Ok(None)) => tracing::info!(session = %id, "action delivered again; its session was done"),
                        Ok(Err(error)) if error.is_handed_over() => tracing::info!(session = %id, "{error}"),
                        Ok(Err(error)) => tracing::error!(session = %id, %error, "session failed"),
                        Err(_) => tracing::error!(session = %id, "session task panicked"),
                    }
                    (member, position, id)
                });
            }
        }
    }
    // Sessions stop now and are left to be resumed; their actions stay uncommitted.
    while sessions.join_next().await.is_some() {}
    let _ = watching.await;
    Ok(())
}

/// What an intake message asks of the coordinator.
enum Accepted {
    /// Run this valid session (a rerun of what failed when the flag says so).
    Run(String, Box<Session>, Vec<u8>, bool),
    /// Cancel this session's run.
    Cancel(String),
    /// Pause (true) or resume this session's run.
    Pause(String, bool),
    /// Nothing more: the message was dead-lettered, or its invalid session rejected.
    Nothing,
}

/// Reads one action: a valid session to run, a session to cancel, or nothing after
/// dead-lettering or rejecting it.
async fn accept(
    broker: &dyn Broker,
    store: &dyn Store,
    rules: &Rules,
    message: &Message,
) -> Accepted {
    let action = match Action::decode(&message.payload) {
        Ok(action) => action,
        Err(reason) => {
            dead_letter::send(broker, message, DeadLetter::Malformed, &reason).await;
            return Accepted::Nothing;
        }
    };
    if matches!(
        action.action,
        ActionKind::Cancel | ActionKind::Pause | ActionKind::Resume
    ) {
        let kind = action.action;
        return match action.key {
            Some(id) if taskgroup::session_id_problem(&id).is_none() => match kind {
                ActionKind::Pause => Accepted::Pause(id, true),
                ActionKind::Resume => Accepted::Pause(id, false),
                _ => Accepted::Cancel(id),
            },
            Some(id) => {
                let reason = taskgroup::session_id_problem(&id).unwrap_or_default();
                dead_letter::send(
                    broker,
                    message,
                    DeadLetter::BadKey,
                    &format!("{}: {reason}", kind.as_str()),
                )
                .await;
                Accepted::Nothing
            }
            None => {
                let reason = format!("a {} names its session in `key`", kind.as_str());
                dead_letter::send(broker, message, DeadLetter::BadKey, &reason).await;
                Accepted::Nothing
            }
        };
    }
    let rerun = action.action == ActionKind::Rerun;
    let (id, document) = match session_document(action) {
        Ok(parts) => parts,
        Err(reason) => {
            dead_letter::send(broker, message, DeadLetter::InvalidSession, &reason).await;
            return Accepted::Nothing;
        }
    };
    match Session::from_json(&document.to_string(), rules) {
        // The coordinator deletes an earlier run's result under the same id as the session starts.
        Ok(session) => match events::encode("the session document", &document) {
            Ok(encoded) => Accepted::Run(id, Box::new(session), encoded, rerun),
            Err(error) => {
                dead_letter::send(broker, message, DeadLetter::Malformed, &error.to_string()).await;
                Accepted::Nothing
            }
        },
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
            Accepted::Nothing
        }
    }
}

/// A run this coordinator has under way.
struct LocalRun {
    /// Its intake action's position.
    origin: Origin,
    /// Cancels it.
    cancel: CancellationToken,
    /// The session document it runs, encoded.
    document: Vec<u8>,
    /// Its counts, and whether its result is stored.
    progress: Arc<Progress>,
}

/// An `initialize` of a session id while a run of it is under way: the same document is a
/// repeat (a client retrying, the action produced twice) and is attached to that run; another
/// document is refused, dead-lettered with the reason. Either way the action starts nothing,
/// and a note in the store tells whoever waits for it. False when the run has in fact finished
/// (its result is stored; its coordinator is only deleting its state): the action runs.
async fn one_run_at_a_time(
    broker: &dyn Broker,
    store: &dyn Store,
    message: &Message,
    id: &str,
    under_way: &LocalRun,
    document: &[u8],
) -> bool {
    // Its result is stored: a client may have read it, deleted it and submitted again already.
    if under_way.progress.finished.load(Ordering::Acquire) {
        return false;
    }
    let run = under_way.origin.to_string();
    match load_result(store, id).await {
        Ok(Some(result)) if result.run.as_deref() == Some(run.as_str()) => return false,
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(session = id, %error, "cannot read whether the run under way finished")
        }
    }
    let origin = Position::of(message).origin().to_string();
    let same = serde_json::from_slice::<Value>(document).ok()
        == serde_json::from_slice::<Value>(&under_way.document).ok();
    let note = if same {
        tracing::info!(session = id, %origin, run = %under_way.origin, "the session submitted again while it runs: attached to the run under way");
        format!("attached:{}", under_way.origin)
    } else {
        let reason = Error::Running {
            session: id.to_string(),
            run: under_way.origin.to_string(),
        }
        .to_string();
        tracing::warn!(session = id, %origin, "{reason}");
        dead_letter::send(broker, message, DeadLetter::Running, &reason).await;
        format!("refused:{reason}")
    };
    if let Err(error) = retrying("noting what became of an action", || {
        store.note_action(id, &origin, &note)
    })
    .await
    {
        tracing::error!(session = id, %error, "cannot note what became of the action");
    }
    true
}

/// Carries out a cancel action: the session's runs under way here stop at once, and its
/// current run is marked cancelled in the store, for the coordinator that runs it elsewhere
/// (it sees the mark within a second). A session with no current run is left as it is.
async fn cancel_runs(store: &dyn Store, id: &str, here: &[LocalRun]) {
    for run in here {
        run.cancel.cancel();
    }
    match retrying("cancelling a session", || store.request_cancel(id)).await {
        Ok(Some(run)) => tracing::info!(session = %id, %run, "cancel requested"),
        Ok(None) if !here.is_empty() => {
            tracing::info!(session = %id, "cancel requested before the run started")
        }
        Ok(None) => {
            tracing::info!(session = %id, "cancel of a session with no run under way: nothing changed")
        }
        Err(error) => tracing::error!(session = %id, %error, "cannot mark the session cancelled"),
    }
}
