//! Embedded mode: the coordinator and a few workers in one process over the in-memory Broker and
//! Store, or a state file store for durable runs (`agency run --state`). The same code runs
//! distributed; only the backends differ.

use crate::coordinator::{Coordinator, Durable, Progress};
use crate::executors::Registry;
use crate::worker::{Worker, WorkerOptions};
use events::{Broker, FileStore, MemoryBroker, MemoryStore, Store};
use expansion::Limits;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use taskgroup::{Rules, Session, SessionResult};
use tokio_util::sync::CancellationToken;

/// How an embedded engine runs: workers, their options, range size and limits.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Worker loops in the process.
    pub workers: usize,
    /// The options every worker loop runs with.
    pub worker: WorkerOptions,
    /// Instances per dispatched range.
    pub chunk: u64,
    /// Bounds on expansions, checked at validation and planning.
    pub limits: Limits,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            workers: 2,
            worker: WorkerOptions::default(),
            chunk: taskgroup::DEFAULT_CHUNK,
            limits: Limits::default(),
        }
    }
}

/// An engine in one process. Register custom executors before running.
#[derive(Debug)]
pub struct Engine {
    broker: Arc<MemoryBroker>,
    store: Backing,
    registry: Registry,
    options: EmbeddedOptions,
}

/// Where an engine keeps its state.
#[derive(Debug, Clone)]
enum Backing {
    Memory(Arc<MemoryStore>),
    /// The memory store journaled to a state file ([`FileStore`]).
    File(Arc<MemoryStore>),
}

/// What a state file holds of a session: see [`Engine::durable_run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableRun {
    /// The session's id.
    pub id: String,
    /// The run to start or resume (empty when finished).
    pub run: String,
    /// What will happen.
    pub start: DurableStart,
}

/// How [`Engine::run_durably`] goes about a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurableStart {
    /// The state file held nothing of it: it ran from the start.
    Started,
    /// The state file held an unfinished run of it, which went on from what was recorded.
    Resumed {
        /// The run resumed.
        run: String,
    },
    /// The state file holds its result already: nothing ran.
    Finished,
    /// The state file holds its result, which is not `completed`, and what failed is to run
    /// again: the successes recorded are reused, the rest is executed.
    Rerun,
}

impl Engine {
    /// An engine with the built-in executors and empty in-memory broker and store.
    pub fn new(options: EmbeddedOptions) -> Self {
        let broker = Arc::new(MemoryBroker::new());
        let registry = Registry::builtin(broker.clone());
        Self {
            broker,
            store: Backing::Memory(Arc::new(MemoryStore::new())),
            registry,
            options,
        }
    }

    /// An engine whose state lives in the state file at `path` (created when missing), written
    /// every `checkpoint`: see [`Engine::run_durably`].
    pub async fn with_state(
        options: EmbeddedOptions,
        path: &Path,
        checkpoint: Duration,
    ) -> crate::Result<Self> {
        let mut engine = Self::new(options);
        engine.store = Backing::File(Arc::new(FileStore::open(path, checkpoint).await?.store()));
        Ok(engine)
    }

    /// The executors, to register custom ones before running.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The in-memory broker the engine runs on (events emitted by tasks land there).
    pub fn broker(&self) -> Arc<MemoryBroker> {
        self.broker.clone()
    }

    /// The store the engine runs on.
    pub fn store(&self) -> Arc<dyn Store> {
        match &self.store {
            Backing::Memory(store) => store.clone(),
            Backing::File(store) => store.clone(),
        }
    }

    /// The in-memory store the engine runs on, unless it runs on a state file.
    pub fn memory(&self) -> Option<Arc<MemoryStore>> {
        match &self.store {
            Backing::Memory(store) => Some(store.clone()),
            Backing::File(_) => None,
        }
    }

    /// Validates a session document against this engine's executors and limits.
    pub fn validate(&self, text: &str) -> Result<Session, taskgroup::Error> {
        Session::from_json(text, &self.rules())
    }

    /// What sessions are validated against: this engine's limits and executor names.
    pub fn rules(&self) -> Rules {
        Rules {
            limits: self.options.limits,
            executors: Some(self.registry.names()),
        }
    }

    /// Runs a validated session to its final result.
    pub async fn run(
        &self,
        session: &Session,
        progress: &Progress,
        cancel: CancellationToken,
    ) -> crate::Result<SessionResult> {
        let id = session_id(session);
        self.with_workers(|coordinator| async move {
            coordinator.run(session, &id, progress, cancel).await
        })
        .await
    }

    /// What this engine's state file (`agency run --state`) holds of a validated session, and
    /// so how [`Engine::run_durably`] will go about it: resume an unfinished run (the process
    /// running it was killed), return the result it holds, or start. `document` is the session
    /// file as given: a run is resumed only for the same document. A session without an id
    /// takes the one the state file holds, if it holds one. With `retry_failed`, a session whose
    /// result is not `completed` is rerun ([`DurableStart::Rerun`]); a completed one is left as
    /// it is.
    pub async fn durable_run(
        &self,
        session: &Session,
        document: &[u8],
        retry_failed: bool,
    ) -> crate::Result<DurableRun> {
        let store = self.store();
        let id = match &session.spec.session_id {
            Some(id) => id.clone(),
            None => match store.sessions(1).await?.into_iter().next() {
                Some((id, _)) => id,
                None => uuid::Uuid::new_v4().to_string(),
            },
        };
        let current = store.current_run(&id).await?;
        // Finished: its result is stored (a run deletes the one before when it starts). What
        // did not complete keeps its working state, for a rerun.
        if let Some(result) = store.load_result(&id).await? {
            let completed =
                taskgroup::ResultStatus::of(&result) == Some(taskgroup::ResultStatus::Completed);
            if retry_failed && !completed {
                let kept = store.load_document(&id).await?;
                if kept.is_none_or(|(_, kept)| kept != document) {
                    return Err(crate::Error::OtherDocument { session: id });
                }
                let run = uuid::Uuid::new_v4().to_string();
                return Ok(DurableRun {
                    id,
                    run,
                    start: DurableStart::Rerun,
                });
            }
            return Ok(DurableRun {
                id,
                run: String::new(),
                start: DurableStart::Finished,
            });
        }
        let (run, start) = match current {
            Some(run) => {
                let same = store
                    .load_document(&id)
                    .await?
                    .is_some_and(|(kept_run, kept)| kept_run == run && kept == document);
                if !same {
                    return Err(crate::Error::OtherDocument { session: id });
                }
                (run.clone(), DurableStart::Resumed { run })
            }
            None => (uuid::Uuid::new_v4().to_string(), DurableStart::Started),
        };
        Ok(DurableRun { id, run, start })
    }

    /// Runs `session` as [`Engine::durable_run`] found: recorded instances of a resumed run
    /// are not executed again, and a finished session's stored result is returned without
    /// running anything.
    pub async fn run_durably(
        &self,
        session: &Session,
        found: &DurableRun,
        document: &[u8],
        progress: &Progress,
        cancel: CancellationToken,
    ) -> crate::Result<SessionResult> {
        if found.start == DurableStart::Finished {
            let stored = self.store().load_result(&found.id).await?;
            let stored = stored.ok_or_else(|| crate::Error::Corrupt {
                what: format!("the result of session {}", found.id),
                message: "gone from the state file".into(),
            })?;
            return crate::results::read_result(&found.id, stored);
        }
        let reused = match found.start {
            DurableStart::Rerun => Some(
                self.store()
                    .keep_successes(
                        &found.id,
                        &crate::coordinator::exit_handlers(session),
                        events::Fence::Open,
                    )
                    .await?,
            ),
            _ => None,
        };
        let durable = Durable {
            id: &found.id,
            run: &found.run,
            resume: found.start != DurableStart::Started,
            reused,
            document,
        };
        self.with_workers(|coordinator| async move {
            coordinator
                .run_durably(session, durable, progress, cancel)
                .await
        })
        .await
    }

    /// Runs `coordinate` with this engine's workers running beside it, and stops them after.
    async fn with_workers<'a, F, Fut>(&'a self, coordinate: F) -> crate::Result<SessionResult>
    where
        F: FnOnce(Coordinator) -> Fut,
        Fut: std::future::Future<Output = crate::Result<SessionResult>> + 'a,
    {
        let broker: Arc<dyn Broker> = self.broker.clone();
        let store = self.store();
        let shutdown = CancellationToken::new();
        let mut workers = Vec::new();
        // The session has ended when the workers stop: what they still run is of no use.
        let options = WorkerOptions {
            shutdown_grace: Duration::ZERO,
            ..self.options.worker.clone()
        };
        for _ in 0..self.options.workers.max(1) {
            let worker = Worker::new(
                broker.clone(),
                store.clone(),
                self.registry.clone(),
                options.clone(),
            );
            workers.push(tokio::spawn(worker.run(shutdown.clone())));
        }
        let coordinator =
            Coordinator::new(broker, store, self.options.limits).with_chunk(self.options.chunk);
        let result = coordinate(coordinator).await;
        shutdown.cancel();
        for worker in workers {
            worker.await??;
        }
        result
    }
}

/// The session's own id, or a fresh one.
pub fn session_id(session: &Session) -> String {
    session
        .spec
        .session_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Validates and runs a session document on a fresh embedded engine.
pub async fn run_session(text: &str, options: &EmbeddedOptions) -> crate::Result<SessionResult> {
    let engine = Engine::new(options.clone());
    let session = engine.validate(text)?;
    engine
        .run(&session, &Progress::default(), CancellationToken::new())
        .await
}
