//! The actions a client produces to `agency_action`: submitting a session (attaching to its run
//! under way, or replacing it), cancelling, pausing and resuming it, and rerunning what failed.
//! The coordinator's side of them is [`crate::intake`].

use crate::error::{CannotRerun, Error, Result};
use crate::intake::{session_document, Action, ActionKind, ACTION_TOPIC, WITHDRAWN};
use crate::outage::retrying;
use crate::results::{load_result, wait_result};
use events::{Broker, Fence, Origin, Store};
use serde_json::{Map, Value};
use std::time::Duration;
use taskgroup::SessionResult;

/// What [`cancel`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelAnswer {
    /// The session's run `run` was under way; the cancel is sent and its result will say
    /// `cancelled` (unless it finished first).
    Sent {
        /// The run the cancel stops.
        run: String,
    },
    /// The session had finished already: nothing changed.
    Finished(Box<SessionResult>),
    /// The session was submitted and no coordinator had taken it yet: it is withdrawn and will
    /// not run; its result will say `cancelled`.
    Withdrawn,
    /// No run of the session is under way, none is pending, and none left a result: nothing
    /// changed.
    Unknown,
}

/// Cancels session `id`, in whatever state it is: when a run of it is under way, produces
/// `{"key": id, "action": "cancel"}` to `agency_action`; when it is pending (submitted, not
/// taken yet), withdraws it first ([`Documents::withdraw`](events::Documents::withdraw)), so
/// that the coordinator taking its submission runs nothing, and produces the cancel with the
/// withdrawal's mark (`"data": {"withdrawn": MARK}`), which ends the withdrawal for later
/// submissions. A finished session is left as it is.
pub async fn cancel(broker: &dyn Broker, store: &dyn Store, id: &str) -> Result<CancelAnswer> {
    let answer = control_run(broker, store, id, ActionKind::Cancel).await?;
    if answer != CancelAnswer::Unknown || !pending(store, id).await? {
        return Ok(answer);
    }
    let mark = uuid::Uuid::new_v4().simple().to_string();
    retrying("withdrawing the session", || store.withdraw(id, &mark)).await?;
    let action = Action {
        key: Some(id.to_string()),
        action: ActionKind::Cancel,
        data: serde_json::json!({ WITHDRAWN: mark }),
        context: Map::new(),
    };
    broker
        .publish(ACTION_TOPIC, id, events::encode("the action", &action)?)
        .await?;
    Ok(CancelAnswer::Withdrawn)
}

/// Whether session `id` is listed `pending`: submitted, and no coordinator has taken it.
async fn pending(store: &dyn Store, id: &str) -> Result<bool> {
    let state = retrying("reading the live state", || store.load_state(id)).await?;
    Ok(state
        .and_then(|state| serde_json::from_slice::<taskgroup::LiveState>(&state).ok())
        .is_some_and(|state| state.status == taskgroup::LiveStatus::Pending))
}

/// Pauses session `id`'s run under way (`paused`), or resumes it: produces a `pause` (or
/// `resume`) action; the coordinator that takes it marks the run, and the coordinator running
/// it sees the mark within a second. What is answered is as for [`cancel`].
pub async fn pause(
    broker: &dyn Broker,
    store: &dyn Store,
    id: &str,
    paused: bool,
) -> Result<CancelAnswer> {
    let kind = if paused {
        ActionKind::Pause
    } else {
        ActionKind::Resume
    };
    control_run(broker, store, id, kind).await
}

/// Produces the action `kind` for session `id`'s run under way: one that is current and has no
/// result of its own yet.
async fn control_run(
    broker: &dyn Broker,
    store: &dyn Store,
    id: &str,
    kind: ActionKind,
) -> Result<CancelAnswer> {
    let current = retrying("reading the current run", || store.current_run(id)).await?;
    let result = load_result(store, id).await?;
    // A session that did not complete keeps its current run with its state, for a rerun.
    let finished = |run: &str| {
        result
            .as_ref()
            .is_some_and(|result| result.run.as_deref().is_none_or(|theirs| theirs == run))
    };
    if let Some(run) = current.filter(|run| !finished(run)) {
        let action = Action {
            key: Some(id.to_string()),
            action: kind,
            data: Value::Null,
            context: Map::new(),
        };
        let encoded = events::encode("the action", &action)?;
        broker.publish(ACTION_TOPIC, id, encoded).await?;
        return Ok(CancelAnswer::Sent { run });
    }
    Ok(match result {
        Some(result) => CancelAnswer::Finished(Box::new(result)),
        None => CancelAnswer::Unknown,
    })
}

/// A session produced to `agency_action`, or attached to its run under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The session's id.
    pub id: String,
    /// The run whose result answers this submission: the one it starts (the action's
    /// position, which its result names, [`SessionResult::run`]), or the one under way it
    /// attached to.
    pub run: Origin,
    /// Whether the same document was running under this id already: nothing was produced, and
    /// `run` is that run.
    pub attached: bool,
}

/// What [`submit_with`] does when a run of the session id is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resubmit {
    /// Attach to it when the document is the same; refuse another document
    /// ([`Error::Running`]).
    #[default]
    Attach,
    /// Cancel it, wait for its result, then submit this document.
    Replace,
}

/// How long [`Resubmit::Replace`] waits for the cancelled run's result.
const REPLACE_PATIENCE: Duration = Duration::from_secs(60);

/// Submits a session with [`Resubmit::Attach`]: see [`submit_with`].
pub async fn submit(broker: &dyn Broker, store: &dyn Store, document: Value) -> Result<Submitted> {
    submit_with(broker, store, document, Resubmit::Attach).await
}

/// Produces a session to `agency_action`, one run per session id at a time: when a run of the
/// id is under way, the same document attaches to it (nothing is produced) and another is
/// refused, or replaces it with [`Resubmit::Replace`]. A result stored for the same id by an
/// earlier run is deleted first, and the result of this run names it, so whoever waits for
/// this run's result gets neither an earlier nor a later run's.
pub async fn submit_with(
    broker: &dyn Broker,
    store: &dyn Store,
    document: Value,
    resubmit: Resubmit,
) -> Result<Submitted> {
    let action = Action {
        key: None,
        action: ActionKind::Initialize,
        data: document,
        context: Map::new(),
    };
    let (id, data) = session_document(action)?;
    let action = Action {
        key: Some(id.clone()),
        action: ActionKind::Initialize,
        data,
        context: Map::new(),
    };
    let encoded = events::encode("the action", &action)?;
    // Refused before anything changes: an earlier result stays.
    if encoded.len() > events::MAX_MESSAGE_BYTES {
        return Err(Error::TooLarge {
            session: id,
            bytes: encoded.len(),
            limit: events::MAX_MESSAGE_BYTES,
        });
    }
    if let Some((run, running)) = under_way(store, &id).await? {
        let same = serde_json::from_slice::<Value>(&running).ok().as_ref() == Some(&action.data);
        match resubmit {
            Resubmit::Attach if same => {
                let run = run.parse::<Origin>().map_err(|error| Error::Corrupt {
                    what: format!("the current run of session {id}"),
                    message: error.to_string(),
                })?;
                return Ok(Submitted {
                    id,
                    run,
                    attached: true,
                });
            }
            Resubmit::Attach => return Err(Error::Running { session: id, run }),
            Resubmit::Replace => {
                if let CancelAnswer::Sent { run } = cancel(broker, store, &id).await? {
                    let run: Option<Origin> = run.parse().ok();
                    wait_result(store, &id, run.as_ref(), Some(REPLACE_PATIENCE)).await?;
                }
            }
        }
    }
    retrying("deleting an earlier result", || {
        store.delete_result(&id, Fence::Open)
    })
    .await?;
    produce(broker, store, id, encoded).await
}

/// Lists session `id` as pending and produces its action to `agency_action`.
async fn produce(
    broker: &dyn Broker,
    store: &dyn Store,
    id: String,
    encoded: Vec<u8>,
) -> Result<Submitted> {
    // Listed as `pending` until a coordinator runs it (never over a run's own state), before
    // producing, so the coordinator that takes it finds when it was submitted.
    let submitted_at = retrying("reading the store's clock", || store.now_ms()).await?;
    let mut pending = taskgroup::LiveState::pending(&id, None);
    pending.submitted_at = Some(taskgroup::iso8601(submitted_at));
    let pending = events::encode("the pending state", &pending)?;
    retrying("listing the session as pending", || {
        store.save_state(&id, &pending, false, Fence::Open)
    })
    .await?;
    let position = broker.publish(ACTION_TOPIC, &id, encoded).await?;
    Ok(Submitted {
        id,
        run: position.origin(),
        attached: false,
    })
}

/// Reruns what failed of session `id`, which ended without completing: produces a `rerun`
/// action with the document its last run ran (kept with its outcomes), so the coordinator that
/// takes it reuses every recorded success and executes only what failed or never finished.
/// Refused, with why, while a run is under way, when the session completed, and when its
/// outcomes are no longer kept (they expire a week after its last run).
pub async fn rerun(broker: &dyn Broker, store: &dyn Store, id: &str) -> Result<Submitted> {
    if let Some((run, _)) = under_way(store, id).await? {
        return Err(Error::Running {
            session: id.to_string(),
            run,
        });
    }
    let Some(result) = load_result(store, id).await? else {
        return Err(cannot_rerun(id, CannotRerun::NoResult));
    };
    if result.completed() {
        return Err(cannot_rerun(id, CannotRerun::Completed));
    }
    let Some((_, document)) =
        retrying("reading the session document", || store.load_document(id)).await?
    else {
        return Err(cannot_rerun(id, CannotRerun::NothingKept(result.status)));
    };
    let data: Value = serde_json::from_slice(&document).map_err(|error| Error::Corrupt {
        what: format!("the kept document of session {id}"),
        message: error.to_string(),
    })?;
    let action = Action {
        key: Some(id.to_string()),
        action: ActionKind::Rerun,
        data,
        context: Map::new(),
    };
    let encoded = events::encode("the action", &action)?;
    produce(broker, store, id.to_string(), encoded).await
}

/// The run of session `id` under way and the document it runs, if one is: a current run
/// whose document is kept and which has no result yet.
async fn under_way(store: &dyn Store, id: &str) -> Result<Option<(String, Vec<u8>)>> {
    let Some(current) = retrying("reading the current run", || store.current_run(id)).await? else {
        return Ok(None);
    };
    let Some((run, document)) =
        retrying("reading the session document", || store.load_document(id)).await?
    else {
        return Ok(None);
    };
    if run != current {
        return Ok(None);
    }
    // Finished, its coordinator only deleting its state.
    if let Some(result) = load_result(store, id).await? {
        if result.run.as_deref() == Some(run.as_str()) {
            return Ok(None);
        }
    }
    Ok(Some((run, document)))
}

fn cannot_rerun(session: &str, why: CannotRerun) -> Error {
    Error::CannotRerun {
        session: session.to_string(),
        why,
    }
}
