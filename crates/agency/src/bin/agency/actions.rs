//! The commands that send a deployment an action: `agency submit`, `rerun`, `cancel`, `pause`,
//! `resume`; and `agency cache clear`.

use crate::control::exit_code;
use crate::servers::{connect, rules, Servers};
use crate::show::print_json;
use agency::{client, results};
use anyhow::Context as _;
use events::prelude::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use taskgroup::ResultStatus;

/// `agency submit`'s arguments.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The session file (JSON); or one of --task, --workflow
    #[arg(required_unless_present_any = ["task", "workflow"], conflicts_with_all = ["task", "workflow"])]
    file: Option<PathBuf>,
    /// Submit a session of one task `task` running this executor (its result in the
    /// context under `task`)
    #[arg(long, conflicts_with = "workflow")]
    task: Option<String>,
    /// With --task: the task's input, as JSON
    #[arg(long, requires = "task", default_value = "null")]
    input: String,
    /// Submit a session of the tasks listed in this file (a JSON list of
    /// `{"executor", "input", ...}`, ids `step1`, `step2`, ... unless given), run in parallel
    #[arg(long)]
    workflow: Option<PathBuf>,
    /// With --workflow: run each task after the one before
    #[arg(long, requires = "workflow")]
    sequential: bool,
    #[command(flatten)]
    servers: Servers,
    /// Wait for the final result and print it like `agency run` (same exit codes)
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds
    #[arg(long)]
    timeout: Option<u64>,
    /// When the session id is running another document: cancel that run, wait for its
    /// result, then submit this one (without it such a submission is refused; the same
    /// document attaches to the run under way)
    #[arg(long)]
    replace: bool,
}

/// The session `agency submit` submits, as JSON text, and what to call it in errors: the file,
/// or the one task of `--task` with `--input`, or the tasks of `--workflow`.
fn session_text(args: &SubmitArgs) -> anyhow::Result<(String, String)> {
    let read = |file: &PathBuf| {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
    };
    if let Some(executor) = &args.task {
        let input = &args.input;
        let input: Value =
            serde_json::from_str(input).with_context(|| format!("--input is not JSON: {input}"))?;
        let document = client::one_task(executor, input, serde_json::Map::new());
        return Ok((document.to_string(), format!("--task {executor}")));
    }
    if let Some(file) = &args.workflow {
        let tasks: Vec<Value> = serde_json::from_str(&read(file)?)
            .with_context(|| format!("{}: a workflow is a JSON list of tasks", file.display()))?;
        let document =
            client::workflow(tasks, args.sequential).with_context(|| file.display().to_string())?;
        return Ok((document.to_string(), file.display().to_string()));
    }
    let file = args
        .file
        .as_ref()
        .context("a session file, --task or --workflow is needed")?;
    Ok((read(file)?, file.display().to_string()))
}

/// `agency submit`: validated here first (a bad file is reported at once, not by a failed
/// result later), then produced; with `--wait`, its result printed.
pub async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let (text, what) = session_text(&args)?;
    let (broker, store) = connect(&args.servers).await?;
    taskgroup::Session::from_json(&text, &rules(broker.clone())).with_context(|| what.clone())?;
    let document: Value = serde_json::from_str(&text)?;
    // Subscribe before producing, so the result cannot be announced unseen.
    let mut waiter = results::ResultWaiter::subscribe(store.as_ref()).await?;
    let resubmit = if args.replace {
        client::Resubmit::Replace
    } else {
        client::Resubmit::Attach
    };
    let submitted =
        client::submit_with(broker.as_ref(), store.as_ref(), document, resubmit).await?;
    let id = &submitted.id;
    if submitted.attached {
        eprintln!(
            "session {id} is running this document already (run {}): attached to that run",
            submitted.run
        );
    }
    if !args.wait {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "session {id} (run {}): waiting for its result",
        submitted.run
    );
    let result = printed(
        &mut waiter,
        store.as_ref(),
        id,
        Some(&submitted.run),
        args.timeout,
    )
    .await?;
    Ok(exit_code(&result))
}

/// Waits for the result of run `run` of `session` (at most `timeout` seconds), and prints it.
async fn printed(
    waiter: &mut results::ResultWaiter,
    store: &dyn events::Store,
    session: &str,
    run: Option<&events::Origin>,
    timeout: Option<u64>,
) -> anyhow::Result<taskgroup::SessionResult> {
    let timeout = timeout.map(Duration::from_secs);
    let result = waiter.wait(store, session, run, timeout).await?;
    print_json(&result)?;
    Ok(result)
}

/// `agency rerun`: what failed or never finished runs again; with `wait`, its result printed.
pub async fn rerun(
    session: &str,
    servers: &Servers,
    wait: bool,
    timeout: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let (broker, store) = connect(servers).await?;
    let mut waiter = results::ResultWaiter::subscribe(store.as_ref()).await?;
    let submitted = client::rerun(broker.as_ref(), store.as_ref(), session).await?;
    if !wait {
        println!("{}", submitted.id);
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "session {session} (run {}): rerunning what failed, waiting for its result",
        submitted.run
    );
    let result = printed(
        &mut waiter,
        store.as_ref(),
        session,
        Some(&submitted.run),
        timeout,
    )
    .await?;
    Ok(exit_code(&result))
}

/// `agency cancel`: with `wait`, the cancelled result printed (exit 0 when it says `cancelled`).
pub async fn cancel(
    session: &str,
    servers: &Servers,
    wait: bool,
    timeout: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let (broker, store) = connect(servers).await?;
    let mut waiter = results::ResultWaiter::subscribe(store.as_ref()).await?;
    let run = match client::cancel(broker.as_ref(), store.as_ref(), session).await? {
        client::CancelAnswer::Sent { run } => {
            eprintln!("cancel of session {session} (run {run}) sent");
            Some(run)
        }
        client::CancelAnswer::Withdrawn => {
            eprintln!("session {session} was pending: withdrawn, it will not run");
            None
        }
        client::CancelAnswer::Finished(result) => anyhow::bail!(
            "session `{session}` has already finished ({}); nothing to cancel",
            result.status
        ),
        client::CancelAnswer::Unknown => anyhow::bail!(
            "no session `{session}` is pending, running or has a result in {}; nothing to cancel",
            servers.redis_address()
        ),
    };
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    let run: Option<events::Origin> = run.and_then(|run| run.parse().ok());
    let result = printed(&mut waiter, store.as_ref(), session, run.as_ref(), timeout).await?;
    Ok(if result.status == ResultStatus::Cancelled {
        ExitCode::SUCCESS
    } else {
        exit_code(&result)
    })
}

/// `agency pause` (`paused`) and `agency resume`.
pub async fn pause(session: &str, servers: &Servers, paused: bool) -> anyhow::Result<ExitCode> {
    let what = if paused { "pause" } else { "resume" };
    let (broker, store) = connect(servers).await?;
    match client::pause(broker.as_ref(), store.as_ref(), session, paused).await? {
        client::CancelAnswer::Sent { run } => {
            eprintln!("{what} of session {session} (run {run}) sent");
            Ok(ExitCode::SUCCESS)
        }
        client::CancelAnswer::Finished(result) => {
            anyhow::bail!(
                "session `{session}` has already finished ({}); nothing to {what}",
                result.status
            )
        }
        client::CancelAnswer::Unknown | client::CancelAnswer::Withdrawn => anyhow::bail!(
            "no session `{session}` is running in {}; nothing to {what}",
            servers.redis_address()
        ),
    }
}

/// `agency cache clear`: memoized results removed from Redis or from a state file.
pub async fn cache_clear(
    prefix: &str,
    servers: &Servers,
    state: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let (removed, from) = match state {
        Some(path) => {
            let store = events::FileStore::open(&path, events::DEFAULT_CHECKPOINT)
                .await
                .with_context(|| format!("state file {}", path.display()))?;
            let from = format!("state file {}", path.display());
            (store.memo_clear(prefix).await?, from)
        }
        None => {
            let store = servers.store().await?;
            (store.memo_clear(prefix).await?, servers.redis_address())
        }
    };
    let under = if prefix.is_empty() {
        String::new()
    } else {
        format!(" with keys starting {prefix:?}")
    };
    println!("removed {removed} memoized results{under} from {from}");
    Ok(ExitCode::SUCCESS)
}
