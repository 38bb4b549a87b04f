//! The distributed commands: `agency coordinator`, `agency worker`, `agency submit`,
//! `agency cancel`, `agency status`, `agency watch`, `agency sessions` (the last three in
//! `control.rs`), over Kafka (`--kafka`, `AGENCY_KAFKA`) and Redis
//! (`--redis`, `AGENCY_REDIS`).

use crate::control::{self, exit_code};
use crate::run::print_json;
use agency::intake::{self, COORDINATOR_GROUP};
use agency::worker::WORKER_GROUP;
use agency::{client, connect, results};
use agency::{health, Registry, Worker, WorkerOptions};
use anyhow::Context as _;
use events::prelude::*;
use events::{Broker, GroupProtocol, KafkaOptions, Namespaced};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use taskgroup::Rules;
use tokio_util::sync::CancellationToken;

/// Where the servers are.
#[derive(Debug, Clone, clap::Args)]
pub struct Servers {
    /// Kafka bootstrap servers
    #[arg(long, env = "AGENCY_KAFKA", default_value = "127.0.0.1:9092")]
    pub kafka: String,
    /// Redis URL
    #[arg(long, env = "AGENCY_REDIS", default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// A Redis Cluster instead of --redis: some of its nodes, HOST:PORT,... (the rest are found)
    #[arg(long, env = "AGENCY_REDIS_CLUSTER", value_name = "HOST:PORT,...")]
    pub redis_cluster: Option<String>,
    /// A prefix for every Kafka topic and consumer group, so deployments sharing a cluster stay apart
    #[arg(long, env = "AGENCY_NAMESPACE", default_value = "")]
    pub namespace: String,
    /// How long a Kafka fetch waits for data, in ms. Apache Kafka answers a fetch as soon as data
    /// arrives, so this only bounds idle requests (5 ms cost an idle broker a fifth of a core);
    /// a broker that answers only at the deadline (Tansu) puts about this much on every hop.
    #[arg(long, env = "AGENCY_KAFKA_FETCH_WAIT_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub kafka_fetch_wait_ms: u64,
    /// How consumer groups share partitions: `consumer` (KIP-848, Kafka 4; no member stops
    /// when another joins or leaves) or `classic` (cooperative-sticky, for brokers without it)
    #[arg(long, env = "AGENCY_KAFKA_GROUP_PROTOCOL", default_value = "consumer")]
    pub kafka_group_protocol: GroupProtocol,
    /// Partitions of the topics agency creates
    #[arg(long, env = "AGENCY_KAFKA_PARTITIONS", default_value_t = 8, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub kafka_partitions: i32,
    /// Replicas of each partition of the topics agency creates (at most the number of brokers)
    #[arg(long, env = "AGENCY_KAFKA_REPLICATION", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub kafka_replication: i32,
}

impl Servers {
    /// These settings as the `AGENCY_*` variables they are read from, for processes started
    /// with the same ones.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("AGENCY_KAFKA", self.kafka.clone()),
            ("AGENCY_REDIS", self.redis.clone()),
            (
                "AGENCY_KAFKA_FETCH_WAIT_MS",
                self.kafka_fetch_wait_ms.to_string(),
            ),
            (
                "AGENCY_KAFKA_GROUP_PROTOCOL",
                self.kafka_group_protocol.to_string(),
            ),
            ("AGENCY_KAFKA_PARTITIONS", self.kafka_partitions.to_string()),
            (
                "AGENCY_KAFKA_REPLICATION",
                self.kafka_replication.to_string(),
            ),
        ];
        if let Some(nodes) = &self.redis_cluster {
            env.push(("AGENCY_REDIS_CLUSTER", nodes.clone()));
        }
        env
    }

    /// The store: on the Redis Cluster when one is named, else on the Redis at `redis`.
    pub async fn store(&self) -> agency::Result<events::RedisStore> {
        match &self.redis_cluster {
            Some(nodes) => connect::connect_cluster_store(nodes).await,
            None => connect::connect_store(&self.redis).await,
        }
    }

    /// Where the store is, for messages.
    pub fn redis_address(&self) -> String {
        match &self.redis_cluster {
            Some(nodes) => format!("the Redis Cluster {nodes}"),
            None => self.redis.clone(),
        }
    }

    pub fn kafka_options(&self) -> KafkaOptions {
        KafkaOptions {
            fetch_wait: Duration::from_millis(self.kafka_fetch_wait_ms),
            group_protocol: self.kafka_group_protocol,
            partitions: self.kafka_partitions,
            replication: self.kafka_replication,
            ..KafkaOptions::new(&self.kafka)
        }
    }
}

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
        /// Serve `/metrics` (Prometheus), the status page (`/`) and its JSON API (`/api/`) on
        /// this address (HOST:PORT, or a port for 127.0.0.1)
        #[arg(long, env = "AGENCY_HTTP", value_name = "ADDR", value_parser = crate::http::address)]
        http: Option<std::net::SocketAddr>,
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
        /// Serve `/metrics` (Prometheus) on this address (HOST:PORT, or a port for 127.0.0.1)
        #[arg(long, env = "AGENCY_HTTP", value_name = "ADDR", value_parser = crate::http::address)]
        http: Option<std::net::SocketAddr>,
    },
    /// Validate a session file and produce it to `agency_action`
    Submit {
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
    },
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
        /// Only those with this status (pending, running, completed, partial, failed, cancelled)
        #[arg(long)]
        status: Option<String>,
        /// Print a JSON list
        #[arg(long)]
        json: bool,
        /// How many at most
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Cancelled on Ctrl-C or SIGTERM: services stop cleanly.
fn shutdown_on_signals() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let fire = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
        fire.cancel();
    });
    Ok(token)
}

pub(crate) async fn connect(
    servers: &Servers,
) -> anyhow::Result<(Arc<dyn Broker>, Arc<dyn Store>)> {
    let kafka: Arc<dyn Broker> = Arc::new(connect::connect_broker(servers.kafka_options()).await?);
    let broker: Arc<dyn Broker> = if servers.namespace.is_empty() {
        kafka
    } else {
        Arc::new(Namespaced::new(kafka, &servers.namespace))
    };
    let store = servers.store().await?;
    Ok((broker, Arc::new(store)))
}

pub(crate) fn rules(broker: Arc<dyn Broker>) -> Rules {
    Rules {
        executors: Some(Registry::builtin(broker).names()),
        ..Rules::default()
    }
}

/// The session `agency submit` submits, as JSON text, and what to call it in errors: the file,
/// or the one task of `--task` with `--input`, or the tasks of `--workflow`.
fn session_text(
    file: Option<PathBuf>,
    task: Option<&str>,
    input: &str,
    workflow: Option<PathBuf>,
    sequential: bool,
) -> anyhow::Result<(String, String)> {
    let read = |file: &PathBuf| {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
    };
    if let Some(executor) = task {
        let input: Value =
            serde_json::from_str(input).with_context(|| format!("--input is not JSON: {input}"))?;
        let document = agency::client::one_task(executor, input, serde_json::Map::new());
        return Ok((document.to_string(), format!("--task {executor}")));
    }
    if let Some(file) = workflow {
        let tasks: Vec<Value> = serde_json::from_str(&read(&file)?)
            .with_context(|| format!("{}: a workflow is a JSON list of tasks", file.display()))?;
        let document = agency::client::workflow(tasks, sequential)
            .with_context(|| file.display().to_string())?;
        return Ok((document.to_string(), file.display().to_string()));
    }
    let file = file.context("a session file, --task or --workflow is needed")?;
    Ok((read(&file)?, file.display().to_string()))
}

/// `agency pause` (`paused`) and `agency resume`.
async fn pause(session: &str, servers: &Servers, paused: bool) -> anyhow::Result<ExitCode> {
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
        client::CancelAnswer::Unknown => anyhow::bail!(
            "no session `{session}` is running in {}; nothing to {what}",
            servers.redis_address()
        ),
    }
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
    let runtime = runtime()?;
    runtime.block_on(async move {
        match command {
            Serve::Coordinator { servers, group, chunk, http } => {
                let shutdown = shutdown_on_signals()?;
                let (broker, store) = connect(&servers).await?;
                let server = match http {
                    Some(address) => Some(crate::http::serve(address, Some((broker.clone(), store.clone())), shutdown.clone()).await?),
                    None => None,
                };
                eprintln!("coordinator: taking sessions from agency_action on {} (redis {})", servers.kafka, servers.redis_address());
                let member = health::Member::here(health::Role::Coordinator, &servers.namespace, Vec::new());
                let beating = tokio::spawn(health::heartbeat(store.clone(), member, Arc::default(), shutdown.clone()));
                intake::run_coordinator(broker.clone(), store, rules(broker), &group, chunk, shutdown.clone()).await?;
                shutdown.cancel();
                let _ = beating.await;
                if let Some(server) = server {
                    let _ = server.await;
                }
                Ok(ExitCode::SUCCESS)
            }
            Serve::Worker { servers, concurrency, ranges_in_flight, group, http } => {
                let shutdown = shutdown_on_signals()?;
                let (broker, store) = connect(&servers).await?;
                let server = match http {
                    Some(address) => Some(crate::http::serve(address, None, shutdown.clone()).await?),
                    None => None,
                };
                let options = WorkerOptions { concurrency, ranges_in_flight: ranges_in_flight as usize, group, ..Default::default() };
                eprintln!("worker: executing work from {} (redis {})", servers.kafka, servers.redis_address());
                let registry = Registry::builtin(broker.clone());
                let member = health::Member::here(health::Role::Worker, &servers.namespace, registry.describe());
                let worker = Worker::new(broker, store.clone(), registry, options);
                let beating = tokio::spawn(health::heartbeat(store, member, worker.running(), shutdown.clone()));
                worker.run(shutdown.clone()).await?;
                shutdown.cancel();
                let _ = beating.await;
                if let Some(server) = server {
                    let _ = server.await;
                }
                Ok(ExitCode::SUCCESS)
            }
            Serve::Health { servers, json } => {
                let (broker, store) = connect(&servers).await?;
                let health = health::check(store.as_ref(), broker.as_ref(), &servers.namespace).await;
                if json {
                    print_json(&health)?;
                } else {
                    print!("{}", control::describe_health(&health));
                }
                Ok(if health.healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE })
            }
            Serve::Executors { servers, json, embedded } => {
                let executors = if embedded {
                    let broker: Arc<dyn Broker> = Arc::new(events::MemoryBroker::new());
                    health::Member::here(health::Role::Worker, "", Registry::builtin(broker).describe()).executors
                } else {
                    let (broker, store) = connect(&servers).await?;
                    let health = health::check(store.as_ref(), broker.as_ref(), &servers.namespace).await;
                    let executors = health::executors(&health);
                    if executors.is_empty() {
                        anyhow::bail!("no worker is alive to say which executors it runs (`agency health` says more; `agency executors --embedded` lists the embedded engine's)");
                    }
                    executors
                };
                if json {
                    print_json(&executors)?;
                } else {
                    for executor in &executors {
                        println!("{:<12} {}", executor.name, executor.description);
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Serve::Submit { file, task, input, workflow, sequential, servers, wait, timeout, replace } => {
                let (text, what) = session_text(file, task.as_deref(), &input, workflow, sequential)?;
                let (broker, store) = connect(&servers).await?;
                // Validate here first: a bad file is reported at once, not by a failed result later.
                taskgroup::Session::from_json(&text, &rules(broker.clone())).with_context(|| what.clone())?;
                let document: Value = serde_json::from_str(&text)?;
                // Subscribe before producing, so the result cannot be announced unseen.
                let mut waiter = results::ResultWaiter::subscribe(store.as_ref()).await?;
                let resubmit = if replace { client::Resubmit::Replace } else { client::Resubmit::Attach };
                let submitted = client::submit_with(broker.as_ref(), store.as_ref(), document, resubmit).await?;
                let id = &submitted.id;
                if submitted.attached {
                    eprintln!("session {id} is running this document already (run {}): attached to that run", submitted.run);
                }
                if !wait {
                    println!("{id}");
                    return Ok(ExitCode::SUCCESS);
                }
                eprintln!("session {id} (run {}): waiting for its result", submitted.run);
                let result = waiter.wait(store.as_ref(), id, Some(&submitted.run), timeout.map(Duration::from_secs)).await?;
                print_json(&result)?;
                Ok(exit_code(&result))
            }
            Serve::Pause { session, servers } => pause(&session, &servers, true).await,
            Serve::Resume { session, servers } => pause(&session, &servers, false).await,
            Serve::Rerun { session, servers, wait, timeout } => {
                let (broker, store) = connect(&servers).await?;
                let mut waiter = results::ResultWaiter::subscribe(store.as_ref()).await?;
                let submitted = client::rerun(broker.as_ref(), store.as_ref(), &session).await?;
                if !wait {
                    println!("{}", submitted.id);
                    return Ok(ExitCode::SUCCESS);
                }
                eprintln!("session {session} (run {}): rerunning what failed, waiting for its result", submitted.run);
                let result = waiter.wait(store.as_ref(), &session, Some(&submitted.run), timeout.map(Duration::from_secs)).await?;
                print_json(&result)?;
                Ok(exit_code(&result))
            }
            Serve::Cache { what: Cache::Clear { prefix, servers, state } } => {
                let (removed, from) = match state {
                    Some(path) => {
                        let store = events::FileStore::open(&path, events::DEFAULT_CHECKPOINT)
                            .await
                            .with_context(|| format!("state file {}", path.display()))?;
                        (store.memo_clear(&prefix).await?, format!("state file {}", path.display()))
                    }
                    None => {
                        let store = servers.store().await?;
                        (store.memo_clear(&prefix).await?, servers.redis_address())
                    }
                };
                let under = if prefix.is_empty() { String::new() } else { format!(" with keys starting {prefix:?}") };
                println!("removed {removed} memoized results{under} from {from}");
                Ok(ExitCode::SUCCESS)
            }
            Serve::Status { session, servers, json, state: Some(path) } => {
                let _ = servers;
                let store = events::FileStore::open_read_only(&path)
                    .with_context(|| format!("state file {}", path.display()))?;
                let where_ = format!("state file {}", path.display());
                let session = match session {
                    Some(session) => session,
                    None => match store.sessions(1).await?.into_iter().next() {
                        Some((session, _)) => session,
                        None => anyhow::bail!("{where_} holds no session"),
                    },
                };
                control::status(&store, &session, json, &where_).await
            }
            Serve::Status { session, servers, json, state: None } => {
                let Some(session) = session else {
                    anyhow::bail!("name the session: agency status SESSION (or read a state file: --state PATH)");
                };
                let store = servers.store().await?;
                control::status(&store, &session, json, &servers.redis_address()).await
            }
            Serve::Cancel { session, servers, wait, timeout } => {
                let (broker, store) = connect(&servers).await?;
                let mut waiter = results::ResultWaiter::subscribe(store.as_ref()).await?;
                match client::cancel(broker.as_ref(), store.as_ref(), &session).await? {
                    client::CancelAnswer::Sent { run } => {
                        eprintln!("cancel of session {session} (run {run}) sent");
                        if !wait {
                            return Ok(ExitCode::SUCCESS);
                        }
                        let run: Option<events::Origin> = run.parse().ok();
                        let result = waiter.wait(store.as_ref(), &session, run.as_ref(), timeout.map(Duration::from_secs)).await?;
                        print_json(&result)?;
                        Ok(if result.status == taskgroup::ResultStatus::Cancelled { ExitCode::SUCCESS } else { exit_code(&result) })
                    }
                    client::CancelAnswer::Finished(result) => {
                        anyhow::bail!("session `{session}` has already finished ({}); nothing to cancel", result.status)
                    }
                    client::CancelAnswer::Unknown => anyhow::bail!(
                        "no session `{session}` is running or has a result in {}; nothing to cancel (one submitted a moment ago may still be queued for a coordinator)",
                        servers.redis_address()
                    ),
                }
            }
            Serve::Results { session, task, from, limit, jsonl, servers, state } => {
                let page = control::Page { from, limit, jsonl };
                match state {
                    Some(path) => {
                        let store = events::FileStore::open_read_only(&path)
                            .with_context(|| format!("state file {}", path.display()))?;
                        control::results(&store, &session, &task, page).await
                    }
                    None => control::results(&servers.store().await?, &session, &task, page).await,
                }
            }
            Serve::Watch { session, servers, timeout } => {
                let store = servers.store().await?;
                control::watch(&store, &session, timeout.map(Duration::from_secs), &servers.redis_address()).await
            }
            Serve::Sessions { servers, status, json, limit } => {
                let store = servers.store().await?;
                control::sessions(&store, status.as_deref(), json, limit).await
            }
        }
    })
}
