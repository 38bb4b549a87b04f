//! `agency bench distributed`: the distributed engine over the real Kafka broker and Redis, with
//! a coordinator and two worker processes started for the run in a fresh namespace.

use crate::bench::{check_fan_out, check_retries, fan_out_session, peak_rss_mb_of, retry_session};
use crate::servers::Servers;
use crate::text::thousands;
use agency::{client, connect, intake, results, Registry, Worker, WorkerOptions};
use events::{Broker, MemoryBroker, Namespaced, Store, DISPATCH_TOPIC};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The processes under test, killed when dropped.
pub struct Processes(Vec<(&'static str, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Processes {
    /// A coordinator and two workers of this binary, in `namespace`.
    pub fn fleet(servers: &Servers, namespace: &str) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let spawn = |role: &'static str| -> anyhow::Result<(&'static str, Child)> {
            let child = Command::new(&exe)
                .arg(role)
                .envs(servers.env()?)
                .env("AGENCY_NAMESPACE", namespace)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            Ok((role, child))
        };
        Ok(Self(vec![
            spawn("coordinator")?,
            spawn("worker")?,
            spawn("worker")?,
        ]))
    }

    /// Peak RSS of each process so far, in MB, from `/proc/<pid>/status`.
    pub fn peak_rss(&self) -> Vec<(String, f64)> {
        self.0
            .iter()
            .enumerate()
            .map(|(i, (role, child))| {
                (
                    format!("{role}-{i}"),
                    peak_rss_mb_of(&child.id().to_string()),
                )
            })
            .collect()
    }
}

/// How long the bench lets the consumer groups settle before it measures.
const SETTLE: Duration = Duration::from_secs(6);

pub async fn run(
    sizes: &[u64],
    latency_runs: usize,
    retries: u64,
    servers: &Servers,
) -> anyhow::Result<()> {
    let namespace = format!(
        "bench-{}-{}.",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    );
    let processes = Processes::fleet(servers, &namespace)?;
    let kafka = Arc::new(
        connect::connect_broker(servers.kafka_options()?, agency::connect::SERVER_PATIENCE).await?,
    );
    let broker = Namespaced::new(kafka.clone(), &namespace);
    let store = servers.store().await?;

    // The floor under a session's latency: one produce-then-consume hop on this broker (a session
    // crosses two), measured with the same client settings.
    let hop = kafka_hop(&broker, &format!("{namespace}hop"), 200).await?;
    println!(
        "one Kafka hop (publish with delivery report, then consume), 200 runs: p50 {:.2} ms, p99 {:.2} ms",
        hop.0.as_secs_f64() * 1e3,
        hop.1.as_secs_f64() * 1e3
    );

    // Warm-up: the first session waits for the consumer groups to form.
    let warm = Instant::now();
    // One subscription to the results for the whole run, as a long-lived client would hold.
    let mut waiter = results::ResultWaiter::subscribe(&store).await?;
    one_session(&broker, &store, &mut waiter, &format!("{namespace}warm"), 1).await?;
    eprintln!(
        "bench: cluster ready in {:.1} s (consumer groups joined)",
        warm.elapsed().as_secs_f64()
    );
    // A KIP-848 group hands partitions to its second worker over a few heartbeats (2 s apart on
    // the test broker); measuring before that would time the hand-over, not the engine.
    tokio::time::sleep(SETTLE).await;

    let (p50, p99) = latency(
        &broker,
        &store,
        &mut waiter,
        &format!("{namespace}latency"),
        latency_runs,
    )
    .await?;
    println!(
        "one-task session, submit to result, {latency_runs} runs: p50 {:.2} ms, p99 {:.2} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    let (bare50, bare99) = latency_without_kafka(servers, &namespace, latency_runs).await?;
    println!(
        "  the same without Kafka (in-process coordinator and worker, in-memory broker, real Redis): p50 {:.2} ms, p99 {:.2} ms",
        bare50.as_secs_f64() * 1e3,
        bare99.as_secs_f64() * 1e3
    );

    let rows = fan_outs(&broker, &store, &mut waiter, &namespace, sizes).await?;
    let retry_rows = match retries {
        0 => Vec::new(),
        n => retry_cases(&kafka, &broker, &store, &mut waiter, &namespace, n).await?,
    };
    for (process, mb) in processes.peak_rss() {
        println!("peak RSS {process}: {mb:.1} MB");
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let summary = json!({"kafka_fetch_wait_ms": servers.kafka_fetch_wait_ms,
        "kafka_group_protocol": servers.kafka_group_protocol.to_string(),
        "kafka_hop_ms": {"p50": ms(hop.0), "p99": ms(hop.1)},
        "latency_ms": {"p50": ms(p50), "p99": ms(p99)},
        "latency_without_kafka_ms": {"p50": ms(bare50), "p99": ms(bare99)},
        "fan_out": rows,
        "retries": retry_rows,
        "peak_rss_mb": processes.peak_rss().into_iter().map(|(p, mb)| json!({"process": p, "mb": mb})).collect::<Vec<_>>()});
    eprintln!("{summary}");
    Ok(())
}

/// One fan-out session of each size, timed submit to result.
async fn fan_outs(
    broker: &dyn Broker,
    store: &dyn Store,
    waiter: &mut results::ResultWaiter,
    namespace: &str,
    sizes: &[u64],
) -> anyhow::Result<Vec<Value>> {
    println!(
        "{:>12} {:>10} {:>16}",
        "instances", "seconds", "instances/s"
    );
    let mut rows = Vec::new();
    for &n in sizes {
        let started = Instant::now();
        one_session(broker, store, waiter, &format!("{namespace}fan-{n}"), n).await?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{:>12} {:>10.3} {:>16}",
            thousands(n),
            seconds,
            thousands((n as f64 / seconds) as u64)
        );
        rows.push(
            json!({"instances": n, "seconds": seconds, "instances_per_s": n as f64 / seconds}),
        );
    }
    Ok(rows)
}

/// `retries` instances that never fail, then the same failing each instance once: the time
/// and the dispatch messages each took.
async fn retry_cases(
    kafka: &events::KafkaBroker,
    broker: &dyn Broker,
    store: &dyn Store,
    waiter: &mut results::ResultWaiter,
    namespace: &str,
    retries: u64,
) -> anyhow::Result<Vec<Value>> {
    let mut retry_rows = Vec::new();
    println!(
        "{:>12} {:>26} {:>10} {:>18}",
        "instances", "fail executor", "seconds", "dispatch messages"
    );
    let dispatch = format!("{namespace}{DISPATCH_TOPIC}");
    for times in [0u64, 1] {
        let before = kafka.messages_in(&dispatch).await?;
        let started = Instant::now();
        let id = format!("{namespace}retry-{times}");
        let document = retry_session(&id, retries, times);
        let result = submit_and_wait(broker, store, waiter, document, 1800).await?;
        let seconds = started.elapsed().as_secs_f64();
        check_retries(&result, retries, times)?;
        let messages = kafka.messages_in(&dispatch).await? - before;
        let label = if times == 0 {
            "never fails"
        } else {
            "fails each instance once"
        };
        println!(
            "{:>12} {:>26} {:>10.3} {:>18}",
            thousands(retries),
            label,
            seconds,
            thousands(messages)
        );
        retry_rows.push(json!({"instances": retries, "fails_times": times, "seconds": seconds, "dispatch_messages": messages}));
    }
    Ok(retry_rows)
}

/// p50 and p99 of one-task sessions submitted one after another.
async fn latency(
    broker: &dyn Broker,
    store: &dyn Store,
    waiter: &mut results::ResultWaiter,
    prefix: &str,
    runs: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        let started = Instant::now();
        one_session(broker, store, waiter, &format!("{prefix}-{i}"), 1).await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    let percentile = |p: f64| {
        samples
            .get(((samples.len() as f64 * p) as usize).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok((percentile(0.50), percentile(0.99)))
}

/// The one-task session latency with Kafka taken out: the same coordinator and worker code, in
/// this process, over the in-memory broker and the real Redis. What is left is the engine's own
/// share (its Redis round trips and pub/sub); the difference to the full figure is Kafka's.
async fn latency_without_kafka(
    servers: &Servers,
    namespace: &str,
    runs: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
    let store: Arc<dyn Store> = Arc::new(servers.store().await?);
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let coordinator = tokio::spawn(intake::run_coordinator(
        broker.clone(),
        store.clone(),
        crate::servers::rules(broker.clone()),
        intake::COORDINATOR_GROUP,
        taskgroup::DEFAULT_CHUNK,
        shutdown.clone(),
    ));
    let worker = Worker::new(
        broker.clone(),
        store.clone(),
        Registry::builtin(broker.clone()),
        WorkerOptions::default(),
    );
    let working = tokio::spawn(worker.run(shutdown.clone()));
    let mut waiter = results::ResultWaiter::subscribe(store.as_ref()).await?;
    one_session(
        broker.as_ref(),
        store.as_ref(),
        &mut waiter,
        &format!("{namespace}bare-warm"),
        1,
    )
    .await?;
    let measured = latency(
        broker.as_ref(),
        store.as_ref(),
        &mut waiter,
        &format!("{namespace}bare"),
        runs,
    )
    .await;
    shutdown.cancel();
    coordinator.await??;
    working.await??;
    measured
}

/// Submits `document` and waits at most `seconds` for its run's result.
async fn submit_and_wait(
    broker: &dyn Broker,
    store: &dyn Store,
    waiter: &mut results::ResultWaiter,
    document: serde_json::Value,
    seconds: u64,
) -> anyhow::Result<taskgroup::SessionResult> {
    let submitted = client::submit(broker, store, document).await?;
    let timeout = Some(Duration::from_secs(seconds));
    let run = Some(&submitted.run);
    Ok(waiter.wait(store, &submitted.id, run, timeout).await?)
}

/// Submits a fan-out of `n` no-op instances and waits for its result.
async fn one_session(
    broker: &dyn Broker,
    store: &dyn Store,
    waiter: &mut results::ResultWaiter,
    id: &str,
    n: u64,
) -> anyhow::Result<taskgroup::SessionResult> {
    let document = fan_out_session(id, n);
    let result = submit_and_wait(broker, store, waiter, document, 600).await?;
    check_fan_out(&result, n)?;
    // Its results are kept in Redis by reference for as long as its result: the bench's own
    // runs need not hold gigabytes there for days. Nothing marks them any more, so a cleanup
    // takes them.
    store
        .cleanup(&result.session_id, events::Fence::Open)
        .await?;
    Ok(result)
}

/// p50 and p99 of publishing one message and receiving it on an already subscribed consumer.
async fn kafka_hop(
    broker: &dyn Broker,
    topic: &str,
    runs: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let mut consumer = broker.subscribe(topic, "hop").await?;
    // Join the group before measuring: the first message waits for the assignment.
    broker.publish(topic, "k", b"warm".to_vec()).await?;
    tokio::time::timeout(Duration::from_secs(60), consumer.next()).await??;
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        let started = Instant::now();
        broker
            .publish(topic, "k", i.to_string().into_bytes())
            .await?;
        let message = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await??;
        anyhow::ensure!(
            message.payload == i.to_string().into_bytes(),
            "hop {i} got another message"
        );
        samples.push(started.elapsed());
    }
    samples.sort();
    Ok((samples[runs / 2], samples[(runs * 99 / 100).min(runs - 1)]))
}
