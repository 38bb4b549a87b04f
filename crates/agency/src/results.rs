//! Results read back from the store: a session's result ([`load_result`], and [`ResultWaiter`]
//! waiting for one), and a task's results a page at a time: how they are combined without
//! holding them all, how a worker reads the slice of results kept by reference that its range
//! maps over, and how `agency results` pages them.
//!
//! A `separate` task over its `inline_results` limit keeps its results in the store (its
//! outcomes, marked with [`events::Outcomes::keep_results`], outliving the session's working state
//! for as long as its result) and the context holds `{"$results": {"group", "task", "count"}}`
//! ([`expansion::ResultsRef`]).

use crate::error::{Error, KeptResults, Result};
use crate::outage::{retrying, retrying_for};
use events::{Origin, Outcome, Status, Store, TaskRef, RESULTS_CHANNEL};
use expansion::ResultsRef;
use serde_json::Value;
use std::ops::Range;
use std::time::Duration;
use taskgroup::SessionResult;

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

    /// The result of session `id`, of run `run` when given (see [`Submitted::run`](crate::client::Submitted::run)); other
    /// sessions' and earlier runs' results are skipped, and a later run's is an error
    /// ([`Error::Superseded`]).
    pub async fn wait(
        &mut self,
        store: &dyn Store,
        id: &str,
        run: Option<&Origin>,
        timeout: Option<Duration>,
    ) -> Result<SessionResult> {
        let mut run = run.cloned();
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
                            if let Some(result) = settled(store, id, &mut run).await? {
                                return Ok(result);
                            }
                        }
                    }
                    // Lost with the connection: subscribe again, then read what was published
                    // meanwhile from the store.
                    Err(error) if error.is_retryable() => {
                        tracing::warn!(%error, "the results subscription dropped; subscribing again");
                        self.results = retrying("subscribing to results", || store.subscribe(RESULTS_CHANNEL)).await?;
                        if let Some(result) = settled(store, id, &mut run).await? {
                            return Ok(result);
                        }
                    }
                    Err(error) => return Err(error.into()),
                },
                _ = poll.tick() => {
                    if let Some(result) = settled(store, id, &mut run).await? {
                        return Ok(result);
                    }
                }
                () = crate::deadline::sleep_until(deadline) => {
                    return Err(Error::NoResult { session: id.to_string(), seconds: timeout.unwrap_or_default().as_secs() });
                }
            }
        }
    }
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

/// What became of an action that started no run, as the intake notes it in the store for
/// whoever waits for that action (`agency:actions:{S}`, also read by the Python client): the
/// stored form is `attached:<run>` or `refused:<reason>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionNote {
    /// The same document was running already: the action is answered by that run.
    Attached {
        /// The run under way.
        run: String,
    },
    /// Another document was running: the action was refused, with the reason.
    Refused {
        /// Why.
        reason: String,
    },
}

impl ActionNote {
    /// The note as it is stored.
    pub fn encode(&self) -> String {
        match self {
            Self::Attached { run } => format!("attached:{run}"),
            Self::Refused { reason } => format!("refused:{reason}"),
        }
    }

    /// A stored note; `None` for one this version does not know.
    pub fn decode(stored: &str) -> Option<Self> {
        match stored.split_once(':')? {
            ("attached", run) => Some(Self::Attached {
                run: run.to_string(),
            }),
            ("refused", reason) => Some(Self::Refused {
                reason: reason.to_string(),
            }),
            _ => None,
        }
    }
}

/// The stored result if it answers a wait for run `run` of session `id` (see [`answers`]).
/// An action that started no run has a note saying why: one attached to the run under way is
/// answered by that run's result (`run` becomes it); a refused one ends the wait with the
/// reason.
async fn settled(
    store: &dyn Store,
    id: &str,
    run: &mut Option<Origin>,
) -> Result<Option<SessionResult>> {
    if let Some(waited) = run.clone() {
        let waited = waited.to_string();
        let note = retrying("reading what became of the action", || {
            store.action_note(id, &waited)
        })
        .await?;
        match note.as_deref().and_then(ActionNote::decode) {
            Some(ActionNote::Attached { run: to }) => *run = to.parse().ok(),
            Some(ActionNote::Refused { reason }) => {
                return Err(Error::Refused {
                    session: id.to_string(),
                    reason,
                })
            }
            None => {}
        }
    }
    match load_result(store, id).await? {
        Some(result) => answers(id, run.as_ref(), result),
        None => Ok(None),
    }
}

/// Results larger than this (as JSON) are stored by reference, not inside their outcome.
pub const BLOB_THRESHOLD: usize = 64 * 1024;

/// Results read per store call.
pub const PAGE: u64 = 65_536;

/// Ranges of at most [`PAGE`] positions covering `range`.
pub fn pages(range: Range<u64>) -> impl Iterator<Item = Range<u64>> {
    let end = range.end;
    (range.start..end)
        .step_by(PAGE as usize)
        .map(move |start| start..(start + PAGE).min(end))
}

/// The results of `task`'s instances in `range`, in order: `None` where an instance has no
/// success. Results stored as blobs are read from them. An outage is waited out for `patience`
/// (for ever when `None`).
pub async fn page(
    store: &dyn Store,
    session: &str,
    task: TaskRef,
    range: Range<u64>,
    patience: Option<Duration>,
) -> Result<Vec<Option<Value>>> {
    let outcomes = retrying_for("reading results", patience, || {
        store.outcomes(session, task, range.clone())
    })
    .await?;
    let mut results = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        results.push(match outcome.map(|o| o.status) {
            Some(Status::Succeeded(value) | Status::Cached(value)) => Some(value),
            Some(Status::Stored(name)) => Some(blob(store, session, task, &name, patience).await?),
            _ => None,
        });
    }
    Ok(results)
}

/// A result stored as blob `name`.
async fn blob(
    store: &dyn Store,
    session: &str,
    task: TaskRef,
    name: &str,
    patience: Option<Duration>,
) -> Result<Value> {
    let what = || format!("result {name} of group {} task {}", task.group, task.task);
    let bytes = retrying_for("reading a result", patience, || {
        store.load_blob(session, name)
    })
    .await?
    .ok_or_else(|| Error::Corrupt {
        what: what(),
        message: "missing from the store".into(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
        what: what(),
        message: e.to_string(),
    })
}

/// A task's results kept by reference, found from a session's result or its running context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The reference the context holds.
    pub reference: ResultsRef,
    /// Where the task sits in its session.
    pub task: TaskRef,
}

impl Kept {
    /// The results at positions `range`, which must lie within the task's results: `null` where
    /// an instance has none.
    pub async fn page(
        &self,
        store: &dyn Store,
        session: &str,
        range: Range<u64>,
    ) -> Result<Vec<Value>> {
        let count = self.reference.count;
        if range.start > range.end || range.end > count {
            return Err(Error::from(KeptResults::OutOfRange {
                task: self.reference.task.clone(),
                start: range.start,
                end: range.end,
                count,
            }));
        }
        let read = page(store, session, self.task, range, None).await?;
        Ok(read.into_iter().map(Option::unwrap_or_default).collect())
    }
}

/// Where task `task` of group `group` sits in a session, from its result (which lists every
/// group and task in the session's order).
pub fn position(result: &SessionResult, group: &str, task: &str) -> Option<TaskRef> {
    let g = result.groups.get_index_of(group)?;
    let t = result.groups[g].tasks.get_index_of(task)?;
    Some(TaskRef { group: g, task: t })
}

/// Writes `result` as one line of JSON to `out`, a field at a time, with every context value
/// that is a reference to kept results written out as the list of them, read a page at a time:
/// the printed result is whole, and never held whole.
pub async fn write_result(
    store: &dyn Store,
    result: &SessionResult,
    out: &mut impl std::io::Write,
) -> Result<()> {
    let io = Error::Output;
    let json = |error: serde_json::Error| Error::Output(error.into());
    // Every field but the context, in the result's order.
    let mut fields = serde_json::to_value(result.without_context()).map_err(json)?;
    let Some(fields) = fields.as_object_mut() else {
        return Err(Error::Corrupt {
            what: "the result".into(),
            message: "not a JSON object".into(),
        });
    };
    out.write_all(b"{").map_err(io)?;
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.write_all(b",").map_err(io)?;
        }
        serde_json::to_writer(&mut *out, name).map_err(json)?;
        out.write_all(b":").map_err(io)?;
        if name != "context" {
            serde_json::to_writer(&mut *out, value).map_err(json)?;
            continue;
        }
        out.write_all(b"{").map_err(io)?;
        for (j, (key, value)) in result.context.iter().enumerate() {
            if j > 0 {
                out.write_all(b",").map_err(io)?;
            }
            serde_json::to_writer(&mut *out, key).map_err(json)?;
            out.write_all(b":").map_err(io)?;
            let kept = ResultsRef::from_value(value).and_then(|reference| {
                let task = position(result, &reference.group, &reference.task)?;
                Some((reference, task))
            });
            match kept {
                None => serde_json::to_writer(&mut *out, value).map_err(json)?,
                Some((reference, task)) => {
                    out.write_all(b"[").map_err(io)?;
                    for range in pages(0..reference.count) {
                        let first = range.start == 0;
                        let page = page(store, &result.session_id, task, range, None).await?;
                        for (k, value) in page.into_iter().enumerate() {
                            if !(first && k == 0) {
                                out.write_all(b",").map_err(io)?;
                            }
                            serde_json::to_writer(&mut *out, &value.unwrap_or_default())
                                .map_err(json)?;
                        }
                    }
                    out.write_all(b"]").map_err(io)?;
                }
            }
        }
        out.write_all(b"}").map_err(io)?;
    }
    out.write_all(b"}\n").map_err(io)?;
    out.flush().map_err(io)
}

/// Whether any context value of `result` is a reference to kept results.
pub fn has_references(result: &SessionResult) -> bool {
    result
        .context
        .values()
        .any(|value| ResultsRef::from_value(value).is_some())
}

/// Task `task`'s results kept by reference in session `session` (`task` is `TASK` or
/// `GROUP.TASK`): found in its result once it has one, else in its running context (the
/// task's place then read from its document). An error says why there are none.
pub async fn kept(store: &dyn Store, session: &str, task: &str) -> Result<Kept> {
    let (group, task) = match task.split_once('.') {
        Some((group, task)) => (Some(group), task),
        None => (None, task),
    };
    let wanted = |reference: &ResultsRef| {
        reference.task == task && group.is_none_or(|group| reference.group == group)
    };
    let named = match group {
        Some(group) => format!("task `{task}` of group `{group}`"),
        None => format!("task `{task}`"),
    };
    let found = load_result(store, session).await?;
    let (context, result) = match found {
        Some(result) => (result.context.clone(), Some(result)),
        None => {
            match retrying_for("reading the context", None, || store.load_context(session)).await? {
                Some(context) => (context, None),
                None => {
                    return Err(Error::UnknownSession {
                        session: session.to_string(),
                    })
                }
            }
        }
    };
    // In the context (a `separate` task over its limit), or in a task summary of the result
    // (a task cut short with more instances than its limit).
    let summaries = result
        .iter()
        .flat_map(|result| result.groups.values())
        .flat_map(|group| group.tasks.values())
        .filter_map(|task| task.results_kept.as_ref());
    let references: Vec<ResultsRef> = context
        .values()
        .chain(summaries)
        .filter_map(ResultsRef::from_value)
        .filter(|reference| wanted(reference))
        .collect();
    let reference = match references.as_slice() {
        [one] => one.clone(),
        [] => {
            let state = if result.is_some() {
                "its result"
            } else {
                "its context so far"
            };
            return Err(Error::from(KeptResults::NoneKept {
                session: session.to_string(),
                named,
                state,
            }));
        }
        several => {
            let groups: Vec<&str> = several.iter().map(|r| r.group.as_str()).collect();
            return Err(Error::from(KeptResults::Ambiguous {
                session: session.to_string(),
                named,
                groups: groups.join(", "),
            }));
        }
    };
    let position = match &result {
        Some(result) => position(result, &reference.group, &reference.task),
        None => {
            let document = retrying_for("reading the document", None, || {
                store.load_document(session)
            })
            .await?;
            document
                .and_then(|(_, bytes)| String::from_utf8(bytes).ok())
                .and_then(|text| taskgroup::SessionSpec::parse(&text).ok())
                .and_then(|spec| spec.task_position(&reference.group, &reference.task))
                .map(|(group, task)| TaskRef { group, task })
        }
    };
    let task = position.ok_or_else(|| Error::Corrupt {
        what: format!("session {session}"),
        message: format!(
            "its context refers to the results of task `{}` of group `{}`, which it does not list",
            reference.task, reference.group
        ),
    })?;
    Ok(Kept { reference, task })
}

/// Moves a success larger than [`BLOB_THRESHOLD`] out of its outcome into a blob of the
/// session, leaving the blob's name (`group:task:instance:attempt`) in its place. Workers and
/// agents' reports store their results through it.
pub(crate) async fn blob_if_large(
    store: &(impl events::Results + ?Sized),
    session: &str,
    task: TaskRef,
    outcome: &mut Outcome,
) -> crate::Result<()> {
    let Status::Succeeded(value) = &outcome.status else {
        return Ok(());
    };
    if expansion::json_len(value) <= BLOB_THRESHOLD {
        return Ok(());
    }
    let name = format!(
        "{}:{}:{}:{}",
        task.group, task.task, outcome.instance, outcome.attempt
    );
    let bytes = events::encode("a large result", value)?;
    retrying("storing a large result", || {
        store.save_blob(session, &name, bytes.clone())
    })
    .await?;
    outcome.status = Status::Stored(name);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ActionNote;

    #[test]
    fn an_action_note_reads_back_as_written() {
        for note in [
            ActionNote::Attached {
                run: "agency_action/3/17".into(),
            },
            ActionNote::Refused {
                reason: "session s is running: cancel it first".into(),
            },
        ] {
            assert_eq!(ActionNote::decode(&note.encode()), Some(note));
        }
        assert_eq!(ActionNote::decode("shrugged"), None);
    }
}
