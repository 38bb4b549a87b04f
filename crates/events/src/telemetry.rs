//! What the backends count for the metrics endpoint (`agency … --http`): errors by backend,
//! waits for a server that is away, and the Kafka consumers' lag. Process-wide counters, read
//! at each scrape: the backends have no handle to pass them, and a process exposes one set.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Errors from a backend's calls (unreachable or refused), by backend.
#[derive(Debug, Default)]
pub struct Errors {
    /// Redis.
    pub redis: AtomicU64,
    /// Kafka.
    pub kafka: AtomicU64,
    /// The embedded state file (SQLite).
    pub file: AtomicU64,
}

/// Errors from backends' calls.
pub static ERRORS: Errors = Errors {
    redis: AtomicU64::new(0),
    kafka: AtomicU64::new(0),
    file: AtomicU64::new(0),
};

/// Calls that found their server away and were tried again after a wait ([`crate::retry()`]).
pub static OUTAGE_RETRIES: AtomicU64 = AtomicU64::new(0);

/// The messages not yet read by this process's consumers, by topic, as librdkafka last said.
static LAG: Mutex<BTreeMap<String, i64>> = Mutex::new(BTreeMap::new());

/// Counts one error of `backend` (`redis`, `kafka`, `file`).
pub(crate) fn error(backend: &str) {
    let counter = match backend {
        "redis" => &ERRORS.redis,
        "kafka" => &ERRORS.kafka,
        _ => &ERRORS.file,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Notes the lag of this process's consumer of `topic`: the sum over its assigned partitions.
#[cfg(feature = "kafka")]
pub(crate) fn set_lag(topic: &str, lag: i64) {
    let mut lags = LAG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    lags.insert(topic.to_string(), lag);
}

/// The consumers' lag by topic, as last noted.
pub fn consumer_lag() -> Vec<(String, i64)> {
    let lags = LAG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    lags.iter()
        .map(|(topic, lag)| (topic.clone(), *lag))
        .collect()
}
