//! The library's CSV runner and HTTP API called as a Rust API (the binary's `agency csv` and
//! `--http` are thin over them): over the in-memory broker and store, so no servers are needed;
//! the same API on the real servers is tested through the binary in `tests/metrics.rs` and
//! `tests/distributed.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use agency::client::Client;
use agency::csv::{Blueprints, CsvRun, Runner};
use agency::{intake, Registry, Worker, WorkerOptions};
use events::{MemoryBroker, MemoryStore};
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A coordinator and a worker in this process, and a client of them.
fn deployment(stop: &CancellationToken) -> (Arc<MemoryBroker>, Arc<MemoryStore>, Client) {
    let (broker, store) = (Arc::new(MemoryBroker::new()), Arc::new(MemoryStore::new()));
    let rules = taskgroup::Rules::default();
    tokio::spawn(intake::run_coordinator(
        broker.clone(),
        store.clone(),
        rules,
        "coordinators",
        4096,
        stop.clone(),
    ));
    let registry = Registry::builtin(broker.clone());
    let worker = Worker::new(
        broker.clone(),
        store.clone(),
        registry,
        WorkerOptions::default(),
    );
    tokio::spawn(worker.run(stop.clone()));
    let client = Client::new(broker.clone(), store.clone(), "");
    (broker, store, client)
}

/// The `state` events of a server-sent event stream's text.
fn events_of(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|data| serde_json::from_str(data.trim()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_serves_a_session_and_follows_it_to_its_result() {
    let stop = CancellationToken::new();
    let (broker, store, client) = deployment(&stop);
    let address = agency::http::address("0").unwrap();
    let access = agency::http::HttpAccess {
        read: Some("a-read-token-of-the-test".into()),
        ..Default::default()
    };
    let (bound, served) = agency::http::serve(address, Some((broker, store)), access, stop.clone())
        .await
        .unwrap();
    let base = format!("http://{bound}");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        "Bearer a-read-token-of-the-test".parse().unwrap(),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();

    let session = json!({"session_id": "surfaces-1", "groups": [{"id": "g", "tasks": [
        {"id": "wait", "executor": "sleep", "input": {"ms": 1500}},
        {"id": "t", "executor": "echo", "depends_on": ["wait"],
         "input": {"xs": [1, 2, 3], "expansion_config": {"type": "array", "array_mapping": {"x": "xs"}}}}]}]});
    let submitted = client.submit(session).await.unwrap();
    // The event stream follows the session until its result, which ends the stream.
    let stream = http
        .get(format!("{base}/api/sessions/surfaces-1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(60), stream.text())
        .await
        .expect("the stream ends with the result")
        .unwrap();
    let events = events_of(&text);
    let last = events.last().expect("at least the result");
    assert_eq!(last["finished"], json!(true), "{text}");
    assert_eq!(last["result"]["status"], json!("completed"));
    assert_eq!(
        last["result"]["groups"]["g"]["tasks"]["t"]["succeeded"],
        json!(3)
    );
    // Before it: live states only, each different from the one before.
    for (i, event) in events[..events.len() - 1].iter().enumerate() {
        assert_eq!(event["finished"], json!(false), "{text}");
        assert_ne!(Some(event), i.checked_sub(1).map(|j| &events[j]), "{text}");
    }
    let result = client
        .wait(&submitted, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(result.completed());

    let answer = http
        .get(format!("{base}/api/sessions/surfaces-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    assert_eq!(answer["result"]["context_keys"], json!(2));
    let list = http
        .get(format!("{base}/api/sessions?status=completed"))
        .send()
        .await
        .unwrap();
    let list: Value = serde_json::from_str(&list.text().await.unwrap()).unwrap();
    assert_eq!(list["sessions"][0]["session_id"], json!("surfaces-1"));
    assert_eq!(list["sessions"][0]["succeeded"], json!(4));
    // An unknown session is a 404, for its answer and its stream alike.
    for path in ["/api/sessions/none-such", "/api/sessions/none-such/events"] {
        let answer = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(answer.status(), 404, "{path}");
        let body: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
        assert_eq!(
            body["error"],
            json!("no session none-such is pending, running or has a result")
        );
    }
    stop.cancel();
    served.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_says_an_unknown_session_is_unknown_and_ends() {
    let stop = CancellationToken::new();
    let (_, store, _) = deployment(&stop);
    let mut updates = std::pin::pin!(agency::client::follow(
        store,
        "never-submitted",
        Duration::from_millis(50)
    ));
    match updates.next().await {
        Some(Err(agency::Error::UnknownSession { session })) => {
            assert_eq!(session, "never-submitted")
        }
        other => panic!("expected UnknownSession, got {other:?}"),
    }
    assert!(updates.next().await.is_none());
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csv_runner_writes_each_row_in_input_order_on_a_deployment() {
    let stop = CancellationToken::new();
    let (_, _, client) = deployment(&stop);
    let dir = std::env::temp_dir().join(format!("agency-csv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("rows.csv");
    std::fs::write(&input, "task_id,task_type\n3,a\n1,b\nx,a\n3,c\n2,missing\n").unwrap();
    let blueprints = dir.join("blueprints.json");
    std::fs::write(
        &blueprints,
        json!({"blueprints": {
            "a": [{"step": "one", "executor": "echo", "input": {"id": "{{task_id}}"}}],
            "b": [{"step": "one", "executor": "fail", "input": {"permanent": true}}],
            "c": [{"step": "one", "executor": "echo"}, {"step": "two", "executor": "echo"}]}})
        .to_string(),
    )
    .unwrap();
    let mut job = CsvRun::new(input.clone(), Blueprints::read(&blueprints).unwrap());
    job.batch = 2;
    let progress = agency::Progress::default();
    let mut out = Vec::new();
    let mut said = Vec::new();
    let runner = Runner::Distributed(Arc::new(client));
    let summary = agency::csv::run(&job, runner, &mut out, &progress, |why| {
        said.push(why.to_string())
    })
    .await
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    // Id 3 is written where it first appeared, with its latest row's outcome (type c); the
    // malformed row and the unknown type are failed in their places.
    assert_eq!(lines[0], "task_id,final_status,error_info");
    assert_eq!(lines[1], "3,Completed,", "{out}");
    assert!(lines[2].starts_with("1,Failed,one: "), "{out}");
    assert!(
        lines[3].starts_with("x,Failed,line 4: task_id `x` is not a u64"),
        "{out}"
    );
    assert_eq!(
        lines[4], "2,Failed,\"no blueprint for task_type `missing` (blueprints: a, b, c)\"",
        "{out}"
    );
    assert_eq!(lines.len(), 5, "{out}");
    assert_eq!(summary, agency::csv::Summary { rows: 4, failed: 3 });
    assert_eq!(said.len(), 1);
    assert!(
        said[0].ends_with("rows.csv: line 4: task_id `x` is not a u64"),
        "{said:?}"
    );
    let settled = progress.settled.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(settled, 4);
    // A blueprint file with a problem names its place.
    std::fs::write(&blueprints, r#"{"blueprints": {"a": []}}"#).unwrap();
    let refused = Blueprints::read(&blueprints).unwrap_err().to_string();
    assert!(
        refused.ends_with("blueprints.json: blueprints.a: no steps"),
        "{refused}"
    );
    stop.cancel();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Progress counts a batch's rows as they settle, not when the whole batch is written: two
/// quick rows are counted while a third, in the same batch, still runs (issue 30, finding 10).
#[tokio::test]
async fn csv_progress_counts_rows_as_they_settle() {
    let dir = std::env::temp_dir().join(format!("agency-csv-progress-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (input, flag) = (dir.join("rows.csv"), dir.join("go"));
    std::fs::write(&input, "task_id,task_type\n1,quick\n2,slow\n3,quick\n").unwrap();
    let wait = format!(
        "while [ ! -f {} ]; do sleep 0.02; done; echo 2",
        flag.display()
    );
    let blueprints = dir.join("blueprints.json");
    std::fs::write(
        &blueprints,
        json!({"blueprints": {
            "quick": [{"step": "one", "executor": "echo"}, {"step": "two", "executor": "echo"}],
            "slow": [{"step": "one", "executor": "command", "input": {"argv": ["sh", "-c", wait]}}]}})
        .to_string(),
    )
    .unwrap();
    let job = CsvRun::new(input, Blueprints::read(&blueprints).unwrap());
    let progress = agency::Progress::default();
    let mut out = Vec::new();
    let settled = || progress.settled.load(std::sync::atomic::Ordering::Relaxed);
    let summary = {
        let run = agency::csv::run(&job, Runner::Embedded, &mut out, &progress, |_| {});
        let mut run = std::pin::pin!(run);
        let counted = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                tokio::select! {
                    done = &mut run => panic!("the run ended with its slow row waiting: {done:?}"),
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
                if settled() >= 2 {
                    break settled();
                }
            }
        })
        .await
        .expect("the quick rows are counted while the slow one runs");
        assert_eq!(counted, 2);
        std::fs::write(&flag, "").unwrap();
        run.await.unwrap()
    };
    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        summary,
        agency::csv::Summary { rows: 3, failed: 0 },
        "{out}"
    );
    assert_eq!(settled(), 3);
    assert_eq!(
        out,
        "task_id,final_status,error_info\n1,Completed,\n2,Completed,\n3,Completed,\n"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
