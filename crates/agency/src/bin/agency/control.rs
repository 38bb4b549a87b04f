//! Watching sessions and the fleet: `agency status` (a session's live state, or its result),
//! `agency watch` (its progress until the result, or a timeout), `agency sessions` (the recent
//! ones), all read from Redis, and the text of `agency health` (`docs/control.md`).

use crate::describe::{describe_result, describe_state};
use crate::servers::Servers;
use crate::show::print_json;
use crate::text::thousands;
use agency::client::{self, Status};
use anyhow::Context as _;
use events::Store;
use futures_util::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use taskgroup::{LiveState, SessionResult};

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
    stopped: Option<&Path>,
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
        Ok(Status::Live(mut state)) => {
            let Some(path) = stopped else {
                if json {
                    print_json(&state)?;
                } else {
                    print!("{}", describe_state(&state));
                }
                return Ok(ExitCode::SUCCESS);
            };
            // Its state is the last checkpoint of a run no process holds: nothing moves.
            (state.rate_per_s, state.eta_s) = (None, None);
            let resume = format!("agency run SESSION_FILE --state {}", path.display());
            if json {
                let mut shown = serde_json::to_value(&*state)?;
                shown["held"] = Value::Bool(false);
                shown["resume"] = Value::String(resume);
                print_json(&shown)?;
            } else {
                print!("{}", describe_state(&state));
                println!(
                    "  no process holds this run: it stopped before it finished (killed?); what it recorded is kept, resume it with `{resume}`"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(agency::Error::UnknownSession { .. }) => unknown(session, redis),
        Err(error) => Err(error.into()),
    }
}

/// The error for a session that is neither pending, running nor finished.
fn unknown<T>(session: &str, redis: &str) -> anyhow::Result<T> {
    anyhow::bail!("no session `{session}` is pending, running or has a result in {redis}")
}

/// `agency watch SESSION [--timeout S]`: the session's progress from its live state as the
/// run announces it (the client's follower; a bar on a terminal, a line every 2 s elsewhere:
/// settled of total, rate, ETA), then its result, printed like `agency run`'s with the same
/// exit code. Past `timeout` it stops watching, says so, and exits 124; the session goes on.
pub async fn watch(
    store: Arc<dyn Store>,
    session: &str,
    timeout: Option<Duration>,
    redis: &str,
) -> anyhow::Result<ExitCode> {
    let deadline = timeout.map(|timeout| tokio::time::Instant::now() + timeout);
    let mut shown = Shown::new();
    let mut updates = std::pin::pin!(client::follow(store, session, Duration::from_secs(1)));
    loop {
        let next = match deadline {
            None => updates.next().await,
            Some(deadline) => match tokio::time::timeout_at(deadline, updates.next()).await {
                Ok(next) => next,
                Err(_) => {
                    shown.clear();
                    eprintln!(
                        "watch {session}: no result within {} s; the session goes on (`agency status {session}`)",
                        timeout.unwrap_or_default().as_secs()
                    );
                    return Ok(ExitCode::from(TIMED_OUT));
                }
            },
        };
        match next {
            Some(Ok(Status::Live(state))) => shown.show(session, &state),
            Some(Ok(Status::Finished(result))) => {
                shown.clear();
                print_json(&result)?;
                return Ok(exit_code(&result));
            }
            Some(Err(agency::Error::UnknownSession { .. })) => return unknown(session, redis),
            Some(Err(error)) => return Err(error.into()),
            None => anyhow::bail!("watch {session}: the follower ended without a result"),
        }
    }
}

/// How `agency watch` shows progress: a bar on a terminal, a line every 2 s elsewhere.
struct Shown {
    bar: Option<ProgressBar>,
    last_line: Option<Instant>,
}

impl Shown {
    fn new() -> Self {
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
        Self {
            bar,
            last_line: None,
        }
    }

    fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn show(&mut self, session: &str, state: &LiveState) {
        let settled = state.instances.succeeded + state.instances.failed;
        let rate = state.rate_per_s.map_or("?/s".to_string(), |rate| {
            format!("{}/s", thousands(rate as u64))
        });
        let eta = state
            .eta_s
            .map_or("?".to_string(), |eta| format!("{eta:.0}s"));
        let failed = thousands(state.instances.failed);
        if let Some(bar) = &self.bar {
            bar.set_length(state.instances.total);
            bar.set_position(settled);
            bar.set_message(format!("{failed} failed, {rate}, ETA {eta}"));
            return;
        }
        if self
            .last_line
            .is_some_and(|last| last.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        self.last_line = Some(Instant::now());
        let status = serde_json::to_value(state.status).unwrap_or(Value::Null);
        eprintln!(
            "watch {session}: {}, {}/{} instances ({failed} failed), {rate}, ETA {eta}",
            status.as_str().unwrap_or("?"),
            thousands(settled),
            thousands(state.instances.total),
        );
    }
}

/// `agency sessions [--status S] [--json] [--limit N]`: the sessions listed most recently,
/// newest first, each with its status (its result's, or its live state's), the run and when it
/// was listed; `--status` keeps those with that status.
pub async fn sessions(
    store: &dyn Store,
    status: Option<client::SessionStatus>,
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

/// Where `agency status` and `agency results` read: an embedded run's state file with
/// `--state`, else the store of `--redis`/`--redis-cluster`.
pub async fn read_from(
    servers: &Servers,
    state: Option<&Path>,
) -> anyhow::Result<(Box<dyn Store>, String)> {
    Ok(match state {
        Some(path) => {
            let store = events::FileStore::open_read_only(path)
                .with_context(|| format!("state file {}", path.display()))?;
            (Box::new(store), format!("state file {}", path.display()))
        }
        None => (Box::new(servers.store().await?), servers.redis_address()),
    })
}

/// `agency status [SESSION] [--state PATH]`: with a state file and no session, the one it
/// holds.
pub async fn status_of(
    session: Option<String>,
    servers: &Servers,
    json: bool,
    state: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let (store, where_) = read_from(servers, state).await?;
    let session = match (session, state) {
        (Some(session), _) => session,
        (None, Some(_)) => match store.sessions(1).await?.into_iter().next() {
            Some((session, _)) => session,
            None => anyhow::bail!("{where_} holds no session"),
        },
        (None, None) => anyhow::bail!(
            "name the session: agency status SESSION (or read a state file: --state PATH)"
        ),
    };
    // A run's state file is held by the process running it.
    let stopped = match state {
        Some(path) if !events::FileStore::is_held(path)? => Some(path),
        _ => None,
    };
    status(store.as_ref(), &session, json, &where_, stopped).await
}
