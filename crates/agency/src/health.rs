//! Health: every coordinator and worker of a distributed deployment heartbeats into the store
//! every [`HEARTBEAT`] (who it is, where, which executors it runs, how many instances it runs
//! now), and [`check`] reads those with Redis and Kafka themselves, for `agency health` and
//! `agency executors`. A member silent for [`STALE_AFTER`] is stale, which is a problem; one
//! silent for [`GONE_AFTER`] is listed as gone and no longer is (a process stopped cleanly says
//! goodbye and is not listed at all).

use events::{Broker, Membership};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a member heartbeats.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A member not heard from for this long (five heartbeats) is stale: killed, hung or cut off.
pub const STALE_AFTER: Duration = Duration::from_secs(10);
/// A member not heard from for this long is gone: listed, no longer a problem.
pub const GONE_AFTER: Duration = Duration::from_secs(300);

/// What a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// `agency coordinator`.
    Coordinator,
    /// `agency worker`.
    Worker,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Coordinator => "coordinator",
            Self::Worker => "worker",
        })
    }
}

/// An executor a worker runs, and what it does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExecutorInfo {
    /// The name session files use.
    pub name: String,
    /// One line saying what it does.
    pub description: String,
}

/// What a member says of itself in each heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Unique to the process.
    pub id: String,
    /// What it is.
    pub role: Role,
    /// The deployment it belongs to (`AGENCY_NAMESPACE`; empty for none): deployments sharing
    /// a Redis see only their own members.
    #[serde(default)]
    pub namespace: String,
    /// The machine it runs on.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// The agency version it runs.
    pub version: String,
    /// The executors it runs (workers).
    #[serde(default)]
    pub executors: Vec<ExecutorInfo>,
    /// Instances it is executing now (workers).
    #[serde(default)]
    pub running: u64,
}

impl Member {
    /// This process, as a member of `role` in deployment `namespace` running `executors`
    /// (name, description).
    pub fn here(role: Role, namespace: &str, executors: Vec<(String, String)>) -> Self {
        Self {
            id: format!("{role}-{}", uuid::Uuid::new_v4()),
            role,
            namespace: namespace.to_string(),
            host: hostname(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            executors: executors
                .into_iter()
                .map(|(name, description)| ExecutorInfo { name, description })
                .collect(),
            running: 0,
        }
    }
}

/// The machine's name, as the kernel has it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Heartbeats `member` every [`HEARTBEAT`] until `stop`, saying how many instances `running`
/// counts at each; then says goodbye (the member is forgotten). A heartbeat the store misses is
/// logged and the next one tried.
pub async fn heartbeat(
    store: Arc<dyn Membership>,
    member: Member,
    running: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    loop {
        let said = Member {
            running: running.load(Ordering::Relaxed),
            ..member.clone()
        };
        match events::encode("a heartbeat", &said) {
            Ok(info) => {
                if let Err(error) = store.heartbeat(&member.id, &info).await {
                    tracing::warn!(%error, "cannot heartbeat");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot heartbeat"),
        }
        if !events::retry::sleep_or_stop(HEARTBEAT, &stop).await {
            break;
        }
    }
    if let Err(error) = store.forget_member(&member.id).await {
        tracing::warn!(%error, "cannot say goodbye; the heartbeat goes stale by itself");
    }
}

/// A member as the health check saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    /// What it said last.
    #[serde(flatten)]
    pub member: Member,
    /// When it was last heard from (ISO 8601, the store's clock).
    pub last_seen: String,
    /// How long ago, in seconds.
    pub silent_s: f64,
}

impl Seen {
    /// `worker worker-… on host h (pid 42), silent for 12 s`
    fn describe(&self) -> String {
        format!(
            "{} {} on {} (pid {}), silent for {:.0} s",
            self.member.role, self.member.id, self.member.host, self.member.pid, self.silent_s
        )
    }
}

/// One server's check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Whether it answered.
    pub ok: bool,
    /// What it said, or why it failed.
    pub detail: String,
}

/// What `agency health` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// No problem found.
    pub healthy: bool,
    /// Each problem, one line each.
    pub problems: Vec<String>,
    /// Redis answered.
    pub redis: Check,
    /// Kafka answered with its brokers.
    pub kafka: Check,
    /// Coordinators heard from within [`STALE_AFTER`].
    pub coordinators: Vec<Seen>,
    /// Workers heard from within [`STALE_AFTER`].
    pub workers: Vec<Seen>,
    /// Members silent for longer, up to [`GONE_AFTER`]: each is a problem.
    pub stale: Vec<Seen>,
    /// Members silent for longer than that.
    pub gone: Vec<Seen>,
}

/// Checks Redis (the store answers), Kafka (its brokers answer) and the heartbeats of the
/// members of deployment `namespace`: healthy when both answer, at least one coordinator and
/// one worker are alive, and none is stale.
pub async fn check(store: &dyn Membership, broker: &dyn Broker, namespace: &str) -> Health {
    let mut problems = Vec::new();
    let now = store.now_ms().await;
    let redis = match &now {
        Ok(_) => Check {
            ok: true,
            detail: "answers".into(),
        },
        Err(error) => {
            problems.push(format!("redis: {error}"));
            Check {
                ok: false,
                detail: error.to_string(),
            }
        }
    };
    let kafka = match broker.brokers().await {
        Ok(0) => {
            problems.push("kafka: no broker is listed in its metadata".into());
            Check {
                ok: false,
                detail: "no broker".into(),
            }
        }
        Ok(brokers) => Check {
            ok: true,
            detail: format!("{brokers} broker(s) answer"),
        },
        Err(error) => {
            problems.push(format!("kafka: {error}"));
            Check {
                ok: false,
                detail: error.to_string(),
            }
        }
    };
    let (mut coordinators, mut workers, mut stale, mut gone) = (vec![], vec![], vec![], vec![]);
    if let Ok(now) = now {
        match store.members().await {
            Ok(members) => {
                for (id, info, seen) in members {
                    let Ok(member) = serde_json::from_slice::<Member>(&info) else {
                        problems.push(format!("member {id}: its heartbeat is not readable"));
                        continue;
                    };
                    if member.namespace != namespace {
                        continue;
                    }
                    let silent = Duration::from_millis(now.saturating_sub(seen));
                    let seen = Seen {
                        member,
                        last_seen: taskgroup::iso8601(seen),
                        silent_s: silent.as_secs_f64(),
                    };
                    match (silent, seen.member.role) {
                        (silent, _) if silent >= GONE_AFTER => gone.push(seen),
                        (silent, _) if silent >= STALE_AFTER => stale.push(seen),
                        (_, Role::Coordinator) => coordinators.push(seen),
                        (_, Role::Worker) => workers.push(seen),
                    }
                }
            }
            Err(error) => problems.push(format!("redis: cannot read the heartbeats: {error}")),
        }
        for (role, alive) in [("coordinator", &coordinators), ("worker", &workers)] {
            if alive.is_empty() {
                problems.push(format!(
                    "no {role} is alive (none heard from within {} s)",
                    STALE_AFTER.as_secs()
                ));
            }
        }
        for member in &stale {
            problems.push(format!("stale: {}", member.describe()));
        }
    }
    for list in [&mut coordinators, &mut workers, &mut stale, &mut gone] {
        list.sort_by(|a, b| a.member.id.cmp(&b.member.id));
    }
    Health {
        healthy: problems.is_empty(),
        problems,
        redis,
        kafka,
        coordinators,
        workers,
        stale,
        gone,
    }
}

/// The executors the workers heard from within [`STALE_AFTER`] run, each once, sorted by name.
pub fn executors(health: &Health) -> Vec<ExecutorInfo> {
    let mut all: Vec<ExecutorInfo> = health
        .workers
        .iter()
        .flat_map(|seen| seen.member.executors.iter().cloned())
        .collect();
    all.sort();
    all.dedup_by(|a, b| a.name == b.name);
    all
}
