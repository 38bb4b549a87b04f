//! The small built-in executors: `noop`, `echo`, `sleep`, `fail` and `emit_event`.

use super::{u64_field, Call, ExecError, Executor};
use async_trait::async_trait;
use events::{Broker, EVENTS_TOPIC};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Does nothing and returns `null`: the unit of fan-out benchmarks.
#[derive(Debug, Clone, Copy)]
pub struct Noop;

#[async_trait]
impl Executor for Noop {
    fn description(&self) -> &str {
        "does nothing and returns null (its input is not rendered)"
    }

    fn reads_input(&self) -> bool {
        false
    }

    async fn execute(&self, _call: Call) -> Result<Value, ExecError> {
        Ok(Value::Null)
    }
}

/// Returns its rendered input.
#[derive(Debug, Clone, Copy)]
pub struct Echo;

#[async_trait]
impl Executor for Echo {
    fn description(&self) -> &str {
        "returns its input"
    }

    async fn execute(&self, call: Call) -> Result<Value, ExecError> {
        Ok(call.input)
    }
}

/// `{"ms": n}`: waits n milliseconds (stopping early when cancelled), returns `{"slept_ms": n}`.
#[derive(Debug, Clone, Copy)]
pub struct Sleep;

#[async_trait]
impl Executor for Sleep {
    fn description(&self) -> &str {
        r#"sleeps {"ms"} milliseconds (stopping early when cancelled) and returns {"slept_ms"}"#
    }

    async fn execute(&self, call: Call) -> Result<Value, ExecError> {
        let ms = u64_field(&call.input, "ms")?
            .ok_or_else(|| ExecError::permanent("sleep needs `ms`"))?;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(ms)) => Ok(json!({"slept_ms": ms})),
            () = call.cancel.cancelled() => Err("cancelled".into()),
        }
    }
}

/// `{"times": k}`: fails the first k attempts of each instance, then echoes its input. For
/// exercising retries; with `"permanent": true` its failures say retrying cannot help.
#[derive(Debug, Clone, Copy)]
pub struct Fail;

#[async_trait]
impl Executor for Fail {
    fn description(&self) -> &str {
        r#"fails attempts 1..{"times"} of each instance (all when absent; permanently with "permanent": true), then echoes its input"#
    }

    async fn execute(&self, call: Call) -> Result<Value, ExecError> {
        let times = u64_field(&call.input, "times")?.unwrap_or(u64::MAX);
        if u64::from(call.key.attempt) <= times {
            let message = format!(
                "failing attempt {} of instance {} on purpose",
                call.key.attempt, call.key.instance
            );
            Err(match call.input.get("permanent") {
                Some(Value::Bool(true)) => ExecError::Permanent(message),
                _ => ExecError::Transient(message),
            })
        } else {
            Ok(call.input)
        }
    }
}

/// Publishes its input as an event on the `agency_events` topic, keyed by session, and returns it.
#[derive(Clone)]
pub struct EmitEvent {
    broker: Arc<dyn Broker>,
}

impl std::fmt::Debug for EmitEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmitEvent")
    }
}

impl EmitEvent {
    /// An executor publishing on `broker`'s events topic.
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        Self { broker }
    }
}

#[async_trait]
impl Executor for EmitEvent {
    fn description(&self) -> &str {
        "publishes its input on the agency_events topic, keyed by session, and returns it"
    }

    async fn execute(&self, call: Call) -> Result<Value, ExecError> {
        let event = json!({"key": call.key.to_string(), "event": call.input});
        let payload =
            serde_json::to_vec(&event).map_err(|e| ExecError::permanent(e.to_string()))?;
        self.broker
            .publish(EVENTS_TOPIC, &call.key.session, payload)
            .await
            .map_err(|e| format!("cannot publish event: {e}"))?;
        Ok(call.input)
    }
}

/// `emit_event` as seed 001 has it: prints its input as one line on stderr (`event <key>
/// <input>`) and returns it. `agency csv` runs it in place of [`EmitEvent`] when embedded.
#[derive(Debug, Clone, Copy)]
pub struct PrintEvent;

#[async_trait]
impl Executor for PrintEvent {
    fn description(&self) -> &str {
        "prints its input as one line on stderr and returns it"
    }

    async fn execute(&self, call: Call) -> Result<Value, ExecError> {
        eprintln!("event {} {}", call.key, call.input);
        Ok(call.input)
    }
}
