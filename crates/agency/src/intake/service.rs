//! The coordinator service on `agency_action`: actions taken, runs started, offsets committed
//! once their runs end.

use super::{session_document, Action, ActionKind, ACTION_TOPIC, WITHDRAWN};
use crate::coordinator::{Coordinator, Progress};
use crate::dead_letter;
use crate::error::{Error, Result};
use crate::metrics::DeadLetter;
use crate::outage::{self, retrying};
use crate::results::{load_result, ActionNote};
use events::{Broker, Consumer, Fence, Message, Origin, Position, Store, Watermarks};
use futures_util::FutureExt as _;
use serde_json::Value;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use taskgroup::{Rules, Session, SessionResult};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What a session's task says when it ends: the consumer it came from, its action's position,
/// its id.
type Ended = (u64, Position, String);

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
    let mut intake = Intake {
        broker: broker.clone(),
        store,
        rules,
        coordinator,
        shutdown: shutdown.clone(),
        watermarks: Watermarks::default(),
        member: 0,
        running: HashMap::new(),
    };
    let mut sessions: JoinSet<Ended> = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(ended) = sessions.join_next() => intake.ended(ended?, consumer.as_mut()).await,
            message = outage::next_message(consumer.as_mut()) => match message {
                Ok(message) => {
                    if let Some(run) = intake.take(&message, consumer.as_mut()).await {
                        sessions.spawn(run);
                    }
                }
                Err(events::Error::LogLost { detail, .. }) => {
                    tracing::warn!(%detail, running = intake.running.len(), "the broker lost actions; joining the coordinator group again");
                    consumer = join().await?;
                    intake.rejoined();
                }
                Err(error) => return Err(error.into()),
            },
        }
    }
    // Sessions stop now and are left to be resumed; their actions stay uncommitted.
    while sessions.join_next().await.is_some() {}
    let _ = watching.await;
    Ok(())
}

/// What the service holds between actions.
struct Intake {
    broker: Arc<dyn Broker>,
    store: Arc<dyn Store>,
    rules: Rules,
    coordinator: Coordinator,
    shutdown: CancellationToken,
    /// What may be committed of each partition.
    watermarks: Watermarks,
    /// Which consumer an action came from: after the broker lost its log the coordinator joins
    /// again, and the old consumer's actions are carried out but never committed.
    member: u64,
    /// The runs this coordinator has under way, by session id: a cancel action reaches them at
    /// once (others, through the store, within a second), and a session submitted again while
    /// one runs is attached to it or refused. Every unfinished action of this coordinator's
    /// partitions is here (its offset stays uncommitted until its run ends), so this decides
    /// for every action of a session id, which its key keeps on one partition.
    running: HashMap<String, Vec<LocalRun>>,
}

impl Intake {
    /// The consumer was joined again: what the old one took is never committed.
    fn rejoined(&mut self) {
        self.watermarks = Watermarks::default();
        self.member += 1;
    }

    /// Commits what can be, now that the action at `position` is done with.
    async fn done(&mut self, position: &Position, consumer: &mut dyn Consumer) {
        if let Some(next) = self.watermarks.done(position) {
            outage::commit(consumer, &next).await;
        }
    }

    /// A session's run ended: forgotten, and its action committed (unless it came from a
    /// consumer left since).
    async fn ended(&mut self, (from, position, id): Ended, consumer: &mut dyn Consumer) {
        if let Some(runs) = self.running.get_mut(&id) {
            runs.retain(|run| run.origin != position.origin());
            if runs.is_empty() {
                self.running.remove(&id);
            }
        }
        if from == self.member {
            self.done(&position, consumer).await;
        }
    }

    /// Carries out one action; a session to run comes back as the task that runs it.
    async fn take(
        &mut self,
        message: &Message,
        consumer: &mut dyn Consumer,
    ) -> Option<impl std::future::Future<Output = Ended> + Send + 'static> {
        let position = Position::of(message);
        self.watermarks.taken(&position);
        let (broker, store) = (self.broker.as_ref(), self.store.as_ref());
        match accept(broker, store, &self.rules, message).await {
            Accepted::Run(id, session, document, rerun) => {
                let under_way = self.running.get(&id).and_then(|runs| runs.last());
                let attached = match under_way {
                    Some(under_way) => {
                        one_run_at_a_time(broker, store, message, &id, under_way, &document).await
                    }
                    None => false,
                };
                if !attached {
                    return Some(self.start(position, id, session, document, rerun));
                }
            }
            Accepted::Cancel(id, withdrawal) => {
                let here = self.running.get(&id).map_or(&[][..], Vec::as_slice);
                cancel_runs(store, &id, here).await;
                if let Some(mark) = withdrawal {
                    end_withdrawal(store, &id, &mark, here.is_empty(), &position).await;
                }
            }
            Accepted::Pause(id, paused) => {
                match retrying("pausing a session", || store.request_pause(&id, paused)).await {
                    Ok(Some(run)) => tracing::info!(session = %id, %run, paused, "pause requested"),
                    Ok(None) => {
                        tracing::info!(session = %id, "pause of a session with no run under way: nothing changed")
                    }
                    Err(error) => {
                        tracing::error!(session = %id, %error, "cannot mark the session paused")
                    }
                }
            }
            Accepted::Nothing => {}
        }
        self.done(&position, consumer).await;
        None
    }

    /// Notes the run as under way here, and gives the task that runs it.
    fn start(
        &mut self,
        position: Position,
        id: String,
        session: Box<Session>,
        document: Vec<u8>,
        rerun: bool,
    ) -> impl std::future::Future<Output = Ended> + Send + 'static {
        let coordinator = self.coordinator.clone();
        let stop = self.shutdown.child_token();
        let cancel = CancellationToken::new();
        let progress = Arc::new(Progress::default());
        self.running.entry(id.clone()).or_default().push(LocalRun {
            origin: position.origin(),
            cancel: cancel.clone(),
            document: document.clone(),
            progress: progress.clone(),
        });
        let member = self.member;
        async move {
            let origin = position.origin();
            tracing::info!(session = %id, %origin, "session taken");
            let running = coordinator.run_action(
                &session, &document, &id, &origin, rerun, &progress, stop, cancel,
            );
            match AssertUnwindSafe(running).catch_unwind().await {
                Ok(Ok(Some(result))) => {
                    tracing::info!(session = %id, status = %result.status, "session finished")
                }
                Ok(Ok(None)) => {
                    tracing::info!(session = %id, "action delivered again; its session was done")
                }
                Ok(Err(error)) if error.is_handed_over() => {
                    tracing::info!(session = %id, "{error}")
                }
                Ok(Err(error)) => tracing::error!(session = %id, %error, "session failed"),
                Err(_) => tracing::error!(session = %id, "session task panicked"),
            }
            (member, position, id)
        }
    }
}

/// What an intake message asks of the coordinator.
enum Accepted {
    /// Run this valid session (a rerun of what failed when the flag says so).
    Run(String, Box<Session>, Vec<u8>, bool),
    /// Cancel this session's run; end its withdrawal of this mark, if the cancel carries one.
    Cancel(String, Option<String>),
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
        let withdrawal = action.data.get(WITHDRAWN).and_then(Value::as_str);
        return match action.key {
            Some(id) if taskgroup::session_id_problem(&id).is_none() => match kind {
                ActionKind::Pause => Accepted::Pause(id, true),
                ActionKind::Resume => Accepted::Pause(id, false),
                _ => Accepted::Cancel(id, withdrawal.map(str::to_string)),
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
            let reason = reason.to_string();
            dead_letter::send(broker, message, DeadLetter::InvalidSession, &reason).await;
            return Accepted::Nothing;
        }
    };
    if withdrawn(store, &id, message).await {
        return Accepted::Nothing;
    }
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
        ActionNote::Attached {
            run: under_way.origin.to_string(),
        }
    } else {
        let reason = Error::Running {
            session: id.to_string(),
            run: under_way.origin.to_string(),
        }
        .to_string();
        tracing::warn!(session = id, %origin, "{reason}");
        dead_letter::send(broker, message, DeadLetter::Running, &reason).await;
        ActionNote::Refused { reason }
    };
    let note = note.encode();
    if let Err(error) = retrying("noting what became of an action", || {
        store.note_action(id, &origin, &note)
    })
    .await
    {
        tracing::error!(session = id, %error, "cannot note what became of the action");
    }
    true
}

/// Whether the submission `message` of session `id` was withdrawn (cancelled while pending,
/// [`client::cancel`](crate::client::cancel)): then it runs nothing, and its result says
/// `cancelled`. A store that cannot tell lets it run (the cancel action that follows still
/// cancels the run).
async fn withdrawn(store: &dyn Store, id: &str, message: &Message) -> bool {
    match retrying("reading a withdrawal", || store.withdrawal(id)).await {
        Ok(Some(mark)) => {
            tracing::info!(session = %id, %mark, "submission withdrawn before it was taken: not run");
            let run = Position::of(message).origin().to_string();
            cancelled_unrun(store, id, run).await;
            true
        }
        Ok(None) => false,
        Err(error) => {
            tracing::error!(session = %id, %error, "cannot read whether the session was withdrawn");
            false
        }
    }
}

/// Ends the withdrawal `mark` of session `id` (its cancel action, at `position`, comes after
/// every submission it withdrew). A session with no run under way (`idle` here, none current)
/// and no result had nothing pending after all (its submission was lost): its result says
/// `cancelled` too, for whoever waits for it.
async fn end_withdrawal(store: &dyn Store, id: &str, mark: &str, idle: bool, position: &Position) {
    if let Err(error) = retrying("ending a withdrawal", || store.end_withdrawal(id, mark)).await {
        tracing::error!(session = %id, %error, "cannot end the withdrawal");
    }
    let current = retrying("reading the current run", || store.current_run(id)).await;
    let result = crate::results::load_result(store, id).await;
    if idle && matches!(current, Ok(None)) && matches!(result, Ok(None)) {
        cancelled_unrun(store, id, position.origin().to_string()).await;
    }
}

/// Stores the `cancelled` result of a session that never ran, naming `run`.
async fn cancelled_unrun(store: &dyn Store, id: &str, run: String) {
    let why = "cancelled before a coordinator took it: nothing ran".to_string();
    let mut result = SessionResult::cancelled(id, vec![why]);
    result.run = Some(run);
    if let Err(error) = crate::coordinator::publish_result(store, &result, Fence::Open).await {
        tracing::error!(session = %id, %error, "cannot publish the cancelled result");
    }
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
