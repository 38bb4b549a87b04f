//! Watching sessions and the fleet: `agency status` (a session's live state, or its result),
//! `agency watch` (its progress until the result, or a timeout), `agency sessions` (the recent
//! ones), all read from Redis, and the text of `agency health` (`docs/control.md`).

use crate::run::print_json;
use crate::text::thousands;
use agency::client::{self, Status};
use events::Store;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use taskgroup::{LiveCounts, LiveState, SessionResult};

/// The exit code of `agency watch` when its `--timeout` passed first (as `timeout(1)`'s).
const TIMED_OUT: u8 = 124;

/// Exit code of a final result: 0 only when completed.
pub fn exit_code(result: &SessionResult) -> ExitCode {
    if result.completed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Which results `agency results` prints, and how.
pub struct Page {
    /// The first position.
    pub from: u64,
    /// At most this many.
    pub limit: Option<u64>,
    /// One per line instead of a JSON list.
    pub jsonl: bool,
}

/// `agency results SESSION TASK [--from I] [--limit N] [--jsonl]`: the results kept by
/// reference at positions `from..from+limit`, read from the store a page at a time and written
/// as they come (a JSON list, or JSON lines). A range outside the results is refused, naming
/// the task's count.
pub async fn results(
    store: &dyn Store,
    session: &str,
    task: &str,
    page: Page,
) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let kept = agency::results::kept(store, session, task).await?;
    let count = kept.reference.count;
    let name = &kept.reference.task;
    if page.limit == Some(0) {
        anyhow::bail!("--limit must be at least 1");
    }
    if page.from >= count && !(page.from == 0 && count == 0) {
        anyhow::bail!(
            "--from {} is past the last of task `{name}`'s {count} results (positions 0 to {})",
            page.from,
            count.saturating_sub(1)
        );
    }
    let end = page
        .limit
        .map_or(count, |limit| page.from.saturating_add(limit).min(count));
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written: std::io::Result<()> = async {
        if !page.jsonl {
            out.write_all(b"[")?;
        }
        for range in agency::results::pages(page.from..end) {
            let first = range.start == page.from;
            let results = kept
                .page(store, session, range)
                .await
                .map_err(std::io::Error::other)?;
            for (i, result) in results.iter().enumerate() {
                if page.jsonl {
                    serde_json::to_writer(&mut out, result)?;
                    out.write_all(b"\n")?;
                } else {
                    if !(first && i == 0) {
                        out.write_all(b",")?;
                    }
                    serde_json::to_writer(&mut out, result)?;
                }
            }
        }
        if !page.jsonl {
            out.write_all(b"]\n")?;
        }
        out.flush()
    }
    .await;
    match written {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        other => other.map(|()| ExitCode::SUCCESS).map_err(Into::into),
    }
}

/// `agency status SESSION [--json]`: the result once there is one (exit code as `agency run`),
/// the live state while it is pending or running (exit 0); an unknown session exits 1.
pub async fn status(
    store: &dyn Store,
    session: &str,
    json: bool,
    redis: &str,
) -> anyhow::Result<ExitCode> {
    match client::status(store, session).await {
        Ok(Status::Finished(result)) => {
            if json {
                print_json(&result)?;
            } else {
                print!("{}", describe_result(&result));
            }
            Ok(exit_code(&result))
        }
        Ok(Status::Live(state)) => {
            if json {
                print_json(&state)?;
            } else {
                print!("{}", describe_state(&state));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(agency::Error::Action(_)) => unknown(session, redis),
        Err(error) => Err(error.into()),
    }
}

/// The error for a session that is neither pending, running nor finished.
fn unknown<T>(session: &str, redis: &str) -> anyhow::Result<T> {
    anyhow::bail!("no session `{session}` is pending, running or has a result in {redis}")
}

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
fn describe_state(state: &LiveState) -> String {
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
fn describe_result(result: &SessionResult) -> String {
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

/// `agency watch SESSION [--timeout S]`: the session's progress from its live state as the
/// run announces it (a bar on a terminal, a line every 2 s elsewhere: settled of total, rate,
/// ETA), then its result,
/// printed like `agency run`'s with the same exit code. Past `timeout` it stops watching, says
/// so, and exits 124; the session goes on.
pub async fn watch(
    store: &dyn Store,
    session: &str,
    timeout: Option<Duration>,
    redis: &str,
) -> anyhow::Result<ExitCode> {
    // Each state a run writes is announced on its progress channel: followed as it comes, and
    // read from the store at least once a second (to catch up, and to see the result).
    let mut progress = store.subscribe(&events::progress_channel(session)).await?;
    let deadline = timeout.map(|timeout| Instant::now() + timeout);
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} instances, {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let mut last_line = Instant::now();
    let mut known = false;
    loop {
        if let Some(result) = agency::results::load_result(store, session).await? {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            print_json(&result)?;
            return Ok(exit_code(&result));
        }
        let left = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
        if left == Some(Duration::ZERO) {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            eprintln!(
                "watch {session}: no result within {} s; the session goes on (`agency status {session}`)",
                timeout.unwrap_or_default().as_secs()
            );
            return Ok(ExitCode::from(TIMED_OUT));
        }
        let wait = left.map_or(Duration::from_secs(1), |left| {
            left.min(Duration::from_secs(1))
        });
        let announced = match tokio::time::timeout(wait, progress.next()).await {
            Ok(Ok(payload)) => serde_json::from_slice::<LiveState>(&payload).ok(),
            Ok(Err(_)) => {
                // The subscription dropped: follow again; the store has what was missed.
                progress = store.subscribe(&events::progress_channel(session)).await?;
                None
            }
            Err(_) => None,
        };
        let state = match announced {
            Some(state) => state,
            None => match client::status(store, session).await {
                Ok(Status::Live(state)) => *state,
                // Its result came (it is read at the top), or it is between the state's
                // deletion and the result's arrival.
                Ok(Status::Finished(_)) => continue,
                Err(agency::Error::Action(_)) if known => continue,
                Err(agency::Error::Action(_)) => return unknown(session, redis),
                Err(error) => return Err(error.into()),
            },
        };
        known = true;
        let settled = state.instances.succeeded + state.instances.failed;
        let rate = state.rate_per_s.map_or("?/s".to_string(), |rate| {
            format!("{}/s", thousands(rate as u64))
        });
        let eta = state
            .eta_s
            .map_or("?".to_string(), |eta| format!("{eta:.0}s"));
        match &bar {
            Some(bar) => {
                bar.set_length(state.instances.total);
                bar.set_position(settled);
                bar.set_message(format!(
                    "{} failed, {rate}, ETA {eta}",
                    thousands(state.instances.failed)
                ));
            }
            None if last_line.elapsed() >= Duration::from_secs(2) => {
                last_line = Instant::now();
                let status = serde_json::to_value(state.status).unwrap_or(Value::Null);
                eprintln!(
                    "watch {session}: {}, {}/{} instances ({} failed), {rate}, ETA {eta}",
                    status.as_str().unwrap_or("?"),
                    thousands(settled),
                    thousands(state.instances.total),
                    thousands(state.instances.failed)
                );
            }
            None => {}
        }
    }
}

/// `agency sessions [--status S] [--json] [--limit N]`: the sessions listed most recently,
/// newest first, each with its status (its result's, or its live state's), the run and when it
/// was listed; `--status` keeps those with that status.
pub async fn sessions(
    store: &dyn Store,
    status: Option<&str>,
    json: bool,
    limit: usize,
) -> anyhow::Result<ExitCode> {
    let rows = client::sessions(store, status, limit).await?;
    if json {
        print_json(&rows)?;
    } else {
        for row in &rows {
            println!("{}  {:<10} {}", row.listed_at, row.status, row.session_id);
        }
    }
    Ok(ExitCode::SUCCESS)
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
