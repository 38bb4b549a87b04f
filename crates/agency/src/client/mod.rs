//! The Rust client of a deployment: everything `agency submit`, `cancel`, `status`, `watch`,
//! `sessions`, `health` and `executors` do, as calls (`docs/control.md`). The Python client
//! (`clients/python`) has the same calls.
//!
//! ```
//! # tokio::runtime::Runtime::new().expect("runtime").block_on(async {
//! use agency::client::{Client, Status};
//! use agency::{intake, Registry, Worker, WorkerOptions};
//! use events::{MemoryBroker, MemoryStore};
//! use serde_json::json;
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tokio_util::sync::CancellationToken;
//!
//! // A deployment in one process, over the in-memory broker and store: a coordinator and a worker.
//! let (broker, store) = (Arc::new(MemoryBroker::new()), Arc::new(MemoryStore::new()));
//! let stop = CancellationToken::new();
//! let rules = taskgroup::Rules::default();
//! tokio::spawn(intake::run_coordinator(broker.clone(), store.clone(), rules, "coordinators", 4096, stop.clone()));
//! let worker = Worker::new(broker.clone(), store.clone(), Registry::builtin(broker.clone()), WorkerOptions::default());
//! tokio::spawn(worker.run(stop.clone()));
//!
//! let client = Client::new(broker, store, "");
//! let submitted = client.submit_task("echo", json!({"hello": "world"}), Default::default()).await?;
//! let result = client.wait(&submitted, Some(Duration::from_secs(30))).await?;
//! assert!(result.completed());
//! assert_eq!(result.context["task"], json!({"hello": "world"}));
//! assert!(matches!(client.status(&submitted.id).await?, Status::Finished(_)));
//!
//! let steps = vec![json!({"executor": "echo", "input": 1}), json!({"executor": "echo", "input": 2})];
//! let submitted = client.submit_workflow(steps, true).await?;
//! let mut updates = Vec::new();
//! let result = client.monitor_with(&submitted.id, |status| updates.push(status.clone())).await?;
//! assert_eq!(result.context["step2"], json!(2));
//! assert!(matches!(updates.last(), Some(Status::Finished(_))));
//! stop.cancel();
//! # Ok::<(), agency::Error>(())
//! # }).expect("the example runs");
//! ```

pub mod actions;
mod follow;
mod listing;

#[cfg(all(feature = "redis", feature = "kafka"))]
use crate::connect;
use crate::error::{Error, Result};
use crate::health::{self, ExecutorInfo, Health};
use crate::outage::retrying;
use crate::results;
pub use actions::{cancel, pause, rerun, submit, submit_with, CancelAnswer, Resubmit, Submitted};
use events::{Broker, Origin, Store};
pub use follow::follow;
use futures_util::Stream;
pub use listing::{sessions, sessions_read, Listed, SessionStatus};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;
use taskgroup::{LiveState, SessionResult};

/// Where a session is: not ended (pending or running, with its live state), or ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Pending or running.
    Live(Box<LiveState>),
    /// Its result.
    Finished(Box<SessionResult>),
}

/// A client of one deployment.
#[derive(Clone)]
pub struct Client {
    broker: Arc<dyn Broker>,
    store: Arc<dyn Store>,
    namespace: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client over `broker` (already namespaced, see [`events::Namespaced`]) and `store`, of
    /// deployment `namespace` (whose members [`Client::health`] looks at).
    pub fn new(broker: Arc<dyn Broker>, store: Arc<dyn Store>, namespace: &str) -> Self {
        Self {
            broker,
            store,
            namespace: namespace.to_string(),
        }
    }

    /// Connects to Kafka and Redis (retrying while they do not answer, for
    /// [`connect::SERVER_PATIENCE`] at most); topics and groups get `namespace` as their prefix.
    #[cfg(all(feature = "redis", feature = "kafka"))]
    pub async fn connect(
        kafka: events::KafkaOptions,
        redis: &str,
        namespace: &str,
    ) -> Result<Self> {
        Self::connect_with(kafka, redis, &events::RedisAccess::default(), namespace).await
    }

    /// [`Client::connect`] to a secured Redis: `access` gives its ACL user and TLS
    /// certificates (Kafka's security settings are `kafka.properties`).
    #[cfg(all(feature = "redis", feature = "kafka"))]
    pub async fn connect_with(
        kafka: events::KafkaOptions,
        redis: &str,
        access: &events::RedisAccess,
        namespace: &str,
    ) -> Result<Self> {
        let kafka: Arc<dyn Broker> =
            Arc::new(connect::connect_broker(kafka, connect::SERVER_PATIENCE).await?);
        let broker: Arc<dyn Broker> = if namespace.is_empty() {
            kafka
        } else {
            Arc::new(events::Namespaced::new(kafka, namespace))
        };
        let store: Arc<dyn Store> =
            Arc::new(connect::connect_store(redis, access, connect::SERVER_PATIENCE).await?);
        Ok(Self::new(broker, store, namespace))
    }

    /// Submits a session document, one run per id ([`actions::submit_with`],
    /// [`Resubmit::Attach`]).
    pub async fn submit(&self, document: Value) -> Result<Submitted> {
        self.submit_with(document, Resubmit::Attach).await
    }

    /// Submits a session document; `resubmit` says what a run of the id under way means.
    pub async fn submit_with(&self, document: Value, resubmit: Resubmit) -> Result<Submitted> {
        actions::submit_with(
            self.broker.as_ref(),
            self.store.as_ref(),
            document,
            resubmit,
        )
        .await
    }

    /// Submits a session of one task `task`: `executor` with `input`, and `fields` (`retry`,
    /// `timeout_ms`, ...). Its result is in the context under `task`.
    pub async fn submit_task(
        &self,
        executor: &str,
        input: Value,
        fields: Map<String, Value>,
    ) -> Result<Submitted> {
        self.submit(one_task(executor, input, fields)).await
    }

    /// Submits tasks (each `{"executor", "input", ...}`; ids `step1`, `step2`, ... unless
    /// given) as one group: in parallel, or `sequential`, each after the one before.
    pub async fn submit_workflow(&self, tasks: Vec<Value>, sequential: bool) -> Result<Submitted> {
        self.submit(workflow(tasks, sequential)?).await
    }

    /// The store this client reads.
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// The session's result once it has one, else its live state ([`status`]).
    pub async fn status(&self, id: &str) -> Result<Status> {
        status(self.store.as_ref(), id).await
    }

    /// Waits for the result of the run `submitted` started or attached to, at most `timeout`.
    pub async fn wait(
        &self,
        submitted: &Submitted,
        timeout: Option<Duration>,
    ) -> Result<SessionResult> {
        results::wait_result(
            self.store.as_ref(),
            &submitted.id,
            Some(&submitted.run),
            timeout,
        )
        .await
    }

    /// Waits for session `id`'s result, of whichever run, at most `timeout`.
    pub async fn wait_any(&self, id: &str, timeout: Option<Duration>) -> Result<SessionResult> {
        results::wait_result(self.store.as_ref(), id, None::<&Origin>, timeout).await
    }

    /// The session's status each time it changes, ending with its result ([`follow`]).
    pub fn monitor(&self, id: &str, interval: Duration) -> impl Stream<Item = Result<Status>> + '_ {
        follow(self.store.clone(), id, interval)
    }

    /// Calls `callback` with the session's status each time it changes, its result last, and
    /// returns the result.
    pub async fn monitor_with(
        &self,
        id: &str,
        mut callback: impl FnMut(&Status),
    ) -> Result<SessionResult> {
        use futures_util::StreamExt as _;
        let mut updates = std::pin::pin!(self.monitor(id, Duration::from_millis(200)));
        while let Some(update) = updates.next().await {
            let update = update?;
            callback(&update);
            if let Status::Finished(result) = update {
                return Ok(*result);
            }
        }
        Err(Error::Notices {
            session: id.to_string(),
            message: "the follower ended without a result".into(),
        })
    }

    /// Cancels the session's run under way ([`actions::cancel`]).
    pub async fn cancel(&self, id: &str) -> Result<CancelAnswer> {
        actions::cancel(self.broker.as_ref(), self.store.as_ref(), id).await
    }

    /// Redis, Kafka and the deployment's members ([`health::check`]).
    pub async fn health(&self) -> Health {
        health::check(self.store.as_ref(), self.broker.as_ref(), &self.namespace).await
    }

    /// The executors the live workers run.
    pub async fn executors(&self) -> Vec<ExecutorInfo> {
        health::executors(&self.health().await)
    }

    /// The sessions listed most recently ([`sessions`]).
    pub async fn sessions(
        &self,
        status: Option<SessionStatus>,
        limit: usize,
    ) -> Result<Vec<Listed>> {
        sessions(self.store.as_ref(), status, limit).await
    }
}

/// Session `id`'s result once it has one, else its live state; an error naming it when it is
/// neither (`Error::UnknownSession`), or when its state is not readable (`Error::Corrupt`). Needs the
/// store only, as `agency status` does.
pub async fn status(store: &dyn Store, id: &str) -> Result<Status> {
    if let Some(result) = results::load_result(store, id).await? {
        return Ok(Status::Finished(Box::new(result)));
    }
    match retrying("reading the live state", || store.load_state(id)).await? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(|state| Status::Live(Box::new(state)))
            .map_err(|error| Error::Corrupt {
                what: format!("the live state of session {id}"),
                message: error.to_string(),
            }),
        None => Err(Error::UnknownSession {
            session: id.to_string(),
        }),
    }
}

/// A session of one task `task` (seed 004's `submit_task`).
pub fn one_task(executor: &str, input: Value, fields: Map<String, Value>) -> Value {
    let mut task = Map::new();
    task.insert("id".into(), json!("task"));
    task.insert("executor".into(), json!(executor));
    task.insert("input".into(), input);
    task.extend(fields);
    json!({"groups": [{"id": "task", "tasks": [task]}]})
}

/// A session of `tasks` in one group `workflow`: ids `step1`, `step2`, ... unless given; with
/// `sequential`, each depends on the one before. A task that is not an object is an error.
pub fn workflow(tasks: Vec<Value>, sequential: bool) -> Result<Value> {
    let mut steps: Vec<Value> = Vec::with_capacity(tasks.len());
    for (n, task) in tasks.into_iter().enumerate() {
        let Value::Object(mut task) = task else {
            return Err(Error::WorkflowTask {
                place: n + 1,
                found: task.to_string(),
            });
        };
        task.entry("id")
            .or_insert_with(|| json!(format!("step{}", n + 1)));
        if let (true, Some(before)) = (sequential, steps.last()) {
            task.insert("depends_on".into(), json!([before["id"].clone()]));
        }
        steps.push(Value::Object(task));
    }
    Ok(json!({"groups": [{"id": "workflow", "tasks": steps}]}))
}
