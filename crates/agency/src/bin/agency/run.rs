//! `agency run FILE`: validate and run a session on the embedded engine, show progress on stderr,
//! print the final result as one JSON object on stdout. Exit code 0 only when completed.

use crate::text::thousands;
use agency::embedded::{DurableRun, DurableStart, EmbeddedOptions, Engine};
use agency::Progress;
use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use taskgroup::{Session, SessionSpec};
use tokio_util::sync::CancellationToken;

/// Exit code when the run was interrupted with Ctrl-C (128 + SIGINT).
const INTERRUPTED: u8 = 130;

/// `--state`: where the run is kept, and how often it is written there.
#[derive(Debug)]
pub struct State {
    pub path: PathBuf,
    pub checkpoint: Duration,
    /// `--retry-failed`.
    pub retry_failed: bool,
}

pub fn run(
    file: &Path,
    options: EmbeddedOptions,
    quiet: bool,
    only: Option<&str>,
    state: Option<State>,
    http: Option<std::net::SocketAddr>,
) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let engine = match &state {
        None => Engine::new(options),
        Some(state) => runtime
            .block_on(Engine::with_state(options, &state.path, state.checkpoint))
            .with_context(|| format!("state file {}", state.path.display()))?,
    };
    let session = match only {
        None => engine.validate(&text),
        Some(only) => {
            let spec = SessionSpec::parse(&text).with_context(|| file.display().to_string())?;
            let all = spec.groups.len();
            let spec = spec
                .only(only)
                .map_err(|error| anyhow::anyhow!("{}: {error}", file.display()))?;
            if !quiet {
                let ids: Vec<&str> = spec.groups.iter().map(|g| g.id.as_str()).collect();
                eprintln!(
                    "--only {only}: running {} of {all} groups: {}",
                    ids.len(),
                    ids.join(", ")
                );
            }
            Session::validate(spec, &engine.rules())
        }
    }
    .with_context(|| file.display().to_string())?;
    // Agents reach the queue through Redis; an embedded run's queue is this process's own.
    let by_agents: Vec<&str> = session
        .spec
        .groups
        .iter()
        .flat_map(|group| &group.tasks)
        .filter(|task| task.executor == taskgroup::AGENT_EXECUTOR)
        .map(|task| task.id.as_str())
        .collect();
    if !by_agents.is_empty() {
        anyhow::bail!(
            "{}: task {} is done by agents (\"executor\": \"agent\"), which claim work through Redis: run it with `agency submit` on a coordinator and workers",
            file.display(),
            by_agents.join(", ")
        );
    }
    runtime.block_on(async {
        let serving = CancellationToken::new();
        let server = match http {
            Some(address) => Some(crate::http::serve(address, None, serving.clone()).await?),
            None => None,
        };
        let progress = Arc::new(Progress::default());
        let cancel = CancellationToken::new();
        let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Registered before the run starts, so a Ctrl-C at any point is a clean cancellation.
        let mut interrupts =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let on_interrupt = {
            let (cancel, interrupted) = (cancel.clone(), interrupted.clone());
            tokio::spawn(async move {
                if interrupts.recv().await.is_some() {
                    interrupted.store(true, Ordering::SeqCst);
                    cancel.cancel();
                }
            })
        };
        let display = (!quiet).then(|| tokio::spawn(show_progress(progress.clone(), "instances")));
        let result = match &state {
            None => engine.run(&session, &progress, cancel).await,
            Some(state) => match engine
                .durable_run(&session, text.as_bytes(), state.retry_failed)
                .await
            {
                Ok(found) => {
                    if !quiet {
                        say_how(&found, &state.path);
                    }
                    engine
                        .run_durably(&session, &found, text.as_bytes(), &progress, cancel)
                        .await
                }
                Err(error) => Err(error),
            },
        };
        on_interrupt.abort();
        serving.cancel();
        if let Some(server) = server {
            let _ = server.await;
        }
        if let Some(display) = display {
            display.abort();
            let _ = display.await;
        }
        let result = result?;
        if agency::results::has_references(&result) {
            // Results kept by reference are written out whole, a page at a time.
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            match agency::results::write_result(engine.store().as_ref(), &result, &mut out).await {
                Err(agency::Error::Action(message)) if message.contains("Broken pipe") => {}
                other => other?,
            }
        } else {
            print_json(&result)?;
        }
        Ok(if interrupted.load(Ordering::SeqCst) {
            ExitCode::from(INTERRUPTED)
        } else if result.completed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

/// What `--state` found, on stderr.
fn say_how(found: &DurableRun, path: &Path) {
    let id = &found.id;
    match &found.start {
        DurableStart::Started => {}
        DurableStart::Resumed { run } => eprintln!(
            "resuming run {run} of session {id} from {}: what it recorded is not run again",
            path.display()
        ),
        DurableStart::Finished => eprintln!(
            "session {id} already finished in {}; its result follows (nothing runs; --retry-failed reruns what failed)",
            path.display()
        ),
        DurableStart::Rerun => eprintln!(
            "rerunning what failed of session {id} from {}: every recorded success is reused",
            path.display()
        ),
    }
}

/// Pretty on a terminal, one compact line for pipes and files. A reader that closed the pipe
/// early (`| head`) is not an error.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write as _;
    let stdout = std::io::stdout();
    let text = if stdout.is_terminal() {
        serde_json::to_string_pretty(value)?
    } else {
        serde_json::to_string(value)?
    };
    let mut out = stdout.lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// A bar on a terminal; elsewhere a plain line every few seconds. Both show done/total `unit`,
/// rate and ETA.
pub(crate) async fn show_progress(progress: Arc<Progress>, unit: &'static str) {
    let started = Instant::now();
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(style(unit));
        let _finish = FinishOnDrop(bar.clone());
        loop {
            bar.set_length(progress.planned.load(Ordering::Relaxed));
            bar.set_position(progress.settled.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    } else {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (done, total) = (
                progress.settled.load(Ordering::Relaxed),
                progress.planned.load(Ordering::Relaxed),
            );
            let elapsed = started.elapsed().as_secs_f64();
            let rate = done as f64 / elapsed.max(1e-9);
            let eta = if rate > 0.0 {
                format!("{:.0}s", total.saturating_sub(done) as f64 / rate)
            } else {
                "?".into()
            };
            eprintln!(
                "progress: {}/{} {unit}, {}/s, ETA {eta}",
                thousands(done),
                thousands(total),
                thousands(rate as u64)
            );
        }
    }
}

/// `[00:00:03] ██████░░░ 1,200/4,000 instances, 412/s, ETA 7s`
fn style(unit: &str) -> ProgressStyle {
    let template = format!(
        "{{spinner}} [{{elapsed_precise}}] {{wide_bar}} {{human_pos}}/{{human_len}} {unit}, {{rate}}, ETA {{eta}}"
    );
    ProgressStyle::with_template(&template)
        .map(|style| {
            style.with_key(
                "rate",
                |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{}/s", thousands(state.per_sec() as u64));
                },
            )
        })
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// Clears the bar when the display task is aborted.
struct FinishOnDrop(ProgressBar);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
