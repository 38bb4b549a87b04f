//! The long-running commands: `agency coordinator` and `agency worker`; and `agency health`
//! and `agency executors`, which ask about them.

use crate::describe::describe_health;
use crate::servers::{connect, rules, Servers};
use crate::show::{print_json, serve_http};
use agency::connect as connecting;
use agency::{health, intake, Registry, Worker, WorkerOptions};
use events::Broker;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

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

/// `agency coordinator`: takes sessions from `agency_action` until Ctrl-C or SIGTERM, its
/// heartbeat in the store, the status page on `http`.
pub async fn coordinator(
    servers: &Servers,
    group: &str,
    chunk: u64,
    http: Option<(SocketAddr, agency::http::HttpAccess)>,
) -> anyhow::Result<ExitCode> {
    let shutdown = shutdown_on_signals()?;
    // A long-running server waits out servers starting beside it.
    let (broker, store) = connect(&servers.waiting(connecting::SERVER_PATIENCE)).await?;
    let deployment = Some((broker.clone(), store.clone()));
    let server = serve_http(http, deployment, shutdown.clone()).await?;
    eprintln!(
        "coordinator: taking sessions from agency_action on {} (redis {})",
        servers.kafka,
        servers.redis_address()
    );
    let member = health::Member::here(health::Role::Coordinator, &servers.namespace, Vec::new());
    let beat = health::heartbeat(store.clone(), member, Arc::default(), shutdown.clone());
    let beating = tokio::spawn(beat);
    let rules = rules(broker.clone());
    intake::run_coordinator(broker, store, rules, group, chunk, shutdown.clone()).await?;
    shutdown.cancel();
    let _ = beating.await;
    if let Some(server) = server {
        let _ = server.await;
    }
    Ok(ExitCode::SUCCESS)
}

/// What a worker's sessions may reach (`agency::executors::Allowed`): nothing unless its
/// operator says.
#[derive(Debug, Clone, clap::Args)]
pub struct Allow {
    /// Programs the `command` executor may start: names (found on PATH), paths, `*` in either
    /// (`python3,/opt/tools/*`); none unless given, `*` for every one
    #[arg(
        long,
        env = "AGENCY_ALLOW_COMMAND",
        value_delimiter = ',',
        value_name = "PATTERN,..."
    )]
    allow_command: Vec<String>,
    /// Hosts the `http_get` executor may call: `api.example.com`, `*.example.com`,
    /// `127.0.0.1:8000`; none unless given, `*` for every one
    #[arg(
        long,
        env = "AGENCY_ALLOW_HTTP",
        value_delimiter = ',',
        value_name = "HOST,..."
    )]
    allow_http: Vec<String>,
    /// A file of rules, one a line: `command PATTERN` or `http HOST` (`#` comments)
    #[arg(long, env = "AGENCY_ALLOW_FILE", value_name = "PATH")]
    allow_file: Option<std::path::PathBuf>,
}

impl Allow {
    /// What the flags and the file allow.
    pub fn allowed(&self) -> anyhow::Result<agency::executors::Allowed> {
        let keep = |patterns: &[String]| -> Vec<String> {
            let trimmed = patterns.iter().map(|p| p.trim().to_string());
            trimmed.filter(|p| !p.is_empty()).collect()
        };
        let (mut commands, mut hosts) = (keep(&self.allow_command), keep(&self.allow_http));
        if let Some(file) = &self.allow_file {
            agency::executors::Allowed::read_file(file, &mut commands, &mut hosts)
                .map_err(|why| anyhow::anyhow!("--allow-file: {why}"))?;
        }
        Ok(agency::executors::Allowed::only(commands, hosts))
    }
}

/// `agency worker`: executes dispatched work until Ctrl-C or SIGTERM, its heartbeat (with its
/// executors) in the store, `/metrics` on `http`; `command` and `http_get` reach only what
/// `allow` allows.
pub async fn worker(
    servers: &Servers,
    options: WorkerOptions,
    http: Option<(SocketAddr, agency::http::HttpAccess)>,
    allow: &Allow,
) -> anyhow::Result<ExitCode> {
    let allowed = allow.allowed()?;
    let shutdown = shutdown_on_signals()?;
    // A long-running server waits out servers starting beside it.
    let (broker, store) = connect(&servers.waiting(connecting::SERVER_PATIENCE)).await?;
    let server = serve_http(http, None, shutdown.clone()).await?;
    eprintln!(
        "worker: executing work from {} (redis {})",
        servers.kafka,
        servers.redis_address()
    );
    let registry = Registry::builtin_allowing(broker.clone(), allowed);
    let member = health::Member::here(
        health::Role::Worker,
        &servers.namespace,
        registry.describe(),
    );
    let worker = Worker::new(broker, store.clone(), registry, options);
    let beat = health::heartbeat(store, member, worker.running(), shutdown.clone());
    let beating = tokio::spawn(beat);
    worker.run(shutdown.clone()).await?;
    shutdown.cancel();
    let _ = beating.await;
    if let Some(server) = server {
        let _ = server.await;
    }
    Ok(ExitCode::SUCCESS)
}

/// `agency health`: exit 1 unless healthy.
pub async fn health(servers: &Servers, json: bool) -> anyhow::Result<ExitCode> {
    let (broker, store) = connect(servers).await?;
    let health = health::check(store.as_ref(), broker.as_ref(), &servers.namespace).await;
    if json {
        print_json(&health)?;
    } else {
        print!("{}", describe_health(&health));
    }
    Ok(if health.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `agency executors`: the live workers' executors, or with `embedded` the embedded engine's.
pub async fn executors(servers: &Servers, json: bool, embedded: bool) -> anyhow::Result<ExitCode> {
    let executors = if embedded {
        let broker: Arc<dyn Broker> = Arc::new(events::MemoryBroker::new());
        let registry = Registry::builtin(broker);
        health::Member::here(health::Role::Worker, "", registry.describe()).executors
    } else {
        let (broker, store) = connect(servers).await?;
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
