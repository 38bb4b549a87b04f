//! The process's metrics, served at `/metrics` in the Prometheus text format by `agency
//! coordinator`, `agency worker` and `agency run` with `--http` (`docs/observability.md`).
//!
//! Counted in plain atomics where the work happens (a worker counts each attempt of millions,
//! so no lock and no label lookup on that path: a task's handles are looked up once, when the
//! worker prepares it) and encoded at each scrape through `prometheus-client`. Process-wide,
//! as a Prometheus client's default registry is: a process exposes one set.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;
use taskgroup::ResultStatus;

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// Upper bounds of the session duration histogram's buckets, in seconds.
const SESSION_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0,
];
/// Upper bounds of the instance duration histogram's buckets, in seconds.
const INSTANCE_BUCKETS: &[f64] = &[
    0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0,
];

/// Why a message went to the dead-letter topic: the `reason` label's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetter {
    /// Not an action or work item agency can read (not JSON, wrong shape, too large).
    Malformed,
    /// An action that names no valid session id.
    BadKey,
    /// A session document that is not valid.
    InvalidSession,
    /// Another document for a session id whose run is under way.
    Running,
}

impl DeadLetter {
    const ALL: [Self; 4] = [
        Self::Malformed,
        Self::BadKey,
        Self::InvalidSession,
        Self::Running,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadKey => "bad_key",
            Self::InvalidSession => "invalid_session",
            Self::Running => "running",
        }
    }
}

/// A histogram of durations in fixed buckets, updated without a lock.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative), the last past every bound.
    counts: Box<[AtomicU64]>,
    /// The sum of the observations, in nanoseconds.
    sum_ns: AtomicU64,
}

/// The histogram bucket of `duration`: the first bound it does not exceed, or the last (`+Inf`).
fn bucket(bounds: &[f64], duration: Duration) -> usize {
    let seconds = duration.as_secs_f64();
    bounds
        .iter()
        .position(|&bound| seconds <= bound)
        .unwrap_or(bounds.len())
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    fn observe(&self, duration: Duration) {
        self.counts[bucket(self.bounds, duration)].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        // Per bucket: the encoder sums them into the cumulative `le` counts.
        let mut total = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, count) in self.counts.iter().enumerate() {
            let count = count.load(Ordering::Relaxed);
            total += count;
            let bound = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, count));
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, total, &buckets, None)
    }
}

/// A batch's attempts, counted locally and added to the shared counters at once
/// ([`ExecutorMetrics::add`]): a million attempts a second on the same counters from every
/// core cost more in cache traffic than anything else the worker does for a no-op.
#[derive(Debug, Default)]
pub struct Tally {
    /// succeeded, failed, timed_out, cached.
    counts: [u64; 4],
    buckets: [u64; INSTANCE_BUCKETS.len() + 1],
    sum_ns: u64,
}

impl Tally {
    /// Counts an attempt by its outcome; an executed one with how long it took.
    pub fn attempt(&mut self, status: &events::Status, took: Option<Duration>) {
        use events::Status;
        let i = match status {
            Status::Succeeded(_) | Status::Stored(_) => 0,
            Status::Failed(failure) if failure.kind == taskgroup::FailureKind::Timeout => 2,
            Status::Failed(_) => 1,
            Status::Cached(_) => 3,
        };
        self.counts[i] += 1;
        if let Some(took) = took {
            self.buckets[bucket(INSTANCE_BUCKETS, took)] += 1;
            self.sum_ns += u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        }
    }
}

/// What one executor's attempts came to, on this worker.
#[derive(Debug)]
pub struct ExecutorMetrics {
    succeeded: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    cached: AtomicU64,
    duration: Histogram,
}

impl Default for ExecutorMetrics {
    fn default() -> Self {
        Self {
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            cached: AtomicU64::new(0),
            duration: Histogram::new(INSTANCE_BUCKETS),
        }
    }
}

impl ExecutorMetrics {
    /// Adds what a batch of attempts came to.
    pub fn add(&self, tally: &Tally) {
        let counters = [&self.succeeded, &self.failed, &self.timed_out, &self.cached];
        for (counter, &count) in counters.iter().zip(&tally.counts) {
            if count > 0 {
                counter.fetch_add(count, Ordering::Relaxed);
            }
        }
        for (bucket, &count) in self.duration.counts.iter().zip(&tally.buckets) {
            if count > 0 {
                bucket.fetch_add(count, Ordering::Relaxed);
            }
        }
        if tally.sum_ns > 0 {
            self.duration
                .sum_ns
                .fetch_add(tally.sum_ns, Ordering::Relaxed);
        }
    }

    fn statuses(&self) -> [(&'static str, u64); 4] {
        [
            ("succeeded", self.succeeded.load(Ordering::Relaxed)),
            ("failed", self.failed.load(Ordering::Relaxed)),
            ("timed_out", self.timed_out.load(Ordering::Relaxed)),
            ("cached", self.cached.load(Ordering::Relaxed)),
        ]
    }
}

/// Every metric agency exposes, but the backends' own ([`events::telemetry`]).
#[derive(Debug)]
pub struct Metrics {
    /// Sessions ended, by status: completed, partial, failed, cancelled.
    sessions: [AtomicU64; 4],
    running: AtomicI64,
    session_duration: Histogram,
    /// Each executor's attempts (executors are a bounded set: the registry's).
    executors: RwLock<BTreeMap<String, Arc<ExecutorMetrics>>>,
    retries: AtomicU64,
    dead_letters: [AtomicU64; 4],
    dispatch_ranges: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            sessions: Default::default(),
            running: AtomicI64::new(0),
            session_duration: Histogram::new(SESSION_BUCKETS),
            executors: RwLock::default(),
            retries: AtomicU64::new(0),
            dead_letters: Default::default(),
            dispatch_ranges: AtomicU64::new(0),
        }
    }
}

/// Counts a running session while it lives.
#[derive(Debug)]
pub struct RunningSession(&'static Metrics);

impl Drop for RunningSession {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// The handles of executor `name`'s counters, made on first use.
    pub fn executor(&self, name: &str) -> Arc<ExecutorMetrics> {
        let known = self
            .executors
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned();
        known.unwrap_or_else(|| {
            let mut executors = self
                .executors
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            executors.entry(name.to_string()).or_default().clone()
        })
    }

    /// Counts a session run under way until the handle is dropped.
    pub fn session_started(&'static self) -> RunningSession {
        self.running.fetch_add(1, Ordering::Relaxed);
        RunningSession(self)
    }

    /// Counts a session ended with `status` after `took`.
    pub fn session_ended(&self, status: ResultStatus, took: Duration) {
        let i = match status {
            ResultStatus::Completed => 0,
            ResultStatus::Partial => 1,
            ResultStatus::Failed => 2,
            ResultStatus::Cancelled => 3,
        };
        self.sessions[i].fetch_add(1, Ordering::Relaxed);
        self.session_duration.observe(took);
    }

    /// Counts an attempt that failed and is to be tried again.
    pub fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a message sent to the dead-letter topic.
    pub fn dead_letter(&self, reason: DeadLetter) {
        let i = DeadLetter::ALL
            .iter()
            .position(|&r| r == reason)
            .unwrap_or_default();
        self.dead_letters[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts ranges dispatched to workers.
    pub fn dispatched(&self, ranges: usize) {
        self.dispatch_ranges
            .fetch_add(ranges as u64, Ordering::Relaxed);
    }

    /// The metrics in the Prometheus (OpenMetrics) text format.
    pub fn encode(&'static self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Collected(self)));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a scrape reads.
#[derive(Debug)]
struct Collected(&'static Metrics);

/// Encodes one counter of a family with one label.
fn counters(
    encoder: &mut DescriptorEncoder<'_>,
    (name, help, label): (&str, &str, &str),
    values: &[(&str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in values {
        let labels = [(label, *value)];
        ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Encodes one counter without labels.
fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

impl Collector for Collected {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.sessions(&mut encoder)?;
        self.instances(&mut encoder)?;
        self.coordinator(&mut encoder)?;
        self.backends(&mut encoder)
    }
}

impl Collected {
    /// Sessions ended by status, running, and how long they ran.
    fn sessions(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let metrics = self.0;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let statuses = ["completed", "partial", "failed", "cancelled"];
        let ended: Vec<(&str, u64)> = statuses
            .iter()
            .zip(&metrics.sessions)
            .map(|(status, count)| (*status, load(count)))
            .collect();
        counters(
            encoder,
            (
                "agency_sessions",
                "Sessions this process ran to a result, by the result's status",
                "status",
            ),
            &ended,
        )?;
        let running = encoder.encode_descriptor(
            "agency_sessions_running",
            "Sessions this process is running",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(metrics.running.load(Ordering::Relaxed)).encode(running)?;
        let histogram = encoder.encode_descriptor(
            "agency_session_duration",
            "How long sessions ran, from their start to their result",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        metrics.session_duration.encode(histogram)?;
        Ok(())
    }

    /// Attempts by outcome and executor, and how long they took.
    fn instances(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let metrics = self.0;
        let executors = metrics
            .executors
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut family = encoder.encode_descriptor(
            "agency_instances",
            "Attempts of instances this worker made, by outcome and executor (cached: a memoized result, not executed)",
            None,
            MetricType::Counter,
        )?;
        for (executor, counts) in &executors {
            for (status, count) in counts.statuses() {
                let labels = [("status", status), ("executor", executor.as_str())];
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "agency_instance_duration",
            "How long executed attempts took, by executor",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (executor, counts) in &executors {
            let labels = [("executor", executor.as_str())];
            counts.duration.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// Retries, dead letters and dispatched ranges.
    fn coordinator(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let metrics = self.0;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        counter(
            encoder,
            "agency_retries",
            "Failed attempts this coordinator scheduled to be tried again",
            load(&metrics.retries),
        )?;
        let reasons: Vec<(&str, u64)> = DeadLetter::ALL
            .iter()
            .zip(&metrics.dead_letters)
            .map(|(reason, count)| (reason.as_str(), load(count)))
            .collect();
        counters(
            encoder,
            (
                "agency_dead_letters",
                "Messages this process sent to the dead-letter topic, by reason",
                "reason",
            ),
            &reasons,
        )?;
        counter(
            encoder,
            "agency_dispatch_ranges",
            "Ranges of instances this coordinator dispatched to workers",
            load(&metrics.dispatch_ranges),
        )?;
        Ok(())
    }

    /// Consumer lag, backend errors, outage retries, and the build.
    fn backends(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut family = encoder.encode_descriptor(
            "agency_kafka_consumer_lag",
            "Messages of the topic not yet read by this process's consumer, as librdkafka last reported (every 5 s)",
            None,
            MetricType::Gauge,
        )?;
        for (topic, lag) in events::telemetry::consumer_lag() {
            let labels = [("topic", topic.as_str())];
            ConstGauge::new(lag).encode(family.encode_family(&labels)?)?;
        }
        let errors = &events::telemetry::ERRORS;
        counters(
            encoder,
            (
                "agency_backend_errors",
                "Calls to a backend that failed (unreachable or refused), by backend: redis, kafka, file (the embedded state file)",
                "backend",
            ),
            &[
                ("redis", load(&errors.redis)),
                ("kafka", load(&errors.kafka)),
                ("file", load(&errors.file)),
            ],
        )?;
        counter(
            encoder,
            "agency_outage_retries",
            "Calls that found their server away and were tried again after a wait",
            load(&events::telemetry::OUTAGE_RETRIES),
        )?;
        let info = encoder.encode_descriptor(
            "agency_build",
            "The agency build: its version",
            None,
            MetricType::Info,
        )?;
        prometheus_client::metrics::info::Info::new([("version", env!("CARGO_PKG_VERSION"))])
            .encode(info)?;
        Ok(())
    }
}
