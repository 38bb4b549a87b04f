//! `agency bench`: measure the engine's parts on this machine. Numbers go to `docs/benchmarks.md`.

use crate::text::thousands;
use anyhow::Context as _;
use expansion::{Expansion, FieldPath, Limits, Task};
use serde_json::{json, Map, Value};
use std::hint::black_box;
#[cfg(feature = "distributed")]
use std::time::Duration;
use std::time::Instant;
use taskgroup::SessionResult;

#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// Enumeration and rendering throughput of matrix expansions, and peak memory
    Expansion {
        /// Matrix shapes, e.g. `1000x1000`; each axis is a list of integers
        #[arg(long, value_delimiter = ',', default_values_t = ["100x100".to_string(), "1000x1000".to_string(), "10000x10000".to_string()])]
        shapes: Vec<String>,
        /// Render at most this many instances per shape (rendering builds JSON, enumeration does not)
        #[arg(long, default_value_t = 1_000_000)]
        render: u64,
        /// Also plan each shape with an `exclude` entry, so instances are found through the bitmap
        #[arg(long)]
        with_exclude: bool,
        /// Print one JSON object per shape instead of a table
        #[arg(long)]
        json: bool,
    },
    /// End-to-end fan-out of N no-op instances on the embedded engine: submit to final result,
    /// instances/s and peak RSS. Each size runs in its own process so peak memory is its own.
    Embedded {
        /// Instance counts
        #[arg(long, value_delimiter = ',', default_values_t = [10_000u64, 100_000, 1_000_000])]
        sizes: Vec<u64>,
        /// Worker loops in the process
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Print one JSON object per size instead of a table
        #[arg(long)]
        json: bool,
        /// Run one size in this process and print its JSON line (used by the other form)
        #[arg(long, hide = true)]
        one: Option<u64>,
        /// Run the retry case instead: each instance of a `fail` task fails its first `N`
        /// attempts and is retried at once (0 never fails; compare the two)
        #[arg(long)]
        fail_times: Option<u64>,
        /// Fail (exit 1, after every size ran) when a size's peak RSS passes this many MB: the
        /// flat-memory target is `--sizes 10000000 --max-rss-mb 300`
        #[arg(long, value_name = "MB")]
        max_rss_mb: Option<f64>,
    },
    /// Claim/complete round trips of agents over Redis: N items, K agents with a connection each
    #[cfg(feature = "distributed")]
    Agents {
        /// Items offered
        #[arg(long, default_value_t = 20_000)]
        items: u64,
        /// Agents claiming side by side
        #[arg(long, default_value_t = 8)]
        agents: usize,
        /// Take the items from a real session's agent task, run by a coordinator and two
        /// workers started for it, and time it to the session's result
        #[arg(long)]
        session: bool,
        #[command(flatten)]
        servers: crate::servers::Servers,
    },
    /// Distributed fan-out over real Kafka and Redis: starts a coordinator and two worker
    /// processes in a fresh namespace, then measures N no-op instances submit to result,
    /// the latency of one-task sessions, and each process's peak RSS
    #[cfg(feature = "distributed")]
    Distributed {
        /// Instance counts
        #[arg(long, value_delimiter = ',', default_values_t = [10_000u64, 100_000, 1_000_000])]
        sizes: Vec<u64>,
        /// One-task sessions submitted one after another for the latency percentiles
        #[arg(long, default_value_t = 200)]
        latency_runs: usize,
        /// Instances of the retry case: a `fail` fan-out that never fails, then one that fails
        /// every instance once (retried at once); 0 skips it
        #[arg(long, default_value_t = 100_000)]
        retries: u64,
        #[command(flatten)]
        servers: crate::servers::Servers,
    },
}

#[cfg(feature = "distributed")]
/// Offers `items` items of a fresh type on Redis, then has `agents` agents (a connection each)
/// claim and complete them all; prints the claim/complete round trips per second. With
/// `session`, the items are a real session's agent task instead, run by a coordinator and two
/// workers started for it: also the time from submission to the session's result, which
/// includes the workers recording every report.
async fn agents_case(
    items: u64,
    agents: usize,
    session: bool,
    servers: &crate::servers::Servers,
) -> anyhow::Result<()> {
    let store = servers
        .waiting(agency::connect::SERVER_PATIENCE)
        .store()
        .await?;
    let kind = format!("bench-{}", uuid::Uuid::new_v4().simple());
    if session {
        return agents_session(items, agents, &kind, servers).await;
    }
    let offered: Vec<events::AgentItem> = (0..items)
        .map(|n| events::AgentItem {
            id: format!("{kind}|{n}"),
            kind: kind.clone(),
            input: json!({"n": n}),
            claim_timeout_ms: 60_000,
            origin: events::AgentOrigin::Instance {
                session: format!("{kind}-session"),
                run: "bench".into(),
                group: 0,
                task: 0,
                task_id: "t".into(),
                instance: n,
                attempt: 1,
            },
        })
        .collect();
    events::AgentQueue::agent_offer(&store, &offered).await?;
    let started = Instant::now();
    let done = run_agents(items, agents, &kind, servers, Duration::ZERO).await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{done} items claimed and completed by {agents} agents in {seconds:.2} s: {:.0} round trips/s",
        done as f64 / seconds
    );
    // Their sessions do not exist: the reports kept for a worker to record go now.
    let ids: Vec<String> = offered.into_iter().map(|item| item.id).collect();
    for page in ids.chunks(10_000) {
        events::AgentQueue::agent_reported(&store, page).await?;
    }
    anyhow::ensure!(done == items, "{done} of {items} items completed");
    Ok(())
}

#[cfg(feature = "distributed")]
/// `agents` agents (a connection each) claiming items of `kind` and completing them until
/// `items` are done, waiting up to `wait` for each claim (none coming ends an agent when
/// `wait` is zero); returns how many they completed.
async fn run_agents(
    items: u64,
    agents: usize,
    kind: &str,
    servers: &crate::servers::Servers,
    wait: Duration,
) -> anyhow::Result<u64> {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers = (0..agents).map(|k| {
        let (kind, servers, done) = (
            kind.to_string(),
            servers.waiting(agency::connect::SERVER_PATIENCE),
            done.clone(),
        );
        tokio::spawn(async move {
            let store = servers.store().await?;
            let types = [kind];
            let wanted = events::Wanted {
                types: &types,
                workflow: None,
            };
            while done.load(std::sync::atomic::Ordering::Relaxed) < items {
                let agent = format!("agent-{k}");
                let Some(claim) = agency::agent_tasks::claim(&store, &agent, wanted, wait).await?
                else {
                    if wait.is_zero() {
                        break;
                    }
                    continue;
                };
                agency::agent_tasks::complete(&store, &claim.token, json!({"ok": true})).await?;
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            anyhow::Ok(())
        })
    });
    for worker in futures_util::future::join_all(workers).await {
        worker??;
    }
    Ok(done.load(std::sync::atomic::Ordering::Relaxed))
}

#[cfg(feature = "distributed")]
async fn agents_session(
    items: u64,
    agents: usize,
    kind: &str,
    servers: &crate::servers::Servers,
) -> anyhow::Result<()> {
    anyhow::ensure!(items > 0, "--items must be at least 1");
    let namespace = format!("bench-agents-{}.", uuid::Uuid::new_v4().simple());
    let fleet = crate::bench_distributed::Processes::fleet(servers, &namespace)?;
    let kafka = std::sync::Arc::new(
        agency::connect::connect_broker(servers.kafka_options()?, agency::connect::SERVER_PATIENCE)
            .await?,
    );
    let broker = events::Namespaced::new(kafka, &namespace);
    let store = servers
        .waiting(agency::connect::SERVER_PATIENCE)
        .store()
        .await?;
    let mut waiter = agency::results::ResultWaiter::subscribe(&store).await?;
    let document = json!({"session_id": format!("{namespace}agents"), "groups": [{"id": "g",
        "tasks": [{"id": "review", "executor": "agent",
            "agent": {"type": kind, "claim_timeout_ms": 60_000},
            "input": {"n": "{{n}}", "expansion_config":
                {"type": "range", "range": format!("0-{}", items - 1), "variable": "n"}}}]}]});
    let started = Instant::now();
    let submitted = agency::client::submit(&broker, &store, document).await?;
    let done = run_agents(items, agents, kind, servers, Duration::from_millis(500)).await?;
    let claimed = started.elapsed().as_secs_f64();
    let result = waiter
        .wait(
            &store,
            &submitted.id,
            Some(&submitted.run),
            Some(Duration::from_secs(600)),
        )
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        result.status == taskgroup::ResultStatus::Completed,
        "the session ended {:?}",
        result.status
    );
    println!(
        "{done} agent items of one session, {agents} agents, a coordinator and 2 workers: the last completed {claimed:.2} s after submission, the result {seconds:.2} s after ({:.0} items/s end to end); peak RSS {}",
        done as f64 / seconds,
        fleet
            .peak_rss()
            .iter()
            .map(|(role, mb)| format!("{role} {mb:.0} MB"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

pub fn run(bench: Bench) -> anyhow::Result<()> {
    match bench {
        #[cfg(feature = "distributed")]
        Bench::Agents {
            items,
            agents,
            session,
            servers,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(agents_case(items, agents, session, &servers))
        }
        #[cfg(feature = "distributed")]
        Bench::Distributed {
            sizes,
            latency_runs,
            retries,
            servers,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::bench_distributed::run(
                &sizes,
                latency_runs,
                retries,
                &servers,
            ))
        }
        Bench::Embedded {
            one: Some(n),
            workers,
            fail_times,
            ..
        } => {
            println!("{}", embedded_case(n, workers, fail_times)?);
            Ok(())
        }
        Bench::Embedded {
            sizes,
            workers,
            json,
            max_rss_mb,
            one: None,
            fail_times,
        } => embedded_sizes(&sizes, workers, json, max_rss_mb, fail_times),
        Bench::Expansion {
            shapes,
            render,
            with_exclude,
            json,
        } => expansion_shapes(&shapes, render, with_exclude, json),
    }
}

/// `bench embedded`: a child process per size (peak RSS only grows within a process), a line
/// each; an error when one's peak RSS is over `max_rss_mb`.
fn embedded_sizes(
    sizes: &[u64],
    workers: usize,
    json: bool,
    max_rss_mb: Option<f64>,
    fail_times: Option<u64>,
) -> anyhow::Result<()> {
    if !json {
        println!(
            "{:>12} {:>10} {:>16} {:>12}",
            "instances", "seconds", "instances/s", "peak RSS MB"
        );
    }
    let mut over = Vec::new();
    for &n in sizes {
        // A child process per size: peak RSS only grows within a process.
        let output = std::process::Command::new(std::env::current_exe()?)
            .args([
                "bench",
                "embedded",
                "--workers",
                &workers.to_string(),
                "--one",
                &n.to_string(),
            ])
            .args(fail_times.map(|k| format!("--fail-times={k}")))
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "bench of {n} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let result: Value = serde_json::from_slice(&output.stdout)?;
        if json {
            println!("{result}");
        } else {
            println!(
                "{:>12} {:>10.3} {:>16} {:>12.1}",
                thousands(n),
                result["seconds"].as_f64().unwrap_or_default(),
                thousands(result["instances_per_s"].as_f64().unwrap_or_default() as u64),
                result["peak_rss_mb"].as_f64().unwrap_or_default(),
            );
        }
        let peak = result["peak_rss_mb"].as_f64().unwrap_or_default();
        if max_rss_mb.is_some_and(|limit| peak > limit) {
            over.push(format!("{} instances: {peak:.1} MB", thousands(n)));
        }
    }
    anyhow::ensure!(
        over.is_empty(),
        "peak RSS over {} MB: {}",
        max_rss_mb.unwrap_or_default(),
        over.join(", ")
    );
    Ok(())
}

/// `bench expansion`: enumeration and rendering rates of each shape, with `exclude` too when
/// asked.
fn expansion_shapes(
    shapes: &[String],
    render: u64,
    with_exclude: bool,
    json: bool,
) -> anyhow::Result<()> {
    if !json {
        println!(
            "{:<22} {:>14} {:>16} {:>16} {:>12}",
            "shape", "instances", "enumerate/s", "render/s", "peak RSS MB"
        );
    }
    for shape in shapes {
        let axes = parse_shape(shape)?;
        for exclude in [false, true] {
            if exclude && !with_exclude {
                continue;
            }
            let result = expansion_case(&axes, exclude, render)?;
            if json {
                println!("{result}");
            } else {
                let label = if exclude {
                    format!("{shape} +exclude")
                } else {
                    shape.clone()
                };
                println!(
                    "{:<22} {:>14} {:>16} {:>16} {:>12.1}",
                    label,
                    thousands(result["instances"].as_u64().unwrap_or_default()),
                    thousands(result["enumerate_per_s"].as_f64().unwrap_or_default() as u64),
                    thousands(result["render_per_s"].as_f64().unwrap_or_default() as u64),
                    result["peak_rss_mb"].as_f64().unwrap_or_default(),
                );
            }
        }
    }
    Ok(())
}

fn parse_shape(shape: &str) -> anyhow::Result<Vec<usize>> {
    shape
        .split('x')
        .map(|n| {
            n.trim()
                .parse::<usize>()
                .with_context(|| format!("shape `{shape}`: `{n}` is not a number"))
        })
        .collect()
}

fn expansion_case(axes: &[usize], exclude: bool, render: u64) -> anyhow::Result<Value> {
    let mut input = Map::new();
    let mut mapping = Map::new();
    for (d, &len) in axes.iter().enumerate() {
        input.insert(
            format!("axis{d}"),
            Value::Array((0..len).map(|i| json!(i)).collect()),
        );
        mapping.insert(format!("x{d}"), json!(format!("axis{d}")));
    }
    let mut config = json!({"type": "matrix", "array_mapping": mapping});
    if exclude {
        // Removes one value of the first axis: every instance is then found through the bitmap.
        config["exclude"] = json!([{"x0": 0}]);
    }
    input.insert("label".into(), json!("cell {{x0}}"));
    input.insert("expansion_config".into(), config);
    let input = Value::Object(input);
    let path = FieldPath::root().key("bench");
    let task = Task {
        id: "bench",
        path: &path,
        input: &input,
        expansion_config: None,
        memo_key: None,
        upstream: &[],
    };

    let started = Instant::now();
    let expansion = Expansion::plan(
        task,
        &json!({}),
        &Limits {
            max_instances: u64::MAX,
            max_combinations: u64::MAX,
            ..Limits::default()
        },
    )?;
    let plan_s = started.elapsed().as_secs_f64();

    // Enumeration: every instance, and every variable's value looked up (no JSON is built).
    let variables = expansion.variables().len();
    let started = Instant::now();
    let mut checksum = 0usize;
    for instance in expansion.iter() {
        for k in 0..variables {
            let value = expansion.value(&instance, k)?;
            checksum = checksum.wrapping_add(&*value as *const Value as usize);
        }
    }
    black_box(checksum);
    let enumerate_s = started.elapsed().as_secs_f64();

    let rendered = render.min(expansion.len());
    let started = Instant::now();
    for instance in expansion.range(0..rendered) {
        black_box(expansion.render(&instance)?);
    }
    let render_s = started.elapsed().as_secs_f64();

    let instances = expansion.len();
    Ok(json!({
        "shape": axes,
        "exclude": exclude,
        "instances": instances,
        "plan_ms": plan_s * 1e3,
        "enumerate_s": enumerate_s,
        "enumerate_per_s": instances as f64 / enumerate_s.max(1e-9),
        "rendered": rendered,
        "render_per_s": rendered as f64 / render_s.max(1e-9),
        "peak_rss_mb": peak_rss_mb(),
    }))
}

pub fn embedded_case(n: u64, workers: usize, fail_times: Option<u64>) -> anyhow::Result<Value> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let options = agency::embedded::EmbeddedOptions {
        workers,
        ..Default::default()
    };
    let id = format!("bench-{n}");
    let text = match fail_times {
        Some(times) => retry_session(&id, n, times),
        None => fan_out_session(&id, n),
    }
    .to_string();
    let started = Instant::now();
    let result = runtime.block_on(agency::embedded::run_session(&text, &options))?;
    let seconds = started.elapsed().as_secs_f64();
    match fail_times {
        Some(times) => check_retries(&result, n, times)?,
        None => check_fan_out(&result, n)?,
    }
    Ok(json!({
        "instances": n,
        "workers": workers,
        "seconds": seconds,
        "instances_per_s": n as f64 / seconds.max(1e-9),
        "peak_rss_mb": peak_rss_mb(),
    }))
}

/// Fails unless a fan-out result completed with all `n` instances.
pub fn check_fan_out(result: &SessionResult, n: u64) -> anyhow::Result<()> {
    anyhow::ensure!(
        result.completed(),
        "the bench session did not complete: {:?}",
        result.errors
    );
    let done = result
        .groups
        .get("g")
        .and_then(|g| g.tasks.get("fan_out"))
        .map_or(0, |t| t.succeeded);
    anyhow::ensure!(done == n, "{done} of {n} instances succeeded");
    let combined = &result.context["fan_out"];
    let kept = expansion::ResultsRef::from_value(combined).map(|r| r.count);
    if n > taskgroup::DEFAULT_INLINE_COUNT {
        anyhow::ensure!(
            kept == Some(n),
            "{n} results are kept by reference, not {combined:.80}"
        );
    } else {
        let listed = combined.as_array().map(Vec::len);
        anyhow::ensure!(listed == Some(n as usize), "{n} results are in the context");
    }
    Ok(())
}

/// One session, one `noop` task fanned out over `n` instances (an `n/1000 x 1000` matrix when
/// it divides, so the session stays small).
pub fn fan_out_session(id: &str, n: u64) -> Value {
    let input = if n >= 10_000 && n.is_multiple_of(1000) {
        let rows: Vec<u64> = (0..n / 1000).collect();
        let cols: Vec<u64> = (0..1000).collect();
        json!({"xs": rows, "ys": cols, "expansion_config": {"type": "matrix", "array_mapping": {"x": "xs", "y": "ys"}}})
    } else {
        let items: Vec<u64> = (0..n).collect();
        json!({"xs": items, "expansion_config": {"type": "array", "array_mapping": {"x": "xs"}}})
    };
    json!({"session_id": id, "groups": [{"id": "g", "tasks": [{"id": "fan_out", "executor": "noop", "input": input}]}]})
}

/// One `fail` task over `n` instances (a `n/1000 x 1000` matrix when it divides) that fails the
/// first `times` attempts of each, with one retry at no delay.
pub fn retry_session(id: &str, n: u64, times: u64) -> Value {
    let mut session = fan_out_session(id, n);
    let task = &mut session["groups"][0]["tasks"][0];
    task["executor"] = json!("fail");
    task["input"]["times"] = json!(times);
    task["retry"] = json!({"max_retries": 1, "retry_delays": [0]});
    session
}

/// Fails unless a retry case completed with every instance, in `n * (times + 1)` attempts.
pub fn check_retries(result: &SessionResult, n: u64, times: u64) -> anyhow::Result<()> {
    check_fan_out(result, n)?;
    let attempts = result.groups["g"].tasks["fan_out"].attempts;
    anyhow::ensure!(
        attempts == n * (times + 1),
        "{attempts} attempts for {n} instances failing {times} times each"
    );
    Ok(())
}

/// This process's peak resident set size (`VmHWM`), in MB; 0 where `/proc` is not available.
pub fn peak_rss_mb() -> f64 {
    peak_rss_mb_of("self")
}

/// The peak resident set size of process `pid` (a number, or `self`), in MB; 0 when unknown.
pub fn peak_rss_mb_of(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
