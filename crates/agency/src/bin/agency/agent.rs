//! `agency agent claim|complete|fail|release`: an external agent's side of tasks with
//! `"executor": "agent"` and of the task manager's tasks (seed 003), over Redis.

use crate::servers::Servers;
use anyhow::Context as _;
use serde_json::Value;
use std::process::ExitCode;
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
        servers: Servers,
    },
    /// Complete the claimed item with its result (JSON; null when absent)
    Complete {
        /// The claim's token
        token: String,
        /// The result, as JSON
        #[arg(long)]
        result: Option<String>,
        #[command(flatten)]
        servers: Servers,
    },
    /// Fail the claimed item's attempt (its task's retry policy decides what follows)
    Fail {
        /// The claim's token
        token: String,
        /// Why it failed
        #[arg(long)]
        error: String,
        #[command(flatten)]
        servers: Servers,
    },
    /// Give the claimed item back for another agent, as if never claimed
    Release {
        /// The claim's token
        token: String,
        #[command(flatten)]
        servers: Servers,
    },
}

/// Runs `work` on a small runtime with the store `servers` name (a Redis, or a Redis Cluster):
/// the agents' and the task manager's commands.
pub fn on_redis<F, Fut>(servers: &crate::servers::Servers, work: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(events::RedisStore) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async { work(servers.store().await?).await })
}

/// Runs an `agency agent` command.
pub fn run(command: AgentCommand) -> anyhow::Result<ExitCode> {
    let (AgentCommand::Claim { servers, .. }
    | AgentCommand::Complete { servers, .. }
    | AgentCommand::Fail { servers, .. }
    | AgentCommand::Release { servers, .. }) = &command;
    // The command moves into the work: the servers it names are copied out first.
    let servers = servers.clone();
    on_redis(&servers, |store| async move {
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
                let claimed = agency::agent_tasks::claim(&store, agent, wanted, wait).await?;
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
                agency::agent_tasks::complete(&store, token, result).await?;
            }
            AgentCommand::Fail { token, error, .. } => {
                agency::agent_tasks::fail(&store, token, error).await?;
            }
            AgentCommand::Release { token, .. } => {
                agency::agent_tasks::release(&store, token).await?;
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
