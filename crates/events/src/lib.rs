//! The seams between coordinator and workers: versioned message types, the `Broker` trait
//! (topics with consumer groups; Kafka in distributed mode) and the `Store` trait (durable state
//! and pub/sub wake-ups; Redis in distributed mode), each beside its in-memory twin, and the
//! conformance suite every implementation passes.
//!
//! Features: `redis` ([`RedisStore`]), `kafka` ([`KafkaBroker`]), `testsuite` (the
//! `conformance` suite). Without them the crate builds only the in-memory twins. It depends on
//! no other crate of the workspace: `agency` uses `events` beside `taskgroup`.

#![warn(missing_docs)]

pub mod agents;
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

pub use agents::{
    AgentClaim, AgentItem, AgentOrigin, AgentReport, ManagedTask, NewTask, Reported, TaskState,
    WorkflowSummary,
};
pub use broker::{
    oversized, Broker, Consumer, MemoryBroker, Message, Namespaced, DEAD_LETTER_TOPIC,
    DISPATCH_TOPIC, EVENTS_TOPIC, MAX_MESSAGE_BYTES,
};
pub use error::{encode, Error, Result};
pub use event_manager::{Event, EventManager, Source};
#[cfg(feature = "file")]
pub use file_store::{FileStore, DEFAULT_CHECKPOINT};
#[cfg(feature = "kafka")]
pub use kafka_broker::{GroupProtocol, KafkaBroker, KafkaOptions};
pub use log_watch::{LogWatch, Reading};
pub use memory_store::MemoryStore;
pub use messages::{
    AgentTask, Announcement, Control, Notice, Outcome, Status, TaskRecord, TaskRef, Upstream,
    WorkItem,
};
pub use origin::Origin;
#[cfg(feature = "redis")]
pub use redis_store::RedisStore;
pub use retry::{backoff, retry, Backoff, Retryable};
pub use store::{
    accept, notices_channel, progress_channel, AgentQueue, Claim, Contexts, Documents, Fence,
    Membership, Memo, Notices, Outcomes, RangeStep, Renewal, Results, Runs, Store, Subscription,
    TaskManager, CONTROL_CHANNEL, NOTICES_PATTERN, RESULTS_CHANNEL,
};
pub use watermarks::{Position, Watermarks};

/// Every capability trait of the store, for code that calls a concrete store's methods
/// (`use events::prelude::*`); code that takes `&dyn Store` needs none of them.
pub mod prelude {
    pub use crate::store::{
        AgentQueue, Contexts, Documents, Membership, Memo, Notices, Outcomes, Results, Runs, Store,
        TaskManager,
    };
}
