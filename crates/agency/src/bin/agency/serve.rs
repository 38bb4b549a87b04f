//! The distributed commands' arguments, each run by a function of its own: `agency
//! coordinator`, `worker`, `health`, `executors` (`services.rs`); `submit`, `rerun`, `cancel`,
//! `pause`, `resume`, `cache clear` (`actions.rs`); `status`, `results`, `watch`, `sessions`
//! (`control.rs`); over Kafka (`--kafka`, `AGENCY_KAFKA`) and Redis (`--redis`,
//! `AGENCY_REDIS`), `servers.rs`.

use crate::actions::{self, SubmitArgs};
use crate::control;
use crate::servers::Servers;
use crate::services;
use agency::intake::COORDINATOR_GROUP;
use agency::worker::WORKER_GROUP;
use agency::WorkerOptions;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Subcommand)]
pub enum Serve {
    /// Take sessions from the `agency_action` topic and run them (any number of coordinators)
    Coordinator {
        #[command(flatten)]
        servers: Servers,
        /// Consumer group on `agency_action`
        #[arg(long, default_value = COORDINATOR_GROUP)]
        group: String,
        /// Instances per dispatched range
        #[arg(long, default_value_t = taskgroup::DEFAULT_CHUNK)]
        chunk: u64,
        #[command(flatten)]
        http: crate::http_flags::HttpFlags,
    },
    /// Execute dispatched instances (any number of workers, on any machines)
    Worker {
        #[command(flatten)]
        servers: Servers,
        /// Instances in flight per task, for tasks that set no `concurrency`
        #[arg(long, default_value_t = 1024)]
        concurrency: usize,
        /// Dispatched ranges run at once. Per-item pipelines (`"each": true`) dispatch small
        /// ranges as items move on: raise it when they run long steps
        #[arg(long, default_value_t = WorkerOptions::default().ranges_in_flight as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        ranges_in_flight: u64,
        /// Consumer group on the dispatch topic
        #[arg(long, default_value = WORKER_GROUP)]
        group: String,
        #[command(flatten)]
        http: crate::http_flags::HttpFlags,
        #[command(flatten)]
        allow: crate::services::Allow,
    },
    /// Validate a session file and produce it to `agency_action`
    Submit(SubmitArgs),
    /// Pause a running session: nothing new is dispatched or started, running instances finish
    /// and are recorded, its status is `paused`; its deadlines keep counting
    Pause {
        session: String,
        #[command(flatten)]
        servers: Servers,
    },
    /// Resume a paused session: what is left of it is dispatched again
    Resume {
        session: String,
        #[command(flatten)]
        servers: Servers,
    },
    /// Run a session that did not complete again, reusing every success it recorded: only what
    /// failed or never finished is executed
    Rerun {
        session: String,
        #[command(flatten)]
        servers: Servers,
        /// Wait for the result and print it, with the exit code of `agency run`
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Memoized results (a task's `memoize`): `agency cache clear [--prefix P]`
    Cache {
        #[command(subcommand)]
        what: Cache,
    },
    /// Cancel a running session: nothing more is dispatched, running instances are cancelled,
    /// and its result is `cancelled` with what completed
    Cancel {
        session: String,
        #[command(flatten)]
        servers: Servers,
        /// Wait for the cancelled result and print it (exit 0 when it says `cancelled`)
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Show a session's live state (pending or running: counts per group and task, times, rate,
    /// ETA), or its result once it has one
    Status {
        /// The session (with --state: the one the file holds when omitted)
        session: Option<String>,
        #[command(flatten)]
        servers: Servers,
        /// Print JSON: the live state, or the result
        #[arg(long)]
        json: bool,
        /// Read an embedded run's state file (`agency run --state PATH`) instead of Redis, as
        /// of its last checkpoint (while the run goes on, too)
        #[arg(long, value_name = "PATH")]
        state: Option<std::path::PathBuf>,
    },
    /// Page through a task's results kept in the store by reference (a `separate` task over
    /// its `inline_results`): a JSON list, or one result per line with --jsonl
    Results {
        /// The session
        session: String,
        /// The task: TASK, or GROUP.TASK when several groups have one of that id
        task: String,
        /// The position of the first result
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// At most this many results (all from --from on when omitted)
        #[arg(long)]
        limit: Option<u64>,
        /// One result per line instead of one JSON list
        #[arg(long)]
        jsonl: bool,
        #[command(flatten)]
        servers: Servers,
        /// Read an embedded run's state file (`agency run --state PATH`) instead of Redis
        #[arg(long, value_name = "PATH")]
        state: Option<std::path::PathBuf>,
    },
    /// Follow a session's progress (total, rate, ETA) until its result, then print it with the
    /// exit code of `agency run`
    Watch {
        session: String,
        #[command(flatten)]
        servers: Servers,
        /// Stop watching after this many seconds (exit 124; the session goes on)
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Check Redis, Kafka and the coordinators' and workers' heartbeats; exit 1 saying what is
    /// missing or stale
    Health {
        #[command(flatten)]
        servers: Servers,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// List the executors the live workers run, with what each does
    Executors {
        #[command(flatten)]
        servers: Servers,
        /// Print a JSON list
        #[arg(long)]
        json: bool,
        /// The executors of the embedded engine (`agency run`), without asking any server
        #[arg(long)]
        embedded: bool,
    },
    /// List the recent sessions, newest first, with their status
    Sessions {
        #[command(flatten)]
        servers: Servers,
        /// Only those with this status (pending, running, paused, completed, partial, failed,
        /// cancelled, unknown, unreadable)
        #[arg(long)]
        status: Option<agency::client::SessionStatus>,
        /// Print a JSON list
        #[arg(long)]
        json: bool,
        /// How many at most
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// What `agency cache` does.
#[derive(Debug, clap::Subcommand)]
pub enum Cache {
    /// Remove memoized results (every one, or those whose key starts with --prefix), from Redis
    /// or from an embedded run's state file
    Clear {
        /// Only keys starting with this (literally: no patterns)
        #[arg(long, default_value = "")]
        prefix: String,
        #[command(flatten)]
        servers: Servers,
        /// The state file of embedded runs (`agency run --state PATH`) instead of Redis
        #[arg(long, value_name = "PATH")]
        state: Option<PathBuf>,
    },
}

pub fn run(command: Serve) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            Serve::Coordinator {
                servers,
                group,
                chunk,
                http,
            } => services::coordinator(&servers, &group, chunk, http.access()?).await,
            Serve::Worker {
                servers,
                concurrency,
                ranges_in_flight,
                group,
                http,
                allow,
            } => {
                let options = WorkerOptions {
                    concurrency,
                    ranges_in_flight: ranges_in_flight as usize,
                    group,
                    ..Default::default()
                };
                services::worker(&servers, options, http.access()?, &allow).await
            }
            Serve::Health { servers, json } => services::health(&servers, json).await,
            Serve::Executors {
                servers,
                json,
                embedded,
            } => services::executors(&servers, json, embedded).await,
            Serve::Submit(args) => actions::submit(args).await,
            Serve::Pause { session, servers } => actions::pause(&session, &servers, true).await,
            Serve::Resume { session, servers } => actions::pause(&session, &servers, false).await,
            Serve::Rerun {
                session,
                servers,
                wait,
                timeout,
            } => actions::rerun(&session, &servers, wait, timeout).await,
            Serve::Cancel {
                session,
                servers,
                wait,
                timeout,
            } => actions::cancel(&session, &servers, wait, timeout).await,
            Serve::Cache {
                what:
                    Cache::Clear {
                        prefix,
                        servers,
                        state,
                    },
            } => actions::cache_clear(&prefix, &servers, state).await,
            Serve::Status {
                session,
                servers,
                json,
                state,
            } => control::status_of(session, &servers, json, state.as_deref()).await,
            Serve::Results {
                session,
                task,
                from,
                limit,
                jsonl,
                servers,
                state,
            } => {
                let page = control::Page { from, limit, jsonl };
                let (store, _) = control::read_from(&servers, state.as_deref()).await?;
                control::results(store.as_ref(), &session, &task, page).await
            }
            Serve::Watch {
                session,
                servers,
                timeout,
            } => {
                let store = std::sync::Arc::new(servers.store().await?);
                let timeout = timeout.map(Duration::from_secs);
                control::watch(store, &session, timeout, &servers.redis_address()).await
            }
            Serve::Sessions {
                servers,
                status,
                json,
                limit,
            } => {
                let store = servers.store().await?;
                control::sessions(&store, status, json, limit).await
            }
        }
    })
}
