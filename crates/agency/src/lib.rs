//! The agency engine: executors, the worker, the coordinator, and the embedded mode that runs
//! both in one process over the in-memory Broker and Store.
//!
//! ```
//! # tokio_test_main();
//! # fn tokio_test_main() {
//! # let runtime = tokio::runtime::Runtime::new().expect("runtime");
//! # runtime.block_on(async {
//! use agency::embedded::{run_session, EmbeddedOptions};
//! let text = r#"{"groups": [{"id": "g", "tasks": [{"id": "t", "executor": "echo",
//!     "input": {"xs": [1, 2, 3], "expansion_config": {"type": "array", "array_mapping": {"x": "xs"}}}}]}]}"#;
//! let result = run_session(text, &EmbeddedOptions::default()).await.expect("valid session");
//! assert_eq!(result.status, taskgroup::ResultStatus::Completed);
//! assert_eq!(result.context["t"], serde_json::json!([{"x": 1}, {"x": 2}, {"x": 3}]));
//! # });
//! # }
//! ```
//!
//! # Layout
//! - `coordinator`: one session from start to result, around the `SessionMachine`.
//! - `intake`: the coordinator service on `agency_action`.
//! - `worker`: ranges of instances taken, run and recorded.
//! - `executors`: the code that runs one instance, and the registry of them.
//! - `embedded`: coordinator and workers in one process.
//! - `csv`: seed 001's batch runner (`agency csv`); `http`: `/metrics`, the status page and its API.
//! - `client`: the Rust client (`Client`) and the actions it produces (`client::actions`).
//! - `results`: a session's result read back and waited for; a task's results by page.
//! - `agent_tasks`: tasks done by external agents; `task_manager`: the task manager.
//! - `health`: heartbeats and the health check; `metrics`: the process's metrics.
//! - `notice_router`: one notices subscription routed by session.
//! - `outage`: riding out a store or broker outage; `connect`: reaching the real servers.
//! - `dead_letter`: malformed messages; `failpoint`: the fault suite's exits; `deadline`:
//!   waiting until a deadline that may not be set.
//! - `error`: the library's error.

#![warn(missing_docs)]

pub mod agent_tasks;
pub mod client;
#[cfg(any(feature = "redis", feature = "kafka"))]
pub mod connect;
pub mod coordinator;
#[cfg(feature = "csv")]
pub mod csv;
mod dead_letter;
mod deadline;
pub mod embedded;
mod error;
pub mod executors;
mod failpoint;
pub mod health;
#[cfg(feature = "http")]
pub mod http;
pub mod intake;
pub mod metrics;
mod notice_router;
mod outage;
pub mod results;
pub mod task_manager;
pub mod worker;

pub use coordinator::{Coordinator, Durable, Progress};
pub use error::{BadAction, CannotRerun, Error, HandedOver, KeptResults, Result};
pub use executors::{Call, ExecError, Executor, IdempotencyKey, Registry};
pub use worker::{Worker, WorkerOptions};
