//! The `Broker` seam: topics with consumer groups (Kafka in production), and its in-memory twin.
//!
//! Semantics every implementation keeps: `publish` returns once the broker holds the message;
//! members of one consumer group share a topic's messages, each message going to one member;
//! every group sees every message, including those published before it subscribed (offsets start
//! at the earliest); `commit` marks a message processed, and is called only after its outcomes are
//! durable.

use crate::error::{Error, Result};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// The topic of task-group work (ranges of instances).
pub const DISPATCH_TOPIC: &str = "agency_dispatch";
/// Where malformed messages go, with the reason; consumers keep running.
pub const DEAD_LETTER_TOPIC: &str = "agency_dead_letter";
/// The largest payload of one message on any topic, in bytes: below what an Apache Kafka
/// broker accepts by default (`message.max.bytes`, 1,048,588 with the record's overhead).
/// Publishing more is refused before anything is sent, by every [`Broker`]; a consumer treats a
/// larger message (from another producer) as malformed.
pub const MAX_MESSAGE_BYTES: usize = 1_000_000;

/// Why a payload of `len` bytes cannot be a message, if it cannot: it is over
/// [`MAX_MESSAGE_BYTES`].
pub fn oversized(len: usize) -> Option<String> {
    (len > MAX_MESSAGE_BYTES)
        .then(|| format!("the message is {len} bytes, over the limit of {MAX_MESSAGE_BYTES} bytes"))
}

/// Refuses a payload over [`MAX_MESSAGE_BYTES`] for `topic`, naming its size and the limit.
pub(crate) fn check_size(backend: &'static str, topic: &str, payload: &[u8]) -> Result<()> {
    match oversized(payload.len()) {
        None => Ok(()),
        Some(message) => Err(Error::Refused {
            backend,
            operation: format!("producing to {topic}"),
            message,
        }),
    }
}

/// Events that tasks emit (the `emit_event` executor).
pub const EVENTS_TOPIC: &str = "agency_events";

/// One message read from a topic, with where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic it was read from.
    pub topic: String,
    /// The key it was published with (it chose the partition).
    pub key: String,
    /// Its bytes, as published.
    pub payload: Vec<u8>,
    /// Its offset in the partition.
    pub offset: u64,
    /// The partition it sits in.
    pub partition: i32,
}

/// A log of topics read in consumer groups: Kafka, or the in-memory twin.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Appends a message to `topic`; returns when the broker has it.
    async fn publish(&self, topic: &str, key: &str, payload: Vec<u8>) -> Result<Position>;
    /// Joins consumer group `group` on `topic`.
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>>;
    /// Where each partition of `topic` ends now (its next offset; a topic that does not exist has
    /// none), for a [`crate::LogWatch`] of what was published to it.
    async fn ends(&self, topic: &str) -> Result<Vec<(i32, u64)>>;
    /// How many brokers answer, asked now (a health check). An in-process broker is one.
    async fn brokers(&self) -> Result<usize> {
        Ok(1)
    }
    /// `topic` as named across deployments that share a store: with the namespace's prefix and
    /// the cluster's address, so a message about one deployment's topic (the log was lost) is
    /// told from another's.
    fn qualified(&self, topic: &str) -> String {
        topic.to_string()
    }
}

/// One member of a consumer group on one topic.
#[async_trait]
pub trait Consumer: Send {
    /// The next message for this member; waits until there is one. [`Error::LogLost`] says
    /// the broker lost messages this member had read: subscribe again, and commit nothing the
    /// old member handed out through the new one.
    async fn next(&mut self) -> Result<Message>;
    /// Marks `message` processed.
    async fn commit(&mut self, message: &Message) -> Result<()>;
    /// Stops fetching from the partitions assigned now; `next` keeps the membership alive but
    /// yields nothing from them until `resume`. For a member whose hands are full: it must keep
    /// calling `next`, or the group decides it is stuck and takes its partitions away.
    fn pause(&mut self) -> Result<()>;
    /// Fetches again from the partitions paused by [`Consumer::pause`].
    fn resume(&mut self) -> Result<()>;
}

/// One topic: an append-only log and each group's next offset.
#[derive(Debug, Default)]
struct Topic {
    log: Mutex<Vec<(String, Arc<[u8]>)>>,
    groups: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    appended: Notify,
}

/// Topics in memory: the embedded default and the test double for Kafka.
#[derive(Debug, Default, Clone)]
pub struct MemoryBroker {
    topics: Arc<Mutex<HashMap<String, Arc<Topic>>>>,
}

impl MemoryBroker {
    /// An empty broker: topics appear when first published to or subscribed.
    pub fn new() -> Self {
        Self::default()
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        let mut topics = self
            .topics
            .lock()
            .map_err(|_| Error::poisoned("memory broker"))?;
        Ok(topics.entry(name.to_string()).or_default().clone())
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, topic: &str, key: &str, payload: Vec<u8>) -> Result<Position> {
        check_size("memory", topic, &payload)?;
        let target = self.topic(topic)?;
        let offset = {
            let mut log = target
                .log
                .lock()
                .map_err(|_| Error::poisoned("memory broker"))?;
            log.push((key.to_string(), payload.into()));
            log.len() as u64 - 1
        };
        target.appended.notify_waiters();
        Ok(Position::new(topic, 0, offset))
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>> {
        let target = self.topic(topic)?;
        let offset = target
            .groups
            .lock()
            .map_err(|_| Error::poisoned("memory broker"))?
            .entry(group.to_string())
            .or_default()
            .clone();
        Ok(Box::new(MemoryConsumer {
            name: topic.to_string(),
            topic: target,
            offset,
            paused: false,
        }))
    }

    async fn ends(&self, topic: &str) -> Result<Vec<(i32, u64)>> {
        let topics = self
            .topics
            .lock()
            .map_err(|_| Error::poisoned("memory broker"))?;
        let Some(target) = topics.get(topic) else {
            return Ok(Vec::new());
        };
        let len = target
            .log
            .lock()
            .map_err(|_| Error::poisoned("memory broker"))?
            .len();
        Ok(vec![(0, len as u64)])
    }
}

#[derive(Debug)]
struct MemoryConsumer {
    name: String,
    topic: Arc<Topic>,
    /// Shared by the group's members: claiming an offset is one atomic increment.
    offset: Arc<AtomicUsize>,
    paused: bool,
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn next(&mut self) -> Result<Message> {
        if self.paused {
            return std::future::pending().await;
        }
        loop {
            // Register interest before looking, so an append between the look and the wait wakes us.
            let appended = self.topic.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let claimed = {
                let log = self
                    .topic
                    .log
                    .lock()
                    .map_err(|_| Error::poisoned("memory broker"))?;
                let len = log.len();
                let claimed = self
                    .offset
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |at| {
                        (at < len).then_some(at + 1)
                    })
                    .ok();
                claimed.and_then(|at| {
                    log.get(at)
                        .map(|(key, payload)| (at, key.clone(), payload.clone()))
                })
            };
            if let Some((at, key, payload)) = claimed {
                return Ok(Message {
                    topic: self.name.clone(),
                    key,
                    payload: payload.to_vec(),
                    offset: at as u64,
                    partition: 0,
                });
            }
            appended.await;
        }
    }

    async fn commit(&mut self, _message: &Message) -> Result<()> {
        // In one process nothing crashes between processing and commit; offsets are claimed on read.
        Ok(())
    }

    fn pause(&mut self) -> Result<()> {
        self.paused = true;
        Ok(())
    }

    fn resume(&mut self) -> Result<()> {
        self.paused = false;
        Ok(())
    }
}

/// A broker whose topics and consumer groups all carry a prefix, so deployments (or test runs)
/// sharing one Kafka cluster never see each other's messages.
pub struct Namespaced {
    inner: Arc<dyn Broker>,
    prefix: String,
}

impl std::fmt::Debug for Namespaced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespaced")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Namespaced {
    /// Wraps `inner` so every topic and group name starts with `prefix`.
    pub fn new(inner: Arc<dyn Broker>, prefix: &str) -> Self {
        Self {
            inner,
            prefix: prefix.to_string(),
        }
    }
}

#[async_trait]
impl Broker for Namespaced {
    async fn publish(&self, topic: &str, key: &str, payload: Vec<u8>) -> Result<Position> {
        self.inner
            .publish(&format!("{}{topic}", self.prefix), key, payload)
            .await
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>> {
        self.inner
            .subscribe(
                &format!("{}{topic}", self.prefix),
                &format!("{}{group}", self.prefix),
            )
            .await
    }

    async fn ends(&self, topic: &str) -> Result<Vec<(i32, u64)>> {
        self.inner.ends(&format!("{}{topic}", self.prefix)).await
    }

    async fn brokers(&self) -> Result<usize> {
        self.inner.brokers().await
    }

    fn qualified(&self, topic: &str) -> String {
        self.inner.qualified(&format!("{}{topic}", self.prefix))
    }
}

/// Where a message sits: topic, partition, offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: u64,
}

impl Position {
    /// The position `offset` of `partition` in `topic`.
    pub fn new(topic: &str, partition: i32, offset: u64) -> Self {
        Self {
            topic: topic.to_string(),
            partition,
            offset,
        }
    }

    /// Its partition and offset.
    pub fn partition_offset(&self) -> (i32, u64) {
        (self.partition, self.offset)
    }

    /// The message's origin, as a session started from it records it.
    pub fn origin(&self) -> crate::Origin {
        crate::Origin {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
        }
    }
}

impl Position {
    /// Where `message` sits.
    pub fn of(message: &Message) -> Self {
        Self::new(&message.topic, message.partition, message.offset)
    }
}
