//! The seams between coordinator and workers: versioned message types, the `Broker` trait
//! (topics with consumer groups; Kafka in distributed mode) and the `Store` trait (durable state
//! and pub/sub wake-ups; Redis in distributed mode), each beside its in-memory twin, and the
//! conformance suite every implementation passes.
//!
//! Features: `redis` ([`RedisStore`]), `kafka` ([`KafkaBroker`]), `testsuite` (the
//! `conformance` suite). Without them the crate builds only the in-memory twins. It depends on
//! no other crate of the workspace: `agency` uses `events` beside `taskgroup`.
//!
//! # Layout
//! - `messages`: the versioned messages that cross processes; `origin`: an action's position.
//! - `broker`: the `Broker` seam and `MemoryBroker`; `kafka_broker`: Kafka on rdkafka.
//! - `store`: the store's capability traits (`Runs`, `Outcomes`, ..., `Store` for all).
//! - `memory_store`: the in-memory store; `outcome_slots`: its 12-byte outcomes.
//! - `file_store`: the state file (the memory store journaled to SQLite).
//! - `redis_store`, `redis_scripts`: the Redis store and its Lua.
//! - `agent_queue`: the queue for external agents and the task manager's data.
//! - `event_manager`: channels and topics merged into one stream.
//! - `watermarks`: commit positions; `log_watch`: noticing a broker that lost its log.
//! - `retry`: the one backoff; `telemetry`: the backends' counts; `error`: the crate's error.
//! - `conformance`, `chaos` (feature `testsuite`): the shared suites and the seeded faults.

#![warn(missing_docs)]

pub mod agent_queue;
mod broker;
#[cfg(feature = "testsuite")]
pub mod chaos;
#[cfg(feature = "testsuite")]
pub mod conformance;
mod error;
mod event_manager;
#[cfg(feature = "file")]
mod file_store;
#[cfg(feature = "kafka")]
mod kafka_broker;
mod log_watch;
mod memory_store;
pub mod messages;
mod origin;
mod outcome_slots;
#[cfg(feature = "redis")]
mod redis_scripts;
#[cfg(feature = "redis")]
mod redis_store;
pub mod retry;
mod store;
pub mod telemetry;
mod watermarks;

pub use agent_queue::{
    with_times, AgentClaim, AgentItem, AgentOrigin, AgentReport, ManagedTask, NewTask, Reported,
    TaskFilter, TaskPage, TaskState, Wanted, WorkflowSummary, LIST_SCAN,
};
pub use broker::{
    oversized, Broker, Consumer, MemoryBroker, Message, Namespaced, Position, DEAD_LETTER_TOPIC,
    DISPATCH_TOPIC, EVENTS_TOPIC, MAX_MESSAGE_BYTES,
};
pub use error::{encode, Error, Result};
pub use event_manager::{Event, EventManager, Source};
#[cfg(feature = "file")]
pub use file_store::{FileStore, DEFAULT_CHECKPOINT};
#[cfg(feature = "kafka")]
pub use kafka_broker::{is_secret, GroupProtocol, KafkaBroker, KafkaOptions, KafkaProperties};
pub use log_watch::{LogWatch, Reading};
pub use memory_store::MemoryStore;
pub use messages::{
    AgentTask, Announcement, Control, Notice, Outcome, Status, TaskRecord, TaskRef, Upstream,
    WorkItem,
};
pub use origin::Origin;
#[cfg(feature = "redis")]
pub use redis_store::{shown_url, RedisAccess, RedisStore};
pub use retry::{backoff, retry, Backoff, Retryable};
pub use store::{
    accept, notices_channel, progress_channel, AgentQueue, Claim, Contexts, Documents, Fence,
    Membership, Memo, Notices, Outcomes, RangeStep, Renewal, Results, Runs, Store, Subscription,
    TaskManager, CONTROL_CHANNEL, NOTICES_PATTERN, RESULTS_CHANNEL,
};
pub use watermarks::Watermarks;

/// Every capability trait of the store, for code that calls a concrete store's methods
/// (`use events::prelude::*`); code that takes `&dyn Store` needs none of them.
pub mod prelude {
    pub use crate::store::{
        AgentQueue, Contexts, Documents, Membership, Memo, Notices, Outcomes, Results, Runs, Store,
        TaskManager,
    };
}
