//! The task-group model: session, group and task specs, and complete validation of a session
//! before anything runs (ids, dependencies, cycles, context references, every expansion).
//!
//! ```
//! use taskgroup::Session;
//! let session = Session::from_json(
//!     r#"{"groups": [{"id": "g", "tasks": [{"id": "t", "executor": "noop",
//!         "input": {"xs": [1, 2, 3], "expansion_config": {"type": "array", "array_mapping": {"x": "xs"}}}}]}]}"#,
//!     &taskgroup::Rules::default(),
//! )?;
//! assert_eq!(session.total_instances(), (3, 0));
//! # Ok::<(), taskgroup::Error>(())
//! ```
//!
//! This crate does no IO.
//!
//! # Layout
//! - `spec`: the session file as written; `misfit`: every place it does not fit;
//!   `no_duplicates`: repeated keys refused.
//! - `session`: validation of everything at once; `session_error`: a run's typed errors.
//! - `planning`: the one way a task is planned; `graph`: cycles and reachability.
//! - `policy`: retry and failure policies; `failure`: the kind of an attempt's failure.
//! - `memoize`, `agent_spec`, `inline`: a task's `memoize`, `agent` and `inline_results`.
//! - `selection`: `--only`'s cut of a session.
//! - `machine`: the task group state machine (`GroupMachine`).
//! - `session_machine`: the session state machine (`SessionMachine`).
//! - `live`: the live state while a session runs; `result`: the final result.
//! - `error`: the crate's error.

#![warn(missing_docs)]

mod agent_spec;
mod error;
mod failure;
mod graph;
mod inline;
mod live;
mod machine;
mod memoize;
mod misfit;
mod no_duplicates;
mod planning;
mod policy;
mod result;
mod selection;
mod session;
mod session_error;
mod session_machine;
mod spec;

pub use agent_spec::{AgentTask, AGENT_EXECUTOR, DEFAULT_CLAIM_TIMEOUT_MS};
pub use error::{Error, Problem, Result};
pub use failure::{Failure, FailureKind};
pub use inline::{InlineResults, DEFAULT_INLINE_BYTES, DEFAULT_INLINE_COUNT};
pub use live::{
    iso8601, LiveCounts, LiveFailure, LiveGroup, LiveGroupStatus, LiveSpan, LiveState, LiveStatus,
    LATEST_FAILURES,
};
pub use machine::{
    Command, Event, FailedInstance, GroupMachine, GroupStatus, TaskRun, TaskSetup, TaskState,
    DEFAULT_CHUNK,
};
pub use memoize::Memoize;
pub use planning::{plan_task, task_path, TaskPlan};
pub use policy::{FailurePolicy, RetryPolicy, Threshold};
pub use result::{
    GroupOutcome, GroupSummary, InstanceFailure, InstanceResult, ResultStatus, SessionResult,
    TaskStatus, TaskSummary,
};
pub use session::{Planned, PlannedGroup, PlannedTask, Rules, Session, SESSION_WRITER};
pub use session_machine::{
    merge_ranges, Counts, Deadline, FinishRead, Finished, GroupSlot, Range, RunFacts,
    SessionCommand, SessionError, SessionEvent, SessionMachine, Skip, Stored,
};
pub use spec::{session_id_problem, Dependency, GroupSpec, SessionSpec, TaskSpec, SESSION_KEY};
