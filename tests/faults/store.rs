//! Fault cases of the store, each on a Redis of its own: shut down and started again with its
//! append-only file (F5), stalled by `DEBUG SLEEP` (F7), out of memory, refusing a worker's
//! outcomes, and a paused coordinator whose subscription Redis drops (F18 a).

use super::checker::*;
use integration_tests::*;
use serde_json::json;
use std::time::Duration;

/// A coordinator dispatching ranges of 20 and two workers, on the shared Kafka and `redis`.
fn cluster_on(redis: &OwnRedis, name: &str) -> Cluster {
    let mut cluster = Cluster::start_on_servers(name, &[], &kafka_brokers(), &redis.url());
    cluster.spawn_with("coordinator", &["--chunk", "20"]);
    cluster.spawn("worker");
    cluster.spawn("worker");
    cluster
}

/// A session of 400 naps of 100 ms on its own Redis; once 40 are recorded, `fault` is done to
/// the Redis. Every process rides it out, and the session completes with each instance once and
/// one result.
fn one_session_through(
    name: &str,
    case: (&'static str, &'static str),
    fault: impl FnOnce(&OwnRedis),
) {
    let redis = OwnRedis::start(name);
    let published = Published::listen_on(&redis.url());
    let mut cluster = cluster_on(&redis, name);
    let id = unique(name);
    let (instances, ms) = (400, 100);
    cluster.submit(&naps(&id, instances, ms));
    wait_for_outcomes(&redis.url(), &id, 40);
    let case = Case::inject(case.0, case.1);
    fault(&redis);
    check_one_right_result(&published, &id, instances, ms);
    case.report(&published, &[&id], instances);
    for (n, process) in cluster.processes.iter_mut().enumerate() {
        assert!(process.try_wait().unwrap().is_none(), "process {n} exited");
    }
}

/// Reliability F5: Redis shut down mid-session (its append-only file written), started again
/// 5 s later on the same data.
#[test]
fn redis_shut_down_and_started_again_with_its_append_only_file_loses_nothing() {
    one_session_through(
        "redis-restart",
        (
            "F5 Redis restarted with its append-only file",
            "SHUTDOWN of Redis (appendonly yes, everysec) mid-session, started again 5 s later on the same data",
        ),
        |redis| {
            redis.shutdown();
            std::thread::sleep(Duration::from_secs(5));
            redis.up();
        },
    );
}

/// Reliability F7: Redis stalls for 8 s (`DEBUG SLEEP 8`) mid-session: every call waits or
/// times out and is tried again.
#[test]
fn a_redis_stalled_mid_session_loses_nothing() {
    one_session_through(
        "redis-stall",
        ("F7 Redis stalled", "DEBUG SLEEP 8 on Redis mid-session"),
        |redis| {
            redis.query(&["DEBUG", "SLEEP", "8"]).unwrap();
        },
    );
}

/// Redis out of memory for 8 s mid-session: `maxmemory` set below what it holds (the default
/// `noeviction` policy), so it refuses every write with `OOM`. Writes are waited out as in an
/// outage, never taken as refused: a worker that dropped a range it could not record would
/// leave the session waiting for it for ever.
#[test]
fn a_redis_out_of_memory_mid_session_loses_nothing() {
    one_session_through(
        "redis-oom",
        (
            "Redis out of memory",
            "CONFIG SET maxmemory 1 on Redis mid-session (every write refused with OOM), 0 again 8 s later",
        ),
        |redis| {
            redis.query(&["CONFIG", "SET", "maxmemory", "1"]).unwrap();
            std::thread::sleep(Duration::from_secs(8));
            redis.query(&["CONFIG", "SET", "maxmemory", "0"]).unwrap();
        },
    );
}

/// A worker whose Redis user may not write outcomes (an ACL without `hset`): Redis refuses
/// every recording (the script's user "can't run this command"), which trying again would not
/// change. The worker announces the
/// range's instances as failed attempts naming the refusal, so the session ends failed with the
/// reason in its result, instead of waiting for outcomes that never come.
#[test]
fn outcomes_the_store_refuses_fail_their_instances_with_the_reason() {
    let redis = OwnRedis::start("refused-outcomes");
    let acl = [
        "ACL",
        "SETUSER",
        "worker",
        "on",
        ">worker-secret",
        "~*",
        "&*",
        "+@all",
        "-hset",
    ];
    redis.query(&acl).unwrap();
    let worker_url = redis
        .url()
        .replacen("redis://", "redis://worker:worker-secret@", 1);
    let mut cluster =
        Cluster::start_on_servers("refused-outcomes", &[], &kafka_brokers(), &redis.url());
    cluster.spawn_with("coordinator", &["--chunk", "20"]);
    cluster.spawn_env("worker", &[], &[("AGENCY_REDIS", &worker_url)]);
    let id = unique("refused-outcomes");
    cluster.submit(&naps(&id, 40, 10));
    let result = stored_result(&redis.url(), &id, Duration::from_secs(120));
    assert_eq!(result["status"], "failed", "{result}");
    let naps = &result["groups"]["g"]["tasks"]["naps"];
    assert!(naps["failed"].as_u64() >= Some(1), "{naps}");
    let error = naps["failures"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("the store refused the outcome")
            && error.contains("can't run this command"),
        "{error}"
    );
}

/// Reliability F18 (a): the coordinator is paused for 15 s while the workers finish thousands
/// of instances, and Redis drops its notices subscription meanwhile, as it does to a subscriber
/// past its output-buffer limit (`client-output-buffer-limit pubsub`). On this machine the
/// kernel's socket buffers absorb megabytes of notices before Redis's own limit is reached, so
/// the case drops every pub/sub client with `CLIENT KILL TYPE pubsub` instead of waiting for
/// that. Woken, the coordinator subscribes again, reads what it missed from the store, and the
/// session completes with one result.
#[test]
fn a_coordinator_whose_subscription_redis_dropped_while_it_was_paused_catches_up() {
    let redis = OwnRedis::start("slow-subscriber");
    let published = Published::listen_on(&redis.url());
    let mut cluster = cluster_on(&redis, "slow-subscriber");
    let id = unique("slow-subscriber");
    let (instances, ms) = (20_000, 1);
    // Instances of 1 ms, 64 at a time per worker: some 3 s of work in all.
    let mut doc = naps(&id, instances, ms);
    doc["groups"][0]["tasks"][0]["concurrency"] = json!(64);
    cluster.submit(&doc);
    wait_for_outcomes(&redis.url(), &id, 100);
    let coordinator = cluster.processes[0].id();
    let case = Case::inject(
        "F18 a coordinator's subscription dropped while it was paused",
        "kill -STOP of the coordinator for 15 s mid-session; meanwhile Redis drops every pub/sub client (CLIENT KILL TYPE pubsub)",
    );
    signal(coordinator, "STOP");
    std::thread::sleep(Duration::from_secs(5));
    redis.query(&["CLIENT", "KILL", "TYPE", "pubsub"]).unwrap();
    std::thread::sleep(Duration::from_secs(10));
    signal(coordinator, "CONT");
    check_one_right_result(&published, &id, instances, ms);
    case.report(&published, &[&id], instances);
    let log = std::fs::read_to_string(cluster.dir.join("coordinator-0.log")).unwrap();
    assert!(
        log.contains("resubscribing"),
        "the coordinator never noticed its subscription was gone: {log}"
    );
    assert!(cluster.processes[0].try_wait().unwrap().is_none());
}
