//! `--http`: `/metrics` scraped after a session of known outcomes, counted exactly, and the
//! status page's JSON API with its answers to bad requests, on the real servers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use integration_tests::{free_port, http, produce, unique, wait_for_port, Cluster};
use serde_json::{json, Value};

/// The value of the sample `series` (a name with its labels as agency encodes them) in
/// `text`, the Prometheus text format.
fn sample(text: &str, series: &str) -> f64 {
    found(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// The value of the sample `series` in `text`, if it is there.
fn found(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().unwrap())
}

/// The metric names the Grafana dashboard's queries use and the metrics table of
/// docs/observability.md lists.
fn documented_metrics() -> Vec<String> {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let dashboard = std::fs::read_to_string(docs.join("grafana/agency.json")).unwrap();
    let page = std::fs::read_to_string(docs.join("observability.md")).unwrap();
    let table = page
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|line| line.split('`').next())
        .filter(|name| name.starts_with("agency_"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut names: Vec<String> = format!("{dashboard} {table}")
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("agency_"))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 12, "{names:?}");
    names
}

fn scrape(port: u16) -> String {
    let (status, text) = http(port, "GET", "/metrics");
    assert_eq!(status, 200, "{text}");
    text
}

fn fan_out(n: usize) -> Value {
    let ns: Vec<usize> = (0..n).collect();
    json!({"ns": ns, "expansion_config": {"type": "array", "array_mapping": {"n": "ns"}}})
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_a_session_of_known_successes_failures_and_retries_exactly() {
    let (coordinator_port, worker_port) = (free_port(), free_port());
    let mut cluster = Cluster::start_with("metrics", &[]);
    let coordinator_http = coordinator_port.to_string();
    cluster.spawn_with("coordinator", &["--http", &coordinator_http, "--http-open"]);
    let worker_http = format!("127.0.0.1:{worker_port}");
    cluster.spawn_with("worker", &["--http", &worker_http, "--http-open"]);
    wait_for_port(coordinator_port);
    wait_for_port(worker_port);

    let id = unique("counted");
    let mut flaky = fan_out(3);
    flaky["times"] = json!(1);
    let session = json!({"session_id": id, "groups": [{"id": "g", "failure_policy": "all_settled", "tasks": [
        // 5 successes.
        {"id": "ok", "executor": "echo", "input": fan_out(5)},
        // 3 instances failing their first attempt: 3 failures, 3 retries, 3 successes.
        {"id": "flaky", "executor": "fail", "retry": {"max_retries": 2, "retry_delays": [10]}, "input": flaky},
        // 2 instances failing every attempt: 4 failures, 2 retries.
        {"id": "broken", "executor": "fail", "retry": {"max_retries": 1, "retry_delays": [10]}, "input": fan_out(2)}
    ]}]});
    let (code, result) = cluster.submit_wait(&session);
    assert_eq!(code, 1, "{result}");
    assert_eq!(result["status"], "partial");
    // A message the coordinator cannot read.
    produce(
        &format!("{}agency_action", cluster.namespace),
        "junk",
        b"{not json",
    )
    .await;

    let worker = scrape(worker_port);
    for (series, expected) in [
        (
            r#"agency_instances_total{status="succeeded",executor="echo"}"#,
            5.0,
        ),
        (
            r#"agency_instances_total{status="failed",executor="echo"}"#,
            0.0,
        ),
        (
            r#"agency_instances_total{status="succeeded",executor="fail"}"#,
            3.0,
        ),
        (
            r#"agency_instances_total{status="failed",executor="fail"}"#,
            7.0,
        ),
        (
            r#"agency_instances_total{status="timed_out",executor="fail"}"#,
            0.0,
        ),
        (
            r#"agency_instance_duration_seconds_count{executor="echo"}"#,
            5.0,
        ),
        (
            r#"agency_instance_duration_seconds_count{executor="fail"}"#,
            10.0,
        ),
        (r#"agency_build_info{version="0.1.0"}"#, 1.0),
    ] {
        assert_eq!(sample(&worker, series), expected, "{series}");
    }
    assert!(worker.contains("# TYPE agency_kafka_consumer_lag gauge"));
    assert!(worker.contains("# TYPE agency_backend_errors counter"));

    // The coordinator counts the dead letter once it has read it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let coordinator = loop {
        let text = scrape(coordinator_port);
        if sample(&text, r#"agency_dead_letters_total{reason="malformed"}"#) == 1.0 {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no dead letter counted:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    for (series, expected) in [
        (r#"agency_sessions_total{status="partial"}"#, 1.0),
        (r#"agency_sessions_total{status="completed"}"#, 0.0),
        (r#"agency_sessions_total{status="failed"}"#, 0.0),
        ("agency_sessions_running", 0.0),
        ("agency_session_duration_seconds_count", 1.0),
        ("agency_retries_total", 5.0),
        (r#"agency_dead_letters_total{reason="running"}"#, 0.0),
    ] {
        assert_eq!(sample(&coordinator, series), expected, "{series}");
    }
    // Three tasks, then the retries: each a range at least.
    assert!(sample(&coordinator, "agency_dispatch_ranges_total") >= 4.0);
    // No session id in any label.
    assert!(!coordinator.contains(&id) && !worker.contains(&id));
    // Every metric the dashboard and docs/observability.md name is served.
    for name in documented_metrics() {
        assert!(
            coordinator.contains(&name) || worker.contains(&name),
            "{name} is documented but neither process serves it"
        );
    }

    // The status page's API.
    let (status, body) = http(coordinator_port, "GET", &format!("/api/sessions/{id}"));
    assert_eq!(status, 200, "{body}");
    let shown: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(shown["finished"], true);
    assert_eq!(shown["result"]["status"], "partial");
    assert_eq!(
        shown["result"]["groups"]["g"]["tasks"]["flaky"]["attempts"],
        6
    );
    assert_eq!(
        shown["result"]["context"],
        json!({}),
        "no context on the page"
    );
    let (status, body) = http(coordinator_port, "GET", "/api/sessions?limit=10");
    assert_eq!(status, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    let row = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["session_id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {listed}"));
    assert_eq!(row["status"], "partial");
    assert_eq!(
        (row["total"].clone(), row["failed"].clone()),
        (json!(10), json!(2))
    );
    // A finished session's stream sends its state once and ends.
    let (status, body) = http(
        coordinator_port,
        "GET",
        &format!("/api/sessions/{id}/events"),
    );
    assert_eq!(status, 200);
    assert!(body.starts_with("event: state\ndata: {"), "{body}");
    let (status, page) = http(coordinator_port, "GET", "/");
    assert_eq!(status, 200);
    assert!(page.contains("<title>agency</title>"));

    // Bad requests: clear 4xx answers.
    for (method, path, expected, says) in [
        (
            "GET",
            "/api/sessions/no-such-session-here",
            404,
            "no session no-such-session-here",
        ),
        ("GET", "/api/sessions/%7Dx", 400, "session id \"}x\""),
        (
            "POST",
            "/api/sessions/%7Dx/cancel",
            400,
            "session id \"}x\"",
        ),
        (
            "DELETE",
            &format!("/api/sessions/{id}"),
            405,
            "DELETE is not allowed",
        ),
        ("POST", "/metrics", 405, "POST is not allowed on /metrics"),
        ("GET", "/api/sessions?limit=0", 400, "limit=\"0\""),
        ("GET", "/api/sessions?status=happy", 400, "status=\"happy\""),
        ("GET", "/nothing", 404, "no such path: /nothing"),
        (
            "POST",
            &format!("/api/sessions/{id}/cancel"),
            409,
            "has already finished (partial)",
        ),
        (
            "POST",
            "/api/sessions/no-such-session-here/cancel",
            404,
            "nothing to cancel",
        ),
    ] {
        let (status, body) = http(coordinator_port, method, path);
        assert_eq!(status, expected, "{method} {path}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert!(
            error["error"].as_str().unwrap().contains(says),
            "{method} {path}: {body}"
        );
    }
    // A worker serves /metrics only.
    let (status, body) = http(worker_port, "GET", "/api/sessions");
    assert_eq!(
        (status, body.contains("no such path")),
        (404, true),
        "{body}"
    );
}

/// While a million instances run: `/metrics` on the coordinator and on the workers, the
/// status page and its API answer, and the counts they show grow to the million.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_the_status_page_answer_while_a_million_instances_run() {
    let ports = [free_port(), free_port(), free_port()];
    let mut cluster = Cluster::start_with("million-metrics", &[]);
    cluster.spawn_with(
        "coordinator",
        &["--http", &ports[0].to_string(), "--http-open"],
    );
    cluster.spawn_with("worker", &["--http", &ports[1].to_string(), "--http-open"]);
    cluster.spawn_with("worker", &["--http", &ports[2].to_string(), "--http-open"]);
    ports.iter().for_each(|port| wait_for_port(*port));
    let id = unique("million");
    let document = json!({"session_id": id, "groups": [{"id": "grid", "tasks": [{"id": "cells",
        "executor": "noop",
        "input": {"expansion_config": {"type": "range", "range": "0-999999", "variable": "n"}}}]}]});
    cluster.submit(&document);

    let executed = || -> f64 {
        ports[1..]
            .iter()
            .map(|port| {
                // A worker that has not prepared the task yet has no noop series.
                let series = r#"agency_instances_total{status="succeeded",executor="noop"}"#;
                found(&scrape(*port), series).unwrap_or(0.0)
            })
            .sum()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let (mut seen_running, mut last) = (0, 0.0);
    let finished = loop {
        let coordinator = scrape(ports[0]);
        let (status, body) = http(ports[0], "GET", &format!("/api/sessions/{id}"));
        assert_eq!(status, 200, "{body}");
        let shown: Value = serde_json::from_str(&body).unwrap();
        let (page, html) = http(ports[0], "GET", &format!("/sessions/{id}"));
        assert_eq!((page, html.contains("<title>agency</title>")), (200, true));
        let now = executed();
        assert!(now >= last, "the count went back from {last} to {now}");
        last = now;
        if shown["finished"] == true {
            break shown;
        }
        if shown["state"]["status"] == "running" && (1.0..1_000_000.0).contains(&now) {
            assert_eq!(sample(&coordinator, "agency_sessions_running"), 1.0);
            seen_running += 1;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no result in 10 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(finished["result"]["status"], "completed");
    assert!(seen_running >= 1, "never answered while it ran");
    // Each instance once; a range delivered again in a rebalance would be executed again.
    assert!(executed() >= 1_000_000.0);
    let coordinator = scrape(ports[0]);
    assert_eq!(
        sample(&coordinator, r#"agency_sessions_total{status="completed"}"#),
        1.0
    );
}
