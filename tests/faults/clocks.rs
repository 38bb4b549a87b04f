//! Reliability F16, clocks that disagree. A process's monotonic clock is moved ahead with a time
//! namespace (`unshare --time`), which the kernel keeps consistent for everything the process
//! waits on. The wall clock cannot be moved for one process (time namespaces do not cover it,
//! and libfaketime breaks librdkafka's timed waits, see `docs/reliability.md`); no decision of
//! agency reads it (`tests/tidy.rs` checks that no crate does): leases expire by Redis's clock
//! (`SET ... PX`), and timeouts and backoffs run on each process's own monotonic clock.

use super::checker::*;
use integration_tests::*;

const DAY: u64 = 86_400;

/// The prefix that runs a program with its monotonic and boot clocks `seconds` ahead.
fn ahead(seconds: &str) -> [&str; 6] {
    [
        "unshare",
        "--time",
        "--monotonic",
        seconds,
        "--boottime",
        seconds,
    ]
}

/// A coordinator whose clocks are 30 days ahead, a worker 1 day ahead and a worker on the
/// machine's clocks run a session; mid-session the coordinator is killed and one on the
/// machine's clocks takes the session over once its lease lapses. The session completes with
/// each instance once and one result.
#[test]
fn processes_whose_clocks_disagree_lose_nothing() {
    let published = Published::listen();
    let mut cluster = Cluster::start_with("clocks", &[]);
    let (month, day) = ((30 * DAY).to_string(), DAY.to_string());
    let first = cluster.spawn_via(&ahead(&month), "coordinator", &["--chunk", "20"], &[]);
    cluster.spawn_via(&ahead(&day), "worker", &[], &[]);
    cluster.spawn("worker");
    let id = unique("clocks");
    let (instances, ms) = (400, 100);
    cluster.submit(&naps(&id, instances, ms));
    wait_for_outcomes(&published.redis, &id, 40);
    let case = Case::inject(
        "F16 clocks that disagree",
        "monotonic clocks 30 days (coordinator) and 1 day (a worker) ahead of the others' (time namespaces); kill -9 of that coordinator mid-session, another on the machine's clock takes over",
    );
    let second = cluster.spawn_with("coordinator", &["--chunk", "20"]);
    signal(cluster.processes[first].id(), "KILL");
    check_one_right_result(&published, &id, instances, ms);
    case.report(&published, &[&id], instances);
    for (n, process) in cluster.processes.iter_mut().enumerate() {
        if n != first {
            assert!(process.try_wait().unwrap().is_none(), "process {n} exited");
        }
    }
    let log = std::fs::read_to_string(cluster.dir.join(format!("coordinator-{second}.log")));
    assert!(
        log.unwrap_or_default().contains("resuming a session"),
        "the second coordinator resumed the session"
    );
}
