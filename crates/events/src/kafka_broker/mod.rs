//! The Kafka `Broker` on rdkafka. Client settings are explicit rather than librdkafka's defaults:
//! an idempotent producer with `acks=all` whose `publish` returns only after the delivery report;
//! consumers that start at the earliest offset (a worker group that joins after work was published
//! still sees it) and store offsets by hand, only when `commit` is called, which the worker does
//! after the outcomes are durable in the store; auto-commit then commits stored offsets.
//!
//! Consumer groups use the KIP-848 protocol by default: the broker assigns partitions and moves
//! only those that change owner, so a worker joining or leaving never stops the others (the
//! classic protocol with the `cooperative-sticky` assignor is kept for brokers without it). Each
//! setting and its reason is listed in `docs/distributed.md`.
//!
//! A deployment's own librdkafka properties ([`KafkaProperties`]: security settings above all)
//! are applied to every client after these, and a broker that refuses the client's credentials
//! or certificate fails connecting at once, with librdkafka's reason ([`Refusals`]).
//!
//! Topics are created on first use with a fixed partition count and replication factor, so a
//! consumer group can spread a topic's messages over its members.

mod consumer;
mod properties;

use crate::broker::Position;
use crate::broker::{check_size, Broker, Consumer, MAX_MESSAGE_BYTES};
use crate::error::{Error, Result};
use async_trait::async_trait;
use consumer::{KafkaConsumer, Lag, LAG_READING};
pub use properties::{is_secret, KafkaProperties};
use properties::{Noticing, Refusals};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How a consumer group shares partitions among its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupProtocol {
    /// KIP-848 (Kafka 4): the broker assigns partitions incrementally; session and heartbeat
    /// timings are the broker's (`group.consumer.session.timeout.ms`).
    Consumer,
    /// The classic join/sync protocol with the `cooperative-sticky` assignor, for brokers
    /// without KIP-848 (Kafka before 4, Tansu); session and heartbeat timings are the client's.
    Classic,
}

impl std::str::FromStr for GroupProtocol {
    type Err = String;

    fn from_str(name: &str) -> std::result::Result<Self, String> {
        match name {
            "consumer" => Ok(Self::Consumer),
            "classic" => Ok(Self::Classic),
            other => Err(format!(
                "unknown consumer group protocol `{other}` (expected consumer or classic)"
            )),
        }
    }
}

impl std::fmt::Display for GroupProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Consumer => "consumer",
            Self::Classic => "classic",
        })
    }
}

/// Where the brokers are and how this client talks to them.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// `host:port[,host:port]`.
    pub brokers: String,
    /// Partitions of topics this client creates.
    pub partitions: i32,
    /// Replicas of each partition of topics this client creates (at most the brokers' count).
    pub replication: i32,
    /// How consumer groups assign partitions.
    pub group_protocol: GroupProtocol,
    /// A consumer that does not poll for this long leaves its group (its work is redelivered).
    pub max_poll_interval: Duration,
    /// With the classic protocol: a consumer that sends no heartbeat for this long leaves its
    /// group. With KIP-848 the broker's setting applies.
    pub session_timeout: Duration,
    /// How long a fetch waits for data when there is none. Apache Kafka answers as soon as data
    /// arrives, so this bounds only idle requests; a broker that answers only at the deadline
    /// (Tansu) adds it to every hop, and a session crosses two.
    pub fetch_wait: Duration,
    /// The deployment's own librdkafka properties, set on every client over agency's.
    pub properties: KafkaProperties,
}

impl KafkaOptions {
    /// The defaults for `brokers`: 8 partitions, 1 replica, KIP-848 groups, 100 ms fetch waits.
    pub fn new(brokers: &str) -> Self {
        Self {
            brokers: brokers.to_string(),
            partitions: 8,
            replication: 1,
            group_protocol: GroupProtocol::Consumer,
            max_poll_interval: Duration::from_secs(300),
            session_timeout: Duration::from_secs(10),
            fetch_wait: Duration::from_millis(100),
            properties: KafkaProperties::default(),
        }
    }
}

/// The replicas that must hold a message before the producer's `acks=all` write of it returns:
/// all but one, so a topic of 3 replicas loses no acknowledged message when a broker dies and
/// still takes writes while one is down (1 of 1, 1 of 2, 2 of 3, 3 of 4...).
fn min_in_sync(replication: i32) -> i32 {
    (replication - 1).max(1)
}

/// How long a topic this client created may take to show up in the metadata it reads.
const TOPIC_VISIBLE: Duration = Duration::from_secs(10);

/// A Kafka producer, admin client and consumer factory.
pub struct KafkaBroker {
    options: KafkaOptions,
    producer: FutureProducer<Noticing>,
    admin: AdminClient<Noticing>,
    topics: Mutex<HashSet<String>>,
    refusals: Refusals,
}

impl std::fmt::Debug for KafkaBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBroker")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Whether `code` says the broker could not be reached or did not answer in time: waited out,
/// not a refusal.
fn unreachable(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::QueueFull
    )
}

fn kafka_error(operation: &str, error: KafkaError) -> Error {
    crate::telemetry::error("kafka");
    // rdkafka gives no code for an admin operation's error, though it carries one: a topic
    // created while the broker restarts fails with a transport failure, to be waited out.
    let code = match &error {
        KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    if code.is_some_and(unreachable) {
        return Error::Unavailable {
            backend: "kafka",
            message: format!("{operation}: {error}"),
        };
    }
    Error::Refused {
        backend: "kafka",
        operation: operation.to_string(),
        message: error.to_string(),
    }
}

impl KafkaBroker {
    /// Creates the producer and admin clients for `options.brokers` (librdkafka connects in the
    /// background; [`KafkaBroker::check`] says whether the broker answers).
    pub fn connect(options: KafkaOptions) -> Result<Self> {
        let refusals = Refusals::default();
        let mut producer = ClientConfig::new();
        producer
            .set("bootstrap.servers", &options.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("socket.nagle.disable", "true")
            .set("message.timeout.ms", "30000")
            // Room for the largest payload with its key and the record's overhead.
            .set(
                "message.max.bytes",
                (MAX_MESSAGE_BYTES + 64 * 1024).to_string(),
            );
        options.properties.apply(&mut producer);
        let producer = producer
            .create_with_context(Noticing {
                refusals: refusals.clone(),
            })
            .map_err(|e| options.properties.creation_error("producer", e))?;
        let mut admin = ClientConfig::new();
        admin.set("bootstrap.servers", &options.brokers);
        options.properties.apply(&mut admin);
        let admin = admin
            .create_with_context(Noticing {
                refusals: refusals.clone(),
            })
            .map_err(|e| options.properties.creation_error("admin client", e))?;
        Ok(Self {
            options,
            producer,
            admin,
            topics: Mutex::new(HashSet::new()),
            refusals,
        })
    }

    /// Whether the broker answers a metadata request.
    /// A broker that refuses this client's credentials or certificate is a refusal, with
    /// librdkafka's reason: waiting cannot help.
    pub async fn check(&self) -> Result<()> {
        match self.metadata(None).await {
            Ok(_) => Ok(()),
            Err(error) => match self.refusals.last() {
                Some(reason) => Err(Error::Refused {
                    backend: "kafka",
                    operation: "connecting".to_string(),
                    message: reason,
                }),
                None => Err(error),
            },
        }
    }

    /// The cluster's metadata, of one topic or of all, read on a blocking thread (librdkafka's
    /// call blocks for up to its 3 s timeout).
    async fn metadata(&self, topic: Option<&str>) -> Result<rdkafka::metadata::Metadata> {
        let wanted = topic.map(str::to_string);
        self.blocking("fetching metadata", move |producer| {
            producer
                .client()
                .fetch_metadata(wanted.as_deref(), Duration::from_secs(3))
        })
        .await
    }

    /// Runs one of librdkafka's blocking calls through the producer's client on a blocking
    /// thread, naming `operation` in its error.
    async fn blocking<T: Send + 'static>(
        &self,
        operation: &str,
        call: impl FnOnce(&FutureProducer<Noticing>) -> KafkaResult<T> + Send + 'static,
    ) -> Result<T> {
        let producer = self.producer.clone();
        blocking(operation, move || call(&producer)).await
    }

    /// Messages ever produced to `topic`: the sum of its partitions' high watermarks (0 for a
    /// topic that does not exist). For benchmarks that count what crossed the broker.
    pub async fn messages_in(&self, topic: &str) -> Result<u64> {
        Ok(self.ends(topic).await?.iter().map(|(_, end)| end).sum())
    }

    /// Forgets that this client made `topic`, so the next use asks the broker again.
    fn forget_topic(&self, topic: &str) {
        self.topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(topic);
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
        let in_sync = min_in_sync(self.options.replication).to_string();
        let new = NewTopic::new(
            topic,
            self.options.partitions,
            TopicReplication::Fixed(self.options.replication),
        )
        .set("min.insync.replicas", &in_sync)
        // Stamped by the broker in append order: a consumer finds a log written again by a
        // message stamped later than one it read sitting at or before that one's offset.
        .set("message.timestamp.type", "LogAppendTime");
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = self
            .admin
            .create_topics([&new], &options)
            .await
            .map_err(|e| kafka_error("creating a topic", e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) if unreachable(code) => {
                    return Err(Error::Unavailable {
                        backend: "kafka",
                        message: format!("creating topic {name}: {code}"),
                    })
                }
                Err((name, code)) => {
                    return Err(Error::Refused {
                        backend: "kafka",
                        operation: format!("creating topic {name}"),
                        message: code.to_string(),
                    })
                }
            }
        }
        self.await_topic(topic).await?;
        self.topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_string());
        Ok(())
    }

    /// Waits until the metadata this client reads lists `topic` with a leader for every
    /// partition. The controller acknowledges a new topic before every broker knows it; a consumer
    /// that subscribes in between is told the topic does not exist.
    async fn await_topic(&self, topic: &str) -> Result<()> {
        let started = Instant::now();
        loop {
            let metadata = self.metadata(Some(topic)).await?;
            let ready = metadata.topics().iter().any(|t| {
                t.name() == topic
                    && t.error().is_none()
                    && !t.partitions().is_empty()
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            });
            if ready {
                return Ok(());
            }
            if started.elapsed() > TOPIC_VISIBLE {
                return Err(Error::Unavailable {
                    backend: "kafka",
                    message: format!(
                        "topic {topic} has no leader for some partition after {TOPIC_VISIBLE:?}"
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs one of librdkafka's blocking calls on a blocking thread, naming `operation` in its error.
async fn blocking<T: Send + 'static>(
    operation: &str,
    call: impl FnOnce() -> KafkaResult<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| Error::Unavailable {
            backend: "kafka",
            message: e.to_string(),
        })?
        .map_err(|e| kafka_error(operation, e))
}

/// Where each partition of `topic` ends (its high watermark), asked of the broker through
/// `client`; none for a topic the broker does not know. Blocks for up to a few seconds.
fn partition_ends<C: rdkafka::client::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
) -> KafkaResult<Vec<(i32, u64)>> {
    let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(3))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    partitions
        .into_iter()
        .map(|partition| {
            let (_, high) = client.fetch_watermarks(topic, partition, Duration::from_secs(3))?;
            Ok((partition, high.max(0) as u64))
        })
        .collect()
}

/// Per `(partition, time)` of `checks`, the first offset of `topic`'s partition stamped at or
/// after the time (ms), `None` where none is; asked of the broker through `consumer`. Blocks for
/// up to a few seconds.
fn stamped_after<C: rdkafka::consumer::ConsumerContext>(
    consumer: &StreamConsumer<C>,
    topic: &str,
    checks: &[(i32, i64)],
) -> KafkaResult<Vec<(i32, Option<u64>)>> {
    if checks.is_empty() {
        return Ok(Vec::new());
    }
    let mut times = rdkafka::TopicPartitionList::new();
    for &(partition, ms) in checks {
        times.add_partition_offset(topic, partition, rdkafka::Offset::Offset(ms))?;
    }
    let found = consumer.offsets_for_times(times, Duration::from_secs(3))?;
    Ok(found
        .elements_for_topic(topic)
        .iter()
        .map(|element| {
            let first = match element.offset() {
                rdkafka::Offset::Offset(offset) if offset >= 0 => Some(offset as u64),
                _ => None,
            };
            (element.partition(), first)
        })
        .collect())
}

#[async_trait]
impl Broker for KafkaBroker {
    async fn publish(&self, topic: &str, key: &str, payload: Vec<u8>) -> Result<Position> {
        check_size("kafka", topic, &payload)?;
        self.ensure_topic(topic).await?;
        let record = FutureRecord::to(topic).key(key).payload(&payload);
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|delivery| Position::new(topic, delivery.partition, delivery.offset.max(0) as u64))
            .map_err(|(error, _)| {
                // The topic went away under this client (a broker back without its log, and
                // not making topics on first use): made again when tried again.
                if error.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition) {
                    self.forget_topic(topic);
                    return Error::Unavailable {
                        backend: "kafka",
                        message: format!("producing to {topic}: {error}"),
                    };
                }
                kafka_error(&format!("producing to {topic}"), error)
            })
    }

    async fn ends(&self, topic: &str) -> Result<Vec<(i32, u64)>> {
        let producer = self.producer.clone();
        let topic = topic.to_string();
        blocking("reading where a topic ends", move || {
            partition_ends(producer.client(), &topic)
        })
        .await
    }

    fn qualified(&self, topic: &str) -> String {
        format!("{}/{topic}", self.options.brokers)
    }

    async fn brokers(&self) -> Result<usize> {
        // The metadata of one topic, which need not exist: the broker list comes with it.
        Ok(self.metadata(Some("agency_action")).await?.brokers().len())
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>> {
        // Asked of the broker each time, not taken from what this client created: a member
        // subscribing again after the broker lost its log needs the topic made again.
        self.forget_topic(topic);
        self.ensure_topic(topic).await?;
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.options.brokers)
            .set("group.id", group)
            .set("group.protocol", self.options.group_protocol.to_string())
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            .set(
                "max.poll.interval.ms",
                self.options.max_poll_interval.as_millis().to_string(),
            )
            .set(
                "fetch.wait.max.ms",
                self.options.fetch_wait.as_millis().to_string(),
            )
            .set("socket.nagle.disable", "true");
        self.options.properties.apply(&mut config);
        if self.options.group_protocol == GroupProtocol::Classic {
            // KIP-848 consumers refuse these: the broker owns the timings and the assignor.
            let session = self.options.session_timeout;
            config
                .set("session.timeout.ms", session.as_millis().to_string())
                .set(
                    "heartbeat.interval.ms",
                    (session / 3).as_millis().to_string(),
                )
                .set("partition.assignment.strategy", "cooperative-sticky");
        }
        let consumer: StreamConsumer<Lag> = config
            .set(
                "statistics.interval.ms",
                LAG_READING.as_millis().to_string(),
            )
            .create_with_context(Lag::new(topic, self.refusals.clone()))
            .map_err(|e| self.options.properties.creation_error("consumer", e))?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| kafka_error(&format!("subscribing to {topic}"), e))?;
        Ok(Box::new(KafkaConsumer::new(consumer, topic)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_out_of_reach_is_waited_out_also_in_admin_operations() {
        let admin = KafkaError::AdminOp(RDKafkaErrorCode::BrokerTransportFailure);
        assert!(matches!(
            kafka_error("creating a topic", admin),
            Error::Unavailable { .. }
        ));
        let refused = KafkaError::AdminOp(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert!(matches!(
            kafka_error("creating a topic", refused),
            Error::Refused { .. }
        ));
        let produced = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(matches!(
            kafka_error("producing", produced),
            Error::Unavailable { .. }
        ));
    }
}
