//! Embedded mode: the coordinator and a few workers in one process over the in-memory Broker and
//! Store. The same code runs distributed; only the backends differ.

use crate::coordinator::{Coordinator, Progress};
use crate::executors::Registry;
use crate::worker::{Worker, WorkerOptions};
use events::{Broker, MemoryBroker, MemoryStore, Store};
use expansion::Limits;
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
    store: Arc<MemoryStore>,
    registry: Registry,
    options: EmbeddedOptions,
}

impl Engine {
    /// An engine with the built-in executors and empty in-memory broker and store.
    pub fn new(options: EmbeddedOptions) -> Self {
        let broker = Arc::new(MemoryBroker::new());
        let registry = Registry::builtin(broker.clone());
        Self {
            broker,
            store: Arc::new(MemoryStore::new()),
            registry,
            options,
        }
    }

    /// The executors, to register custom ones before running.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The in-memory broker the engine runs on (events emitted by tasks land there).
    pub fn broker(&self) -> Arc<MemoryBroker> {
        self.broker.clone()
    }

    /// The in-memory store the engine runs on.
    pub fn store(&self) -> Arc<MemoryStore> {
        self.store.clone()
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
        let broker: Arc<dyn Broker> = self.broker.clone();
        let store: Arc<dyn Store> = self.store.clone();
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
        let id = session_id(session);
        let coordinator =
            Coordinator::new(broker, store, self.options.limits).with_chunk(self.options.chunk);
        let result = coordinator.run(session, &id, progress, cancel).await;
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
