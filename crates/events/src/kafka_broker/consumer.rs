//! A consumer of one topic in a group: messages in order per partition, offsets stored by hand
//! at `commit`, its lag reported to [`crate::telemetry`], and a log the broker lost noticed
//! ([`Error::LogLost`]).

use super::properties::Refusals;
use super::{kafka_error, partition_ends, stamped_after};
use crate::broker::{Consumer, Message};
use crate::error::{Error, Result};
use crate::log_watch::{LogWatch, Reading};
use async_trait::async_trait;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::Message as _;
use std::sync::Arc;
use std::time::Duration;

/// How often librdkafka reports a consumer's statistics, its lag among them.
pub(super) const LAG_READING: Duration = Duration::from_secs(5);

/// A consumer's context: its statistics give the lag of its topic ([`crate::telemetry`]).
pub(super) struct Lag {
    topic: String,
    refusals: Refusals,
}

impl Lag {
    /// The context of a consumer of `topic`, noting refusals of its credentials in `refusals`.
    pub(super) fn new(topic: &str, refusals: Refusals) -> Self {
        Self {
            topic: topic.to_string(),
            refusals,
        }
    }
}

impl rdkafka::ClientContext for Lag {
    fn error(&self, error: KafkaError, reason: &str) {
        self.refusals.note(&error, reason);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        // Partition -1 is librdkafka's own; a lag not known yet is -1.
        let lag = statistics.topics.get(&self.topic).map_or(0, |topic| {
            topic
                .partitions
                .values()
                .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
                .map(|p| p.consumer_lag)
                .sum()
        });
        crate::telemetry::set_lag(&self.topic, lag);
    }
}

impl rdkafka::consumer::ConsumerContext for Lag {}

/// How often a consumer reads where its topic's partitions end, to notice a lost log.
const LOG_READING: Duration = Duration::from_secs(5);
/// How soon a low reading is read again to confirm it.
const LOG_CONFIRM: Duration = Duration::from_secs(1);

/// A reading of where the topic's partitions end, and of the first offsets stamped after the
/// watch's checkpoints, under way on a blocking thread.
type EndsReading =
    tokio::task::JoinHandle<KafkaResult<(Vec<(i32, u64)>, Option<Vec<(i32, Option<u64>)>>)>>;

pub(super) struct KafkaConsumer {
    consumer: Arc<StreamConsumer<Lag>>,
    topic: String,
    /// Where the partitions were seen to end: by the messages read and by earlier readings. A
    /// broker that comes back without its log is not followed by librdkafka (a consumer of a
    /// topic deleted and made again stays silent: confluent-kafka-javascript#274), so the
    /// consumer reads the ends itself and says [`Error::LogLost`] when they moved backwards.
    watch: LogWatch,
    reading: Option<EndsReading>,
    next_reading: tokio::time::Instant,
}

impl KafkaConsumer {
    /// A consumer subscribed to `topic`.
    pub(super) fn new(consumer: StreamConsumer<Lag>, topic: &str) -> Self {
        Self {
            consumer: Arc::new(consumer),
            topic: topic.to_string(),
            watch: LogWatch::default(),
            reading: None,
            next_reading: tokio::time::Instant::now() + LOG_READING,
        }
    }

    fn assigned(&self) -> Result<rdkafka::TopicPartitionList> {
        self.consumer
            .assignment()
            .map_err(|e| kafka_error("reading the assignment", e))
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn next(&mut self) -> Result<Message> {
        loop {
            if self.reading.is_none() && tokio::time::Instant::now() >= self.next_reading {
                let (consumer, topic) = (self.consumer.clone(), self.topic.clone());
                let checks = self.watch.checks();
                self.reading = Some(tokio::task::spawn_blocking(move || {
                    let ends = partition_ends(consumer.client(), &topic)?;
                    // A broker that cannot answer them (an older one) still has its ends read.
                    let after = stamped_after(consumer.as_ref(), &topic, &checks).ok();
                    Ok((ends, after))
                }));
            }
            let received = tokio::select! {
                received = self.consumer.recv() => received,
                read = async {
                    match self.reading.as_mut() {
                        Some(reading) => reading.await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.reading = None;
                    self.next_reading = tokio::time::Instant::now() + LOG_READING;
                    // A broker out of reach says nothing about the log: read again soon, so a
                    // broker back without its log is noticed before new messages refill it.
                    let Ok(Ok((ends, after))) = read else {
                        self.next_reading = tokio::time::Instant::now() + LOG_CONFIRM;
                        continue;
                    };
                    match self.watch.read_with(&ends, after.as_deref()) {
                        Reading::Intact => {}
                        Reading::Suspect => {
                            self.next_reading = tokio::time::Instant::now() + LOG_CONFIRM;
                        }
                        Reading::Lost(detail) => {
                            return Err(Error::LogLost { topic: self.topic.clone(), detail });
                        }
                    }
                    continue;
                }
                () = tokio::time::sleep_until(self.next_reading), if self.reading.is_none() => continue,
            };
            let message = match received {
                Ok(message) => message,
                // librdkafka reports passing trouble (a topic not yet known to the broker answering,
                // a leader moving, a broker connection lost) as consumer errors and recovers by
                // itself; only a fatal error ends the consumer.
                Err(KafkaError::MessageConsumption(code)) => {
                    tracing::warn!(%code, "kafka consumer: {code}; it recovers by itself");
                    continue;
                }
                Err(error) => return Err(kafka_error("consuming", error)),
            };
            let offset = message.offset().max(0) as u64;
            match message.timestamp() {
                rdkafka::Timestamp::LogAppendTime(ms) => {
                    self.watch.stamped(message.partition(), offset, ms)
                }
                _ => self.watch.observe(message.partition(), offset + 1),
            }
            return Ok(Message {
                topic: message.topic().to_string(),
                key: message
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default(),
                payload: message.payload().unwrap_or_default().to_vec(),
                offset: message.offset().max(0) as u64,
                partition: message.partition(),
            });
        }
    }

    async fn commit(&mut self, message: &Message) -> Result<()> {
        match self
            .consumer
            .store_offset(&message.topic, message.partition, message.offset as i64)
        {
            Ok(()) => Ok(()),
            // The partition moved to another member during a rebalance while this message was
            // being processed. Its new owner starts from the last committed offset and gets the
            // message again; what this member recorded stays recorded once.
            Err(KafkaError::StoreOffset(RDKafkaErrorCode::State)) => {
                tracing::info!(
                    topic = %message.topic,
                    partition = message.partition,
                    offset = message.offset,
                    "partition revoked before its offset was stored; its new owner will receive the message again"
                );
                Ok(())
            }
            Err(error) => Err(kafka_error(
                &format!("storing offset {} of {}", message.offset, message.topic),
                error,
            )),
        }
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
