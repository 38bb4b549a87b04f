//! The Kafka `Broker` on rdkafka. Client settings are explicit rather than librdkafka's defaults:
//! an idempotent producer with `acks=all` whose `publish` returns only after the delivery report;
//! consumers that start at the earliest offset (a worker group that joins after work was published
//! still sees it) and store offsets by hand, only when `commit` is called, which the worker does
//! after the outcomes are durable in the store; auto-commit then commits stored offsets.
//!
//! Topics are created on first use with a fixed partition count, so a consumer group can spread a
//! topic's messages over its members.

use crate::broker::{Broker, Consumer, Message};
use crate::error::{Error, Result};
use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::Message as _;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// `host:port[,host:port]`.
    pub brokers: String,
    /// Partitions of topics this client creates.
    pub partitions: i32,
    /// A consumer that does not poll for this long leaves its group (its work is redelivered).
    pub max_poll_interval: Duration,
    /// A consumer that sends no heartbeat for this long leaves its group.
    pub session_timeout: Duration,
    /// How long a fetch waits for data. librdkafka's default (500 ms) puts that much latency on
    /// every hop when a broker answers a fetch only at its deadline; a session crosses two hops.
    pub fetch_wait: Duration,
}

impl KafkaOptions {
    pub fn new(brokers: &str) -> Self {
        Self {
            brokers: brokers.to_string(),
            partitions: 8,
            max_poll_interval: Duration::from_secs(300),
            session_timeout: Duration::from_secs(10),
            fetch_wait: Duration::from_millis(5),
        }
    }
}

pub struct KafkaBroker {
    options: KafkaOptions,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    topics: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for KafkaBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBroker")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn kafka_error(operation: &str, error: KafkaError) -> Error {
    match error.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::QueueFull,
        ) => Error::Unavailable {
            backend: "kafka",
            message: format!("{operation}: {error}"),
        },
        _ => Error::Refused {
            backend: "kafka",
            operation: operation.to_string(),
            message: error.to_string(),
        },
    }
}

impl KafkaBroker {
    pub fn connect(options: KafkaOptions) -> Result<Self> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &options.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("socket.nagle.disable", "true")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(|e| kafka_error("creating the producer", e))?;
        let admin = ClientConfig::new()
            .set("bootstrap.servers", &options.brokers)
            .create()
            .map_err(|e| kafka_error("creating the admin client", e))?;
        Ok(Self {
            options,
            producer,
            admin,
            topics: Mutex::new(HashSet::new()),
        })
    }

    /// Whether the broker answers a metadata request.
    pub async fn check(&self) -> Result<()> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(3))
                .map(|_| ())
        })
        .await
        .map_err(|e| Error::Unavailable {
            backend: "kafka",
            message: e.to_string(),
        })?
        .map_err(|e| kafka_error("fetching metadata", e))
    }

    /// Creates `topic` unless this client already did or it exists.
    async fn ensure_topic(&self, topic: &str) -> Result<()> {
        if self
            .topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(topic)
        {
            return Ok(());
        }
        let new = NewTopic::new(topic, self.options.partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = self
            .admin
            .create_topics([&new], &options)
            .await
            .map_err(|e| kafka_error("creating a topic", e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(Error::Refused {
                        backend: "kafka",
                        operation: format!("creating topic {name}"),
                        message: code.to_string(),
                    })
                }
            }
        }
        self.topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_string());
        Ok(())
    }
}

#[async_trait]
impl Broker for KafkaBroker {
    async fn publish(&self, topic: &str, key: &str, payload: Vec<u8>) -> Result<()> {
        self.ensure_topic(topic).await?;
        let record = FutureRecord::to(topic).key(key).payload(&payload);
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(error, _)| kafka_error(&format!("producing to {topic}"), error))
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>> {
        self.ensure_topic(topic).await?;
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.options.brokers)
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            .set(
                "session.timeout.ms",
                self.options.session_timeout.as_millis().to_string(),
            )
            .set(
                "max.poll.interval.ms",
                self.options.max_poll_interval.as_millis().to_string(),
            )
            .set(
                "fetch.wait.max.ms",
                self.options.fetch_wait.as_millis().to_string(),
            )
            .set("socket.nagle.disable", "true")
            .create()
            .map_err(|e| kafka_error("creating a consumer", e))?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| kafka_error(&format!("subscribing to {topic}"), e))?;
        Ok(Box::new(KafkaConsumer { consumer }))
    }
}

struct KafkaConsumer {
    consumer: StreamConsumer,
}

impl KafkaConsumer {
    fn assigned(&self) -> Result<rdkafka::TopicPartitionList> {
        self.consumer
            .assignment()
            .map_err(|e| kafka_error("reading the assignment", e))
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn next(&mut self) -> Result<Message> {
        let message = self
            .consumer
            .recv()
            .await
            .map_err(|e| kafka_error("consuming", e))?;
        Ok(Message {
            topic: message.topic().to_string(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
            payload: message.payload().unwrap_or_default().to_vec(),
            offset: message.offset().max(0) as u64,
            partition: message.partition(),
        })
    }

    async fn commit(&mut self, message: &Message) -> Result<()> {
        self.consumer
            .store_offset(&message.topic, message.partition, message.offset as i64)
            .map_err(|e| {
                kafka_error(
                    &format!("storing offset {} of {}", message.offset, message.topic),
                    e,
                )
            })
    }

    fn pause(&mut self) -> Result<()> {
        self.consumer
            .pause(&self.assigned()?)
            .map_err(|e| kafka_error("pausing the assigned partitions", e))
    }

    fn resume(&mut self) -> Result<()> {
        self.consumer
            .resume(&self.assigned()?)
            .map_err(|e| kafka_error("resuming the assigned partitions", e))
    }
}
