//! The seams between coordinator and workers: versioned message types, the `Broker` trait
//! (topics with consumer groups; Kafka in distributed mode) and the `Store` trait (durable state
//! and pub/sub wake-ups; Redis in distributed mode), each beside its in-memory twin, and the
//! conformance suite every implementation passes.
//!
//! Dependency direction: `agency -> events -> taskgroup -> expansion`.

mod broker;
pub mod conformance;
mod error;
mod event_manager;
mod kafka_broker;
pub mod messages;
mod redis_store;
mod store;
mod watermarks;

pub use broker::{
    Broker, Consumer, MemoryBroker, Message, Namespaced, DEAD_LETTER_TOPIC, DISPATCH_TOPIC,
    EVENTS_TOPIC,
};
pub use error::{backoff, Error, Result};
pub use event_manager::{Event, EventManager, Source};
pub use kafka_broker::{GroupProtocol, KafkaBroker, KafkaOptions};
pub use messages::{Control, Notice, Outcome, Status, TaskRecord, TaskRef, WorkItem};
pub use redis_store::RedisStore;
pub use store::{
    accept, notices_channel, Claim, MemoryStore, Renewal, Store, Subscription, CONTROL_CHANNEL,
    NOTICES_PATTERN, RESULTS_CHANNEL,
};
pub use taskgroup;
pub use watermarks::{Position, Watermarks};
