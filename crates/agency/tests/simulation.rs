//! The deterministic simulation: the coordinator service, two workers and a client, run over
//! the seeded-fault twins of `events::chaos` on a single-threaded runtime whose clock only moves
//! when every task waits (so a lease of 10 s costs no real time).
//!
//! Each seed draws its faults' rates, a session's shape and a schedule of crashes: store and
//! broker calls that fail, writes whose answer is lost, delays, messages delivered twice or out
//! of order, notices and announcements lost or repeated, and coordinators and workers killed
//! (their tasks dropped, their uncommitted messages handed back to the group) and started again.
//! Every run is checked as the fault suite checks a real one: exactly one result announced, the
//! stored result is that one, it is `completed` with the context a fault-free embedded run of
//! the same session gives, no instance's success recorded twice, no working state left.
//!
//! `AGENCY_SIM_SEEDS=N` runs seeds `0..N` (1,000 by default); `AGENCY_SIM_SEED=S` runs only seed
//! `S` and prints its fault log. The dice are seeded, but tokio's `select!` picks among ready
//! branches with a random generator of its own, so a replay meets the same fault rates, session
//! and crash schedule, while the exact interleaving may differ.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use agency::client;
use agency::embedded::{EmbeddedOptions, Engine};
use agency::intake::{self, COORDINATOR_GROUP};
use agency::results::ResultWaiter;
use agency::{Progress, Registry, Worker, WorkerOptions};
use events::chaos::{ChaosBroker, ChaosStore, Dice, Faults};
use events::prelude::*;
use events::{Broker, Store, Subscription, DEAD_LETTER_TOPIC, RESULTS_CHANNEL};
use expansion::Limits;
use futures_util::FutureExt as _;
use serde_json::{json, Value};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use taskgroup::Rules;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The seeds to run: one when `AGENCY_SIM_SEED` is set, else `0..AGENCY_SIM_SEEDS` (1,000).
fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("AGENCY_SIM_SEED") {
        return vec![seed.parse().expect("AGENCY_SIM_SEED is a number")];
    }
    let count = std::env::var("AGENCY_SIM_SEEDS")
        .map(|n| n.parse().expect("AGENCY_SIM_SEEDS is a number"))
        .unwrap_or(1000);
    (0..count).collect()
}

#[test]
fn every_seeded_fault_run_ends_with_one_right_result() {
    let seeds = seeds();
    let replaying = seeds.len() == 1;
    if replaying {
        // The engine's own log, interleaved with nothing else: one seed runs on this thread.
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_test_writer()
            .try_init();
    }
    let started = std::time::Instant::now();
    let (mut faults, mut crashes, mut failed) = (0usize, 0usize, Vec::new());
    for &seed in &seeds {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let run = runtime.block_on(simulate(seed));
        if replaying {
            println!("seed {seed}: {}", run.session);
            for line in &run.log {
                println!("  {line}");
            }
        }
        faults += run.log.len();
        crashes += run.crashes;
        if let Err(problem) = run.verdict {
            failed.push((seed, problem, run.log));
        }
    }
    println!(
        "simulation: {} seeds, {faults} faults injected, {crashes} processes killed, {} failed, in {:.1} s",
        seeds.len(),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    for (seed, problem, _) in &failed {
        println!("seed {seed} failed: {problem}");
    }
    if let Some((seed, problem, log)) = failed.first() {
        let tail = &log[log.len().saturating_sub(40)..];
        panic!(
            "{} of {} seeds failed; the first, seed {seed}: {problem}\nreplay it with AGENCY_SIM_SEED={seed}\nits last faults:\n  {}",
            failed.len(),
            seeds.len(),
            tail.join("\n  ")
        );
    }
}

/// One seed's run: what it was, the faults injected, and what the checker found.
struct Run {
    session: String,
    log: Vec<String>,
    crashes: usize,
    verdict: Result<(), String>,
}

/// The session a seed runs: a fan-out whose instances may fail once and be retried, a task
/// following it instance by instance (reading each one's result), and a dependent task reading
/// all of their results from the context.
fn session(seed: u64, dice: &Dice) -> Value {
    let items: Vec<u64> = (0..1 + dice.below(24)).collect();
    json!({
        "session_id": format!("sim-{seed}"),
        "groups": [
            {"id": "a", "tasks": [{"id": "xs", "executor": "fail", "concurrency": 1 + dice.below(4),
                "retry": {"max_retries": 1, "retry_delays": [0]},
                "input": {"times": dice.below(2), "n": "{{x}}", "items": items,
                    "expansion_config": {"type": "array", "array_mapping": {"x": "items"}}}},
                {"id": "ys", "executor": "echo", "depends_on": [{"task": "xs", "each": true}],
                "input": {"n": "{{upstream.xs.n}}", "items": items,
                    "expansion_config": {"type": "array", "array_mapping": {"x": "items"}}}}]},
            {"id": "b", "depends_on": ["a"], "tasks": [
                {"id": "total", "executor": "echo", "input": {"all": "{{context.xs}}", "ys": "{{context.ys}}"}}]}
        ]
    })
}

/// The result a fault-free embedded run of `document` ends with.
async fn expected(document: &Value, chunk: u64) -> Value {
    let engine = Engine::new(EmbeddedOptions {
        chunk,
        ..EmbeddedOptions::default()
    });
    let session = engine.validate(&document.to_string()).unwrap();
    engine
        .run(&session, &Progress::default(), CancellationToken::new())
        .await
        .unwrap()
        .to_json()
}

/// A coordinator or worker process: its task, and the token that stops it.
struct Process {
    task: JoinHandle<()>,
    stop: CancellationToken,
}

#[derive(Clone)]
struct Fleet {
    broker: Arc<dyn Broker>,
    store: Arc<dyn Store>,
    chunk: u64,
    /// How processes ended on their own: each is a failure of the run.
    exits: Arc<Mutex<Vec<String>>>,
}

impl Fleet {
    fn coordinator(&self) -> Process {
        let (broker, store, chunk) = (self.broker.clone(), self.store.clone(), self.chunk);
        let registry = Registry::builtin(broker.clone());
        let rules = Rules {
            limits: Limits::default(),
            executors: Some(registry.names()),
        };
        let stop = CancellationToken::new();
        let token = stop.clone();
        let running =
            intake::run_coordinator(broker, store, rules, COORDINATOR_GROUP, chunk, token);
        self.process("a coordinator", running, stop)
    }

    fn worker(&self) -> Process {
        let registry = Registry::builtin(self.broker.clone());
        // A run kills at most 3 processes and keeps 2 workers alive: up to 5 workers can hold
        // one range unfinished without its task being the cause, so only a sixth start would
        // fail it (the check of a task that kills its worker is tests/faults/fleet.rs).
        let options = WorkerOptions {
            max_starts: 5,
            ..WorkerOptions::default()
        };
        let worker = Worker::new(self.broker.clone(), self.store.clone(), registry, options);
        let stop = CancellationToken::new();
        let token = stop.clone();
        self.process("a worker", worker.run(token), stop)
    }

    /// Runs a process; its end before it was stopped (an error, a panic) is noted in `exits`.
    fn process(
        &self,
        name: &'static str,
        running: impl Future<Output = agency::Result<()>> + Send + 'static,
        stop: CancellationToken,
    ) -> Process {
        let exits = self.exits.clone();
        let task = tokio::spawn(async move {
            let exit = match AssertUnwindSafe(running).catch_unwind().await {
                Ok(Ok(())) => return,
                Ok(Err(error)) => format!("{name} exited: {error}"),
                Err(_) => format!("{name} panicked"),
            };
            exits.lock().unwrap().push(exit);
        });
        Process { task, stop }
    }
}

async fn simulate(seed: u64) -> Run {
    let dice = Arc::new(Dice::new(seed, Faults::from_seed(seed)));
    let broker = ChaosBroker::new(dice.clone());
    let store = ChaosStore::new(dice.clone());
    let document = session(seed, &dice);
    let chunk = 1 + dice.below(6);
    let id = format!("sim-{seed}");
    let summary = format!(
        "{} instances in ranges of {chunk}, {:?}",
        document["groups"][0]["tasks"][0]["input"]["items"]
            .as_array()
            .map_or(0, Vec::len),
        dice.faults()
    );
    let want = expected(&document, chunk).await;

    let fleet = Fleet {
        broker: Arc::new(broker.clone()),
        store: Arc::new(store.clone()),
        chunk,
        exits: Arc::default(),
    };
    let mut processes = vec![
        fleet.coordinator(),
        fleet.coordinator(),
        fleet.worker(),
        fleet.worker(),
    ];
    // The client and the checker see the same broker and store without faults.
    let (calm_broker, calm_store) = (broker.calm(), store.calm());
    let mut announced = calm_store.subscribe(RESULTS_CHANNEL).await.unwrap();
    let mut waiter = ResultWaiter::subscribe(&calm_store).await.unwrap();
    let submitted = client::submit(&calm_broker, &calm_store, document)
        .await
        .unwrap();

    // Kill processes at seeded moments and start each again a while later.
    let crashes = dice.below(4) as usize;
    for crash in 0..crashes {
        tokio::time::sleep(Duration::from_millis(dice.below(3000))).await;
        let victim = dice.below(processes.len() as u64) as usize;
        let down = Duration::from_millis(dice.below(15_000));
        dice.note(format!(
            "crash {crash}: kill {} for {down:?}",
            if victim < 2 {
                "a coordinator"
            } else {
                "a worker"
            }
        ));
        processes[victim].task.abort();
        tokio::time::sleep(down).await;
        processes[victim] = if victim < 2 {
            fleet.coordinator()
        } else {
            fleet.worker()
        };
    }

    let got = waiter
        .wait(
            &calm_store,
            &id,
            Some(&submitted.run),
            Some(Duration::from_secs(3600)),
        )
        .await;
    // Let late writers (redelivered ranges, a resumed coordinator) do what they would.
    tokio::time::sleep(Duration::from_secs(120)).await;
    let verdict = match got {
        Ok(result) => check(&id, &result.to_json(), &want, &calm_store, &mut announced).await,
        Err(error) => Err(format!(
            "no result: {error}\n{}\nstored outcomes of xs: {:?}",
            broker.describe(),
            calm_store
                .outcomes(&id, events::TaskRef { group: 0, task: 0 }, 0..24)
                .await
                .unwrap()
                .iter()
                .map(|o| o.as_ref().map(|o| (o.attempt, o.succeeded())))
                .collect::<Vec<_>>()
        )),
    }
    .and_then(|()| match broker.messages_in(DEAD_LETTER_TOPIC) {
        0 => Ok(()),
        n => Err(format!("{n} messages dead-lettered, none of them bad")),
    })
    .and_then(|()| match fleet.exits.lock().unwrap().as_slice() {
        [] => Ok(()),
        exits => Err(exits.join("; ")),
    })
    .and_then(|()| match store.recorded_twice() {
        twice if twice.is_empty() => Ok(()),
        twice => Err(format!("successes recorded twice: {twice:?}")),
    });
    for process in &processes {
        process.stop.cancel();
        process.task.abort();
    }
    Run {
        session: summary,
        log: dice.log(),
        crashes,
        verdict,
    }
}

/// The checker: the result is right and the only one, and nothing of the session is left.
async fn check(
    id: &str,
    got: &Value,
    want: &Value,
    store: &ChaosStore,
    announced: &mut Box<dyn Subscription>,
) -> Result<(), String> {
    if got["status"] != "completed" {
        return Err(format!("the result is {}: {got}", got["status"]));
    }
    if got["context"] != want["context"] {
        return Err(format!(
            "wrong context: {} where a fault-free run gives {}",
            got["context"], want["context"]
        ));
    }
    let mut results = Vec::new();
    while let Ok(Ok(payload)) =
        tokio::time::timeout(Duration::from_millis(1), announced.next()).await
    {
        let result: Value = serde_json::from_slice(&payload).unwrap();
        if result["session_id"] == id {
            results.push(result);
        }
    }
    if results.len() != 1 {
        return Err(format!("{} results announced, not one", results.len()));
    }
    let stored = store.load_result(id).await.unwrap().unwrap_or_default();
    if stored["run"] != results[0]["run"] || stored["status"] != results[0]["status"] {
        return Err(format!(
            "the stored result is not the one announced: {stored} announced as {}",
            results[0]
        ));
    }
    match store.memory().working_sessions() {
        0 => Ok(()),
        n => Err(format!("{n} sessions still hold working state")),
    }
}
