//! `agency agent claim|complete|fail|release`: an external agent's side of tasks with
//! `"executor": "agent"` and of the task manager's tasks (seed 003), over Redis or a state
//! file.

use crate::servers::Servers;
use anyhow::Context as _;
use events::{FileStore, Store, DEFAULT_CHECKPOINT};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Exit code of `agency agent claim` when no item came.
const NOTHING_CLAIMED: u8 = 3;

/// What an agent does.
#[derive(Debug, clap::Subcommand)]
pub enum AgentCommand {
    /// Claim the next waiting item of these types (or of any), of one workflow's tasks (or of
    /// any); prints it (token, session_id, task, instance, type, input, attempt), or exits 3
    /// when none came
    Claim {
        /// This agent's id, recorded with the claim
        #[arg(long)]
        agent: String,
        /// The agent types it takes, in order of preference (comma-separated); without, the
        /// oldest waiting item of any type
        #[arg(long, value_delimiter = ',')]
        types: Vec<String>,
        /// Only tasks of the task manager's workflow of this name
        #[arg(long)]
        workflow: Option<String>,
        /// Wait up to this long for an item
        #[arg(long, default_value_t = 0)]
        wait_ms: u64,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: TaskStore,
    },
    /// Complete the claimed item with its result (JSON; null when absent)
    Complete {
        /// The claim's token
        token: String,
        /// The result, as JSON
        #[arg(long)]
        result: Option<String>,
        #[command(flatten)]
        store: TaskStore,
    },
    /// Fail the claimed item's attempt (its task's retry policy decides what follows)
    Fail {
        /// The claim's token
        token: String,
        /// Why it failed
        #[arg(long)]
        error: String,
        #[command(flatten)]
        store: TaskStore,
    },
    /// Give the claimed item back for another agent, as if never claimed
    Release {
        /// The claim's token
        token: String,
        #[command(flatten)]
        store: TaskStore,
    },
}

/// Where the task manager and the agents' queue are: Redis (`--redis`, `--redis-cluster`), or
/// a state file (`--state PATH`) that each command holds while it runs, so that the commands
/// of several processes on one machine take turns and a claim is atomic.
#[derive(Debug, Clone, clap::Args)]
pub struct TaskStore {
    #[command(flatten)]
    servers: Servers,
    /// Keep the tasks in this state file instead of Redis (one machine; no server needed)
    #[arg(long, env = "AGENCY_TASKS_STATE", value_name = "PATH")]
    state: Option<PathBuf>,
    /// How long to wait for another process holding the state file, in ms
    #[arg(long, default_value_t = 5_000)]
    lock_timeout_ms: u64,
}

/// Runs `work` on a small runtime with the store `at` names; a state file is written before it
/// is let go.
pub fn on_store<F, Fut>(at: &TaskStore, work: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let Some(path) = &at.state else {
            return work(Arc::new(at.servers.store().await?)).await;
        };
        let patience = Duration::from_millis(at.lock_timeout_ms);
        let file = FileStore::open_waiting(path, DEFAULT_CHECKPOINT, patience)
            .await
            .with_context(|| format!("state file {}", path.display()))?;
        let done = work(Arc::new(file.store())).await;
        // Written whatever the command answered: a refused call changed nothing, a claim did.
        file.checkpoint()
            .await
            .with_context(|| format!("state file {}", path.display()))?;
        done
    })
}

/// Runs an `agency agent` command.
pub fn run(command: AgentCommand) -> anyhow::Result<ExitCode> {
    let (AgentCommand::Claim { store, .. }
    | AgentCommand::Complete { store, .. }
    | AgentCommand::Fail { store, .. }
    | AgentCommand::Release { store, .. }) = &command;
    // The command moves into the work: where the store is is copied out first.
    let at = store.clone();
    on_store(&at, |store| async move {
        match &command {
            AgentCommand::Claim {
                agent,
                types,
                workflow,
                wait_ms,
                json,
                ..
            } => {
                let wanted = events::Wanted {
                    types,
                    workflow: workflow.as_deref(),
                };
                let wait = Duration::from_millis(*wait_ms);
                let claimed =
                    agency::agent_tasks::claim(store.as_ref(), agent, wanted, wait).await?;
                let Some(claim) = claimed else {
                    eprintln!("nothing to claim {}", wanted_text(wanted));
                    return Ok(ExitCode::from(NOTHING_CLAIMED));
                };
                let described = agency::agent_tasks::describe(&claim);
                if *json {
                    println!("{described}");
                } else {
                    let fields = described.as_object().into_iter().flatten();
                    for (name, value) in fields.filter(|(_, value)| !value.is_null()) {
                        match value.as_str() {
                            Some(text) => println!("{name} {text}"),
                            None => println!("{name} {value}"),
                        }
                    }
                }
            }
            AgentCommand::Complete { token, result, .. } => {
                let result: Value = match result {
                    Some(text) => serde_json::from_str(text)
                        .with_context(|| format!("--result is not JSON: `{text}`"))?,
                    None => Value::Null,
                };
                agency::agent_tasks::complete(store.as_ref(), token, result).await?;
            }
            AgentCommand::Fail { token, error, .. } => {
                agency::agent_tasks::fail(store.as_ref(), token, error).await?;
            }
            AgentCommand::Release { token, .. } => {
                agency::agent_tasks::release(store.as_ref(), token).await?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// What a claim asked for, for people: `of analyze, validate in workflow review`.
fn wanted_text(wanted: events::Wanted<'_>) -> String {
    let types = match wanted.types {
        [] => "of any type".to_string(),
        types => format!("of {}", types.join(", ")),
    };
    match wanted.workflow {
        Some(workflow) => format!("{types} in workflow {workflow}"),
        None => types,
    }
}
