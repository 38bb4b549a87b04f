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

mod service;

pub use service::run_coordinator;

use crate::error::BadAction;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Where sessions are submitted.
pub const ACTION_TOPIC: &str = "agency_action";
/// The field of a cancel action's `data` naming the withdrawal it ends: a session cancelled
/// while pending ([`crate::client::cancel`]).
pub const WITHDRAWN: &str = "withdrawn";
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
pub fn session_document(action: Action) -> std::result::Result<(String, Value), BadAction> {
    if !matches!(action.action, ActionKind::Initialize | ActionKind::Rerun) {
        return Err(BadAction::NoSession);
    }
    let Value::Object(mut data) = action.data else {
        return Err(BadAction::DataNotObject);
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
        return Err(BadAction::SessionId(problem));
    }
    if !action.context.is_empty() {
        let context = data.entry("context").or_insert_with(|| json!({}));
        let Value::Object(context) = context else {
            return Err(BadAction::ContextNotObject);
        };
        context.extend(action.context);
    }
    data.insert("session_id".into(), Value::from(id.clone()));
    Ok((id, Value::Object(data)))
}
