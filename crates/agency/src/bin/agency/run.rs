//! `agency run`: a session on the embedded engine, kept in a state file with `--state`.

use crate::show::{print_json, serve_http, show_progress};
use agency::embedded::{DurableRun, DurableStart, EmbeddedOptions, Engine};
use agency::Progress;
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use taskgroup::{Session, SessionResult, SessionSpec};
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

/// What `agency run` was asked.
#[derive(Debug)]
pub struct RunArgs {
    pub file: PathBuf,
    pub options: EmbeddedOptions,
    pub quiet: bool,
    pub only: Option<String>,
    pub state: Option<State>,
    pub http: Option<std::net::SocketAddr>,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let file = &args.file;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut engine = match &args.state {
        None => Engine::new(args.options.clone()),
        Some(state) => runtime
            .block_on(Engine::with_state(
                args.options.clone(),
                &state.path,
                state.checkpoint,
            ))
            .with_context(|| format!("state file {}", state.path.display()))?,
    };
    // No one reads this process's events topic: seed 001's emit_event prints its line on
    // stderr, as `agency csv` does.
    engine
        .registry_mut()
        .register("emit_event", agency::executors::PrintEvent);
    let session = validated(&engine, &args, &text)?;
    runtime.block_on(async {
        let serving = CancellationToken::new();
        let server = serve_http(
            args.http
                .map(|address| (address, agency::http::HttpAccess::open())),
            None,
            serving.clone(),
        )
        .await?;
        let progress = Arc::new(Progress::default());
        let cancel = CancellationToken::new();
        // Registered before the run starts, so a Ctrl-C at any point is a clean cancellation.
        let (interrupted, on_interrupt) = cancel_on_interrupt(cancel.clone())?;
        let display =
            (!args.quiet).then(|| tokio::spawn(show_progress(progress.clone(), "instances")));
        let result = execute(&engine, &session, &text, &args, &progress, cancel).await;
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
        print_result(&engine, &result).await?;
        Ok(if interrupted.load(Ordering::SeqCst) {
            ExitCode::from(INTERRUPTED)
        } else if result.completed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

/// The session of `text`, checked against the engine's executors (only the groups of
/// `--only`, and what they depend on); a task done by agents is refused here.
fn validated(engine: &Engine, args: &RunArgs, text: &str) -> anyhow::Result<Session> {
    let file = &args.file;
    let session = match &args.only {
        None => engine.validate(text),
        Some(only) => {
            let spec = SessionSpec::parse(text).with_context(|| file.display().to_string())?;
            let all = spec.groups.len();
            let spec = spec
                .only(only)
                .map_err(|error| anyhow::anyhow!("{}: {error}", file.display()))?;
            if !args.quiet {
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
    Ok(session)
}

/// Cancels `cancel` on Ctrl-C, saying so in the flag returned.
fn cancel_on_interrupt(
    cancel: CancellationToken,
) -> anyhow::Result<(Arc<AtomicBool>, tokio::task::JoinHandle<()>)> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let mut interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let flag = interrupted.clone();
    let watching = tokio::spawn(async move {
        if interrupts.recv().await.is_some() {
            flag.store(true, Ordering::SeqCst);
            cancel.cancel();
        }
    });
    Ok((interrupted, watching))
}

/// Runs the session, in its state file with `--state` (resumed, or its result read back).
async fn execute(
    engine: &Engine,
    session: &Session,
    text: &str,
    args: &RunArgs,
    progress: &Progress,
    cancel: CancellationToken,
) -> agency::Result<SessionResult> {
    let Some(state) = &args.state else {
        return engine.run(session, progress, cancel).await;
    };
    let found = engine
        .durable_run(session, text.as_bytes(), state.retry_failed)
        .await?;
    if !args.quiet {
        say_how(&found, &state.path);
    }
    engine
        .run_durably(session, &found, text.as_bytes(), progress, cancel)
        .await
}

/// Prints the result on stdout; results kept by reference are written out whole, a page at a
/// time. A reader that closed the pipe early (`| head`) is not an error.
async fn print_result(engine: &Engine, result: &SessionResult) -> anyhow::Result<()> {
    if !agency::results::has_references(result) {
        return print_json(result);
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match agency::results::write_result(engine.store().as_ref(), result, &mut out).await {
        Err(agency::Error::Output(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(())
        }
        other => Ok(other?),
    }
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
