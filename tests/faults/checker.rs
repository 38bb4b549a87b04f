//! The fault suite's one checker and what it needs: a listener of every announced result, the
//! stored results, the session shape every case runs, and the measurements each case appends
//! to `target/fault-matrix.jsonl`.

use integration_tests::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every message published on `agency:results` while the test runs, by session id, with when
/// it arrived.
#[derive(Clone)]
pub struct Published {
    arrivals: Arc<Mutex<Arrivals>>,
    /// The Redis it listens to.
    pub redis: String,
}

/// Results by session id, each with when it arrived.
type Arrivals = HashMap<String, Vec<(Instant, Value)>>;

impl Published {
    /// Listens on the shared Redis's `agency:results` in a thread of its own until the test ends.
    pub fn listen() -> Self {
        Self::listen_on(&redis_url())
    }

    /// Listens on `agency:results` of the Redis at `url`.
    pub fn listen_on(url: &str) -> Self {
        let published = Self {
            arrivals: Arc::default(),
            redis: url.to_string(),
        };
        let into = published.clone();
        let client = redis::Client::open(url).unwrap();
        let (ready, subscribed) = std::sync::mpsc::channel();
        std::thread::spawn(move || loop {
            // Subscribed again when the server goes away and comes back (a restart case): a
            // result is announced long after the restart, so none is missed meanwhile.
            let Ok(mut connection) = client.get_connection() else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            let mut pubsub = connection.as_pubsub();
            if pubsub.subscribe("agency:results").is_err() {
                continue;
            }
            let _ = ready.send(());
            while let Ok(message) = pubsub.get_message() {
                let payload: Vec<u8> = message.get_payload().unwrap_or_default();
                let Ok(result) = serde_json::from_slice::<Value>(&payload) else {
                    continue;
                };
                let id = result["session_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                into.arrivals
                    .lock()
                    .unwrap()
                    .entry(id)
                    .or_default()
                    .push((Instant::now(), result));
            }
        });
        subscribed.recv().unwrap();
        published
    }

    pub fn of(&self, id: &str) -> Vec<Value> {
        self.arrivals(id)
            .into_iter()
            .map(|(_, result)| result)
            .collect()
    }

    pub fn arrivals(&self, id: &str) -> Vec<(Instant, Value)> {
        self.arrivals
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .unwrap_or_default()
    }
}

/// One fault case, from the moment its fault is injected: what it measured goes to
/// `target/fault-matrix.jsonl`, which `scripts/fault-table.py` turns into the table of
/// `docs/reliability.md`.
pub struct Case {
    name: &'static str,
    fault: &'static str,
    injected: Instant,
}

impl Case {
    /// Call as the fault is injected.
    pub fn inject(name: &'static str, fault: &'static str) -> Self {
        Self {
            name,
            fault,
            injected: Instant::now(),
        }
    }

    /// Appends the case's line, once its checks passed: sessions, instances, instances lost and
    /// recorded twice (from the stored results), results published, and how long after the
    /// fault the last result came.
    pub fn report(&self, published: &Published, sessions: &[&str], instances_each: usize) {
        let mut succeeded = 0u64;
        let mut results = 0usize;
        let mut last = self.injected;
        for id in sessions {
            let stored = stored_result(&published.redis, id, Duration::ZERO);
            succeeded += stored["groups"]["g"]["tasks"]["naps"]["succeeded"]
                .as_u64()
                .unwrap();
            let arrivals = published.arrivals(id);
            results += arrivals.len();
            last = arrivals.iter().map(|(at, _)| *at).fold(last, Instant::max);
        }
        let instances = (sessions.len() * instances_each) as u64;
        let line = json!({
            "case": self.name,
            "fault": self.fault,
            "sessions": sessions.len(),
            "instances": instances,
            "lost": instances.saturating_sub(succeeded),
            "recorded_twice": succeeded.saturating_sub(instances),
            "results_published": results,
            // `null` when no result came after the fault (the sessions had ended before it).
            "recovered_s": (last > self.injected).then(|| (last - self.injected).as_secs_f64()),
        });
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/fault-matrix.jsonl");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes()).unwrap();
    }
}

/// The stored result of session `id` in the Redis at `url`, waiting up to `patience` for it.
pub fn stored_result(url: &str, id: &str, patience: Duration) -> Value {
    let client = redis::Client::open(url).unwrap();
    let mut redis = client.get_connection().unwrap();
    let deadline = Instant::now() + patience;
    loop {
        let stored: Option<String> = redis::cmd("GET")
            .arg(format!("agency:result:{{{id}}}"))
            .query(&mut redis)
            .unwrap();
        if let Some(stored) = stored {
            return serde_json::from_str(&stored).unwrap();
        }
        assert!(Instant::now() < deadline, "session {id} has no result");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The keys of session `id` still in the Redis at `url`, sorted.
pub fn session_keys(url: &str, id: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut redis = client.get_connection().unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("agency:{{{id}}}:*"))
        .query(&mut redis)
        .unwrap();
    keys.sort();
    keys
}

/// Waits up to `patience` for `process` to exit; fails the test with `why` if it does not.
pub fn wait_for_exit(
    process: &mut std::process::Child,
    patience: Duration,
    why: &str,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(status) = process.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "{why}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until session `id`'s first task has `count` outcomes recorded in the Redis at `url`:
/// its work is under way.
pub fn wait_for_outcomes(url: &str, id: &str, count: u64) {
    let client = redis::Client::open(url).unwrap();
    let mut redis = client.get_connection().unwrap();
    let outcomes = format!("agency:{{{id}}}:outcomes:0:0");
    let deadline = Instant::now() + Duration::from_secs(60);
    while redis::cmd("HLEN")
        .arg(&outcomes)
        .query::<u64>(&mut redis)
        .unwrap()
        < count
    {
        assert!(Instant::now() < deadline, "session {id} never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A coordinator dispatching ranges of 20 instances, so each of its two workers has several,
/// and the two workers (processes 1 and 2).
pub fn small_ranges_cluster(name: &str) -> Cluster {
    let mut cluster = Cluster::start_with(name, &[]);
    cluster.spawn_with("coordinator", &["--chunk", "20"]);
    cluster.spawn("worker");
    cluster.spawn("worker");
    cluster
}

/// Sends `signal` (`STOP`, `CONT`, `KILL`, ...) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let sent = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{signal} {pid}");
}

/// A session of `naps` sleeping instances of `ms` each, at most 4 at a time per worker.
pub fn naps(id: &str, naps: usize, ms: u64) -> Value {
    let ns: Vec<usize> = (0..naps).collect();
    json!({"session_id": id, "groups": [{"id": "g", "tasks": [{"id": "naps", "executor": "sleep",
        "concurrency": 4,
        "input": {"ms": ms, "ns": ns, "expansion_config": {"type": "array", "array_mapping": {"n": "ns"}}}}]}]})
}

/// The one checker: session `id` has exactly one result published and the stored one is it,
/// completed, with every instance's own result in the context and each counted once.
pub fn check_one_right_result(published: &Published, id: &str, instances: usize, ms: u64) {
    let stored = stored_result(&published.redis, id, Duration::from_secs(120));
    // The result is stored and announced in one step, but the listener's thread may not have
    // taken the announcement yet.
    let deadline = Instant::now() + Duration::from_secs(10);
    while published.of(id).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let all = published.of(id);
    assert_eq!(
        all.len(),
        1,
        "session {id}: {} results published",
        all.len()
    );
    assert_eq!(
        (&all[0]["run"], &all[0]["status"]),
        (&stored["run"], &stored["status"]),
        "session {id}: the stored result is the announced one"
    );
    assert_eq!(stored["status"], "completed", "session {id}: {stored:#}");
    let naps = stored["context"]["naps"].as_array().unwrap();
    assert_eq!(naps.len(), instances, "session {id}");
    assert!(
        naps.iter().all(|nap| nap["slept_ms"] == ms),
        "session {id}: every instance's result is in the context"
    );
    assert_eq!(
        stored["groups"]["g"]["tasks"]["naps"]["succeeded"],
        json!(instances),
        "session {id}"
    );
}
