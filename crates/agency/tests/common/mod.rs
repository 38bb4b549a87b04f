//! Helpers for engine tests: run a session document on a fresh embedded engine.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use agency::embedded::{EmbeddedOptions, Engine};
use agency::{Call, Executor, Progress};
use async_trait::async_trait;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub fn engine() -> Engine {
    Engine::new(EmbeddedOptions::default())
}

pub async fn run_on(engine: &Engine, doc: &Value) -> Value {
    let session = engine
        .validate(&doc.to_string())
        .unwrap_or_else(|e| panic!("invalid session: {e}"));
    engine
        .run(&session, &Progress::default(), CancellationToken::new())
        .await
        .expect("session runs")
        .to_json()
}

pub async fn run(doc: Value) -> Value {
    run_on(&engine(), &doc).await
}

/// Counts calls in flight and remembers the most seen at once.
#[derive(Debug, Default)]
pub struct Gauge {
    pub now: AtomicUsize,
    pub max: AtomicUsize,
    pub calls: AtomicUsize,
}

/// An executor that holds each call for `ms` milliseconds while the gauge counts it.
#[derive(Debug, Clone)]
pub struct Measured {
    pub gauge: Arc<Gauge>,
    pub ms: u64,
}

#[async_trait]
impl Executor for Measured {
    async fn execute(&self, call: Call) -> Result<Value, agency::ExecError> {
        let now = self.gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.gauge.max.fetch_max(now, Ordering::SeqCst);
        self.gauge.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(self.ms)).await;
        self.gauge.now.fetch_sub(1, Ordering::SeqCst);
        Ok(call.input)
    }
}

/// An executor that never finishes and ignores cancellation.
#[derive(Debug, Clone, Copy)]
pub struct Stubborn;

#[async_trait]
impl Executor for Stubborn {
    async fn execute(&self, _call: Call) -> Result<Value, agency::ExecError> {
        std::future::pending::<()>().await;
        Ok(Value::Null)
    }
}

/// An executor that panics on its first attempt of instance 1 and echoes every other input.
#[derive(Debug, Clone, Copy)]
pub struct Panicky;

#[async_trait]
impl Executor for Panicky {
    async fn execute(&self, call: Call) -> Result<Value, agency::ExecError> {
        if call.key.instance == 1 && call.key.attempt == 1 {
            panic!("boom at instance {}", call.key.instance);
        }
        Ok(call.input)
    }
}

/// `value` without the times a result carries (they differ from run to run).
pub fn without_times(mut value: Value) -> Value {
    strip_times(&mut value);
    value
}

pub fn strip_times(value: &mut Value) {
    match value {
        Value::Object(object) => {
            for key in [
                "submitted_at",
                "started_at",
                "finished_at",
                "duration_ms",
                "last_attempt_at",
            ] {
                object.remove(key);
            }
            object.values_mut().for_each(strip_times);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_times),
        _ => {}
    }
}
