//! Per-item pipelines: tasks depending on another instance by instance, run with real child
//! processes, embedded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::{json, Value};

/// Prints the instance's item and when its step began and ended (after `naps` seconds for that
/// item); item 1 fails in the first step.
const STEP: &str = "import json, sys, time\n\
    started = time.time()\n\
    got = json.load(sys.stdin)\n\
    item = got['item'] if 'item' in got else got['up']['item']\n\
    if got.get('fail_item') == item:\n\
    \x20   sys.exit('item %d cannot be fetched' % item)\n\
    time.sleep(got['naps'][item])\n\
    print(json.dumps({'item': item, 'start': started, 'end': time.time(), 'up': got.get('up')}))";

fn step(id: &str, upstream: Option<&str>, naps: &[f64]) -> Value {
    let mut input = json!({"argv": ["python3", "-c", STEP], "naps": naps, "fail_item": 1});
    let mut task = json!({"id": id, "executor": "command", "timeout_ms": 30_000});
    match upstream {
        None => {
            input["item"] = json!("{{item}}");
            input["items"] = json!([0, 1, 2, 3]);
            input["expansion_config"] =
                json!({"type": "array", "array_mapping": {"item": "items"}});
        }
        Some(upstream) => {
            input["up"] = json!(format!("{{{{upstream.{upstream}}}}}"));
            input["items"] = json!([0, 1, 2, 3]);
            input["expansion_config"] = json!({"type": "array", "array_mapping": {"n": "items"}});
            task["depends_on"] = json!([{"task": upstream, "each": true}]);
        }
    }
    task["input"] = input;
    task
}

/// Issue #16: item 0 goes through all three steps while item 2 is still in its first; item 1
/// fails in its first step, which fails its later steps without running them, and only them.
#[tokio::test]
async fn each_item_runs_its_chain_without_waiting_for_the_others() {
    let slow = [0.05, 0.0, 2.0, 0.05];
    let doc = json!({"groups": [{"id": "g", "failure_policy": "all_settled", "tasks": [
        step("fetch", None, &slow),
        step("delay", Some("fetch"), &[0.05; 4]),
        step("emit", Some("delay"), &[0.0; 4]),
    ]}]});
    let result = run(doc).await;
    let tasks = &result["groups"]["g"]["tasks"];
    assert_eq!(result["status"], "partial", "{result:#}");
    for task in ["fetch", "delay", "emit"] {
        assert_eq!(tasks[task]["succeeded"], 3, "{task}: {result:#}");
        assert_eq!(tasks[task]["failed"], 1, "{task}: {result:#}");
    }
    let failures = |task: &str| tasks[task]["failures"].as_array().unwrap().clone();
    assert_eq!(failures("fetch")[0]["instance"], 1);
    assert!(
        failures("fetch")[0]["error"]
            .as_str()
            .unwrap()
            .contains("item 1 cannot be fetched"),
        "{result:#}"
    );
    assert_eq!(
        failures("delay")[0]["error"],
        "not run: instance 1 of task `fetch` failed"
    );
    assert_eq!(failures("delay")[0]["attempts"], 0);
    assert_eq!(
        failures("emit")[0]["error"],
        "not run: instance 1 of task `delay` failed"
    );
    // Each step read the result of the same item's previous step; the failed item has none.
    let results = |task: &str| result["context"][task].as_array().unwrap().clone();
    let emit = results("emit");
    assert_eq!(emit[3]["up"]["item"], 3);
    assert_eq!(emit[3]["up"]["up"]["item"], 3);
    assert_eq!(emit[1], Value::Null);
    // No barrier: item 0's second and third steps started before item 2's first step ended.
    let fetch = results("fetch");
    let (fetch_2_end, delay_0, emit_0) = (
        fetch[2]["end"].as_f64().unwrap(),
        results("delay")[0]["start"].as_f64().unwrap(),
        emit[0]["start"].as_f64().unwrap(),
    );
    assert!(delay_0 < fetch_2_end, "{delay_0} < {fetch_2_end}");
    assert!(emit_0 < fetch_2_end, "{emit_0} < {fetch_2_end}");
}
