//! The EventManager (seed 002): one stream of events merged from Redis channels and Kafka topics,
//! with error recovery. A source whose connection drops is subscribed again with backoff, and the
//! stream says so (`Event::Resubscribed`), because messages sent meanwhile are gone: whoever
//! reads the stream reconciles from stored state then.

use crate::broker::Broker;
use crate::error::Result;
use crate::store::Notices;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Where events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A Redis pub/sub channel.
    Channel(String),
    /// Every Redis pub/sub channel matching a glob pattern.
    Pattern(String),
    /// A Kafka topic, read in consumer group `group` (each message committed once forwarded).
    Topic {
        /// The topic read.
        topic: String,
        /// The consumer group it is read in.
        group: String,
    },
}

impl Source {
    fn name(&self) -> String {
        match self {
            Source::Channel(channel) => format!("channel {channel}"),
            Source::Pattern(pattern) => format!("channels {pattern}"),
            Source::Topic { topic, .. } => format!("topic {topic}"),
        }
    }
}

/// What a source gave the manager, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message arrived.
    Message {
        /// Where it came from.
        source: Source,
        /// Its bytes, as published.
        payload: Vec<u8>,
    },
    /// The source's connection dropped and was restored: messages in between may be lost.
    Resubscribed {
        /// The source that reconnected.
        source: Source,
    },
    /// The source failed in a way retrying does not fix; it is no longer read.
    Failed {
        /// The source that failed.
        source: Source,
        /// Why it failed.
        error: String,
    },
}

/// Merges sources into one stream.
#[derive(Clone)]
pub struct EventManager {
    store: Arc<dyn Notices>,
    broker: Option<Arc<dyn Broker>>,
}

impl std::fmt::Debug for EventManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventManager").finish_non_exhaustive()
    }
}

impl EventManager {
    /// A manager reading channels from `store` and, when given, topics from `broker`.
    pub fn new(store: Arc<dyn Notices>, broker: Option<Arc<dyn Broker>>) -> Self {
        Self { store, broker }
    }

    /// Subscribes to every source and returns the merged stream. Returns once every source is
    /// subscribed, so nothing sent after this call is missed while connected. The stream ends when
    /// `stop` fires or every source has failed.
    pub async fn subscribe(
        &self,
        sources: Vec<Source>,
        stop: CancellationToken,
    ) -> Result<mpsc::Receiver<Event>> {
        let (sender, receiver) = mpsc::channel(1024);
        for source in sources {
            let reader = match self.reader(&source).await {
                Ok(reader) => reader,
                // A server away at the start is waited for, as when it goes away later.
                Err(error) if error.is_retryable() => {
                    tracing::warn!(source = %source.name(), %error, "cannot subscribe yet");
                    self.resubscribe(&source, &stop)
                        .await
                        .ok_or_else(|| crate::Error::Closed(source.name()))?
                }
                Err(error) => return Err(error),
            };
            let manager = self.clone();
            let (sender, stop) = (sender.clone(), stop.clone());
            tokio::spawn(async move { manager.forward(source, reader, sender, stop).await });
        }
        Ok(receiver)
    }

    async fn reader(&self, source: &Source) -> Result<Reader> {
        Ok(match source {
            Source::Channel(channel) => Reader::Channel(self.store.subscribe(channel).await?),
            Source::Pattern(pattern) => {
                Reader::Channel(self.store.subscribe_pattern(pattern).await?)
            }
            Source::Topic { topic, group } => match &self.broker {
                Some(broker) => Reader::Topic(broker.subscribe(topic, group).await?),
                None => {
                    return Err(crate::Error::Refused {
                        backend: "event manager",
                        operation: format!("reading topic {topic}"),
                        message: "no broker was given".into(),
                    })
                }
            },
        })
    }

    async fn forward(
        &self,
        source: Source,
        mut reader: Reader,
        sender: mpsc::Sender<Event>,
        stop: CancellationToken,
    ) {
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                next = reader.next() => next,
            };
            let event = match next {
                Ok(payload) => Event::Message {
                    source: source.clone(),
                    payload,
                },
                Err(error) if error.is_retryable() => {
                    tracing::warn!(source = %source.name(), %error, "event source lost; resubscribing");
                    match self.resubscribe(&source, &stop).await {
                        Some(fresh) => reader = fresh,
                        None => return,
                    }
                    Event::Resubscribed {
                        source: source.clone(),
                    }
                }
                Err(error) => {
                    let _ = sender
                        .send(Event::Failed {
                            source: source.clone(),
                            error: error.to_string(),
                        })
                        .await;
                    return;
                }
            };
            if sender.send(event).await.is_err() {
                return;
            }
        }
    }

    async fn resubscribe(&self, source: &Source, stop: &CancellationToken) -> Option<Reader> {
        let mut schedule = crate::retry::Backoff::new();
        loop {
            match self.reader(source).await {
                Ok(reader) => return Some(reader),
                // Any error: the source was readable before, so it is expected back.
                Err(error) => {
                    tracing::warn!(source = %source.name(), %error, "cannot resubscribe yet")
                }
            }
            if !schedule.wait(stop).await {
                return None;
            }
        }
    }
}

enum Reader {
    Channel(Box<dyn crate::store::Subscription>),
    Topic(Box<dyn crate::broker::Consumer>),
}

impl Reader {
    async fn next(&mut self) -> Result<Vec<u8>> {
        match self {
            Reader::Channel(subscription) => subscription.next().await,
            Reader::Topic(consumer) => {
                let message = consumer.next().await?;
                // Observers read at most once: the offset moves on as soon as the event is taken.
                consumer.commit(&message).await?;
                Ok(message.payload)
            }
        }
    }
}
