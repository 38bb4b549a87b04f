//! The text of `agency status` (a live state, a result) and `agency health`.

use crate::text::thousands;
use serde_json::Value;
use std::fmt::Write as _;
use taskgroup::{LiveCounts, LiveState, SessionResult};

/// `1,200 of 4,000 settled: 1,197 succeeded, 3 failed, 2,800 running; 1,250 attempts, 50 retries`
fn describe_counts(counts: &LiveCounts) -> String {
    format!(
        "{} of {} settled: {} succeeded, {} failed, {} running; {} attempts, {} retries",
        thousands(counts.succeeded + counts.failed),
        thousands(counts.total),
        thousands(counts.succeeded),
        thousands(counts.failed),
        thousands(counts.running),
        thousands(counts.attempts),
        thousands(counts.retries)
    )
}

/// A running session as lines of text.
pub fn describe_state(state: &LiveState) -> String {
    let status = serde_json::to_value(state.status).unwrap_or(Value::Null);
    let mut text = format!(
        "session {}: {}",
        state.session_id,
        status.as_str().unwrap_or("?")
    );
    if let Some(run) = &state.run {
        let _ = write!(text, " (run {run})");
    }
    for (what, at) in [
        ("submitted", &state.submitted_at),
        ("started", &state.started_at),
        ("updated", &state.updated_at),
    ] {
        if let Some(at) = at {
            let _ = write!(text, ", {what} {at}");
        }
    }
    let _ = writeln!(text);
    if let Some(description) = &state.description {
        let _ = writeln!(text, "  {description}");
    }
    if state.groups.is_empty() {
        return text;
    }
    let _ = write!(text, "  instances: {}", describe_counts(&state.instances));
    if let Some(rate) = state.rate_per_s {
        let _ = write!(text, "; {}/s", thousands(rate as u64));
    }
    if let Some(eta) = state.eta_s {
        let _ = write!(text, ", ETA {eta:.0}s");
    }
    let _ = writeln!(text);
    for (group, live) in &state.groups {
        let status = serde_json::to_value(live.status).unwrap_or(Value::Null);
        let _ = writeln!(
            text,
            "  group {group}{}: {}",
            named(&live.name),
            status.as_str().unwrap_or("?")
        );
        for (task, counts) in &live.tasks {
            let _ = writeln!(text, "    task {task}: {}", describe_counts(counts));
        }
    }
    text
}

/// ` (Name)` after an id that has a name.
fn named(name: &Option<String>) -> String {
    name.as_ref()
        .map(|name| format!(" ({name})"))
        .unwrap_or_default()
}

/// A final result as lines of text.
pub fn describe_result(result: &SessionResult) -> String {
    let mut text = format!("session {}: {}", result.session_id, result.status);
    if let Some(run) = &result.run {
        let _ = write!(text, " (run {run})");
    }
    let _ = writeln!(text);
    if let Some(description) = &result.description {
        let _ = writeln!(text, "  {description}");
    }
    for (group, summary) in &result.groups {
        let status = serde_json::to_value(summary.status).unwrap_or(Value::Null);
        let _ = writeln!(
            text,
            "  group {group}{}: {}",
            named(&summary.name),
            status.as_str().unwrap_or("?")
        );
        for (task, summary) in &summary.tasks {
            let status = serde_json::to_value(summary.status).unwrap_or(Value::Null);
            let _ = writeln!(
                text,
                "    task {task}{}: {}, {} of {} succeeded, {} failed, {} attempts",
                named(&summary.name),
                status.as_str().unwrap_or("?"),
                thousands(summary.succeeded),
                thousands(summary.instances),
                thousands(summary.failed),
                thousands(summary.attempts)
            );
        }
    }
    for error in &result.errors {
        let _ = writeln!(text, "  error: {error}");
    }
    text
}

/// `agency health` as text: the verdict and each problem, then what answered.
pub fn describe_health(health: &agency::health::Health) -> String {
    let mut text = String::new();
    if health.healthy {
        let _ = writeln!(text, "healthy");
    } else {
        let _ = writeln!(text, "unhealthy:");
        for problem in &health.problems {
            let _ = writeln!(text, "  - {problem}");
        }
    }
    let _ = writeln!(text, "redis: {}", health.redis.detail);
    let _ = writeln!(text, "kafka: {}", health.kafka.detail);
    for (what, members) in [
        ("coordinators", &health.coordinators),
        ("workers", &health.workers),
        ("stale", &health.stale),
        ("gone", &health.gone),
    ] {
        if members.is_empty() {
            continue;
        }
        let _ = writeln!(text, "{what}:");
        for seen in members {
            let member = &seen.member;
            let _ = writeln!(
                text,
                "  {} on {} (pid {}, {}), last seen {} ({:.0} s ago), {} running",
                member.id,
                member.host,
                member.pid,
                member.version,
                seen.last_seen,
                seen.silent_s,
                thousands(member.running)
            );
        }
    }
    text
}
