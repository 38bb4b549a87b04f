"""The client's whole API against a real deployment: a session with a fan-out, a retry and a
failure; waiting, status, monitor, sessions; one task and workflows; attach and refuse;
cancel; health and executors; timeouts."""

import json
import time
import uuid

import pytest

from agency_client import AgencyError, InvalidSession, NotFound, SessionFailed, SessionRunning, SessionStatus, TaskStatus, Timeout, check
from conftest import check_results_by_reference


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def fan_out_retry_and_failure():
    return {
        "groups": [
            {
                "id": "work",
                "tasks": [
                    {"id": "greet", "executor": "echo", "input": {"hi": "{{name}}", "names": ["ann", "bob", "cy"],
                        "expansion_config": {"type": "array", "array_mapping": {"name": "names"}}}},
                    {"id": "flaky", "executor": "fail", "input": {"times": 1}, "retry": {"max_retries": 2, "retry_delays": [50]}},
                    {"id": "broken", "executor": "fail", "input": {"times": 99}, "continue_on_error": True},
                ],
            }
        ]
    }


def test_a_session_with_a_fan_out_a_retry_and_a_failure(deployment):
    agency = deployment.client
    sid = agency.submit(fan_out_retry_and_failure(), session_id=unique("py"))
    result = agency.wait(sid, timeout=60)
    tasks = result["groups"]["work"]["tasks"]
    assert [greeting["hi"] for greeting in result["context"]["greet"]] == ["ann", "bob", "cy"]
    assert tasks["greet"]["succeeded"] == 3
    assert tasks["flaky"]["status"] == "completed" and tasks["flaky"]["attempts"] == 2
    assert tasks["broken"]["failed"] == 1 and tasks["broken"]["failures"][0]["last_attempt_at"]
    assert result["status"] == "completed", result
    assert result["submitted_at"] <= result["started_at"] <= result["finished_at"]
    assert agency.status(sid) == result
    listed = {row["session_id"]: row for row in agency.sessions(limit=1000)}
    assert listed[sid]["status"] == "completed"
    assert check(result) is result


def test_a_failed_session_is_returned_and_check_raises(deployment):
    agency = deployment.client
    sid = agency.submit_task("fail", {"times": 9}, retry={"max_retries": 1, "retry_delays": [10]})
    result = agency.wait(sid, timeout=60)
    assert result["status"] == "failed"
    assert result["groups"]["task"]["tasks"]["task"]["attempts"] == 2
    with pytest.raises(SessionFailed) as raised:
        check(result)
    assert raised.value.result is result


def test_one_task_and_workflows(deployment):
    agency = deployment.client
    sid = agency.submit_task("echo", {"hello": "world"})
    assert check(agency.wait(sid, timeout=60))["context"]["task"] == {"hello": "world"}
    parallel = agency.submit_workflow([{"executor": "echo", "input": 1}, {"executor": "echo", "input": 2}])
    assert agency.wait(parallel, timeout=60)["context"] == {"step1": 1, "step2": 2}
    sequential = agency.submit_workflow(
        [{"executor": "echo", "input": {"n": 1}}, {"executor": "echo", "input": {"before": "{{context.step1.n}}"}}],
        sequential=True,
    )
    assert check(agency.wait(sequential, timeout=60))["context"]["step2"] == {"before": 1}


def succeeded_at_least(agency, sid, count):
    """Waits (30 s at most) until the session's live state counts `count` successes."""
    deadline = time.monotonic() + 30
    while agency.status(sid).get("instances", {}).get("succeeded", 0) < count:
        assert time.monotonic() < deadline, agency.status(sid)
        time.sleep(0.05)


def naps(count, ms=200):
    return {"groups": [{"id": "g", "tasks": [{"id": "naps", "executor": "sleep", "concurrency": 2,
        "input": {"ms": ms, "ns": list(range(count)), "expansion_config": {"type": "array", "array_mapping": {"n": "ns"}}}}]}]}


def test_monitor_follows_the_live_state_to_the_result(deployment):
    agency = deployment.client
    sid = agency.submit(naps(60), session_id=unique("watched"))
    seen = []
    result = agency.monitor(sid, callback=seen.append)
    assert result["status"] == "completed" and seen[-1] is result
    running = [update for update in seen if update["status"] == "running"]
    assert running, seen
    counts = [update["instances"]["succeeded"] for update in running]
    assert counts == sorted(counts) and counts[-1] > counts[0], counts
    assert running[-1]["instances"]["total"] == 60
    # Iterating: the last item is the result.
    assert list(agency.monitor(sid))[-1] == result


def test_the_same_document_attaches_and_another_is_refused(deployment):
    agency = deployment.client
    sid = unique("again")
    agency.submit(naps(16), session_id=sid)
    deadline = time.monotonic() + 30
    while agency.status(sid)["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert agency.submit(naps(16), session_id=sid) == sid
    with pytest.raises(SessionRunning, match="with another document"):
        agency.submit(naps(2), session_id=sid)
    result = agency.wait(sid, timeout=60)
    assert result["groups"]["g"]["tasks"]["naps"]["attempts"] == 16, "ran once"


def test_cancel_ends_a_session_cancelled_with_what_completed(deployment):
    agency = deployment.client
    sid = agency.submit(naps(400, ms=100), session_id=unique("cancelled"))
    succeeded_at_least(agency, sid, 4)
    assert agency.cancel(sid)["status"] == "sent"
    result = agency.wait(sid, timeout=60)
    assert result["status"] == "cancelled"
    succeeded = result["groups"]["g"]["tasks"]["naps"]["succeeded"]
    assert 4 <= succeeded < 400
    assert agency.cancel(sid) == {"status": "finished", "result": result}
    with pytest.raises(NotFound):
        agency.cancel(unique("nobody"))


def test_pause_holds_a_session_and_resume_completes_it(deployment):
    agency = deployment.client
    sid = agency.submit(naps(200, ms=50), session_id=unique("paused"))
    succeeded_at_least(agency, sid, 4)
    assert agency.pause(sid)["status"] == "sent"
    deadline = time.monotonic() + 30
    while agency.status(sid).get("status") != "paused":
        assert time.monotonic() < deadline, agency.status(sid)
        time.sleep(0.05)
    assert agency.resume(sid)["status"] == "sent"
    result = agency.wait(sid, timeout=60)
    naps_done = result["groups"]["g"]["tasks"]["naps"]
    assert result["status"] == "completed", result
    assert naps_done["succeeded"] == 200 and naps_done["attempts"] == 200
    assert agency.pause(sid) == {"status": "finished", "result": result}
    with pytest.raises(NotFound):
        agency.pause(unique("nobody"))


def test_monitor_goes_on_through_a_pause_to_the_result(deployment):
    # A paused run is under way: monitor shows it paused and follows it on to its result (here
    # a cancel's, once resumed: the session is long enough that the pause surely comes first)
    # (issue 30, finding 1).
    agency = deployment.client
    sid = agency.submit(naps(2000, ms=100), session_id=unique("monitored"))
    succeeded_at_least(agency, sid, 4)
    assert agency.pause(sid)["status"] == "sent"
    updates = agency.monitor(sid, interval=0.05)
    for update in updates:
        if update["status"] == SessionStatus.PAUSED:
            break
        assert update["status"] == SessionStatus.RUNNING, update
    else:
        raise AssertionError("monitor ended without showing the pause")
    assert agency.resume(sid)["status"] == "sent"
    assert agency.cancel(sid)["status"] == "sent"
    rest = list(updates)
    assert rest, "monitor ended at the pause"
    assert rest[-1]["status"] == SessionStatus.CANCELLED, rest[-1]
    assert rest[-1] == agency.wait(sid, timeout=60)


def test_statuses_are_constants_equal_to_their_strings():
    assert SessionStatus.COMPLETED == "completed" and str(SessionStatus.PARTIAL) == "partial"
    assert [status.value for status in SessionStatus] == [
        "pending", "running", "paused", "completed", "partial", "failed", "cancelled", "unknown", "unreadable"]
    assert [status.value for status in TaskStatus] == ["pending", "in_progress", "completed", "failed", "cancelled"]
    assert TaskStatus("in_progress") is TaskStatus.IN_PROGRESS


def test_a_pending_session_cancelled_never_runs(tmp_path):
    # No coordinator yet: the session is pending; cancelled, it never runs, and its result says
    # so once a coordinator takes it (issue 30, finding 2).
    from conftest import Deployment

    deployed = Deployment(tmp_path)
    try:
        agency = deployed.client
        ran = tmp_path / "ran"
        sid = agency.submit_task("command", {"argv": ["sh", "-c", f"echo x >> {ran}; echo 1"]}, session_id=unique("pending"))
        assert agency.status(sid)["status"] == SessionStatus.PENDING
        assert agency.cancel(sid) == {"status": "withdrawn"}
        deployed.spawn("coordinator")
        deployed.spawn("worker")
        result = agency.wait(sid, timeout=60)
        assert result["status"] == SessionStatus.CANCELLED, result
        assert not ran.exists()
        again = agency.submit_task("command", {"argv": ["sh", "-c", f"echo x >> {ran}; echo 1"]}, session_id=sid)
        assert check(agency.wait(again, timeout=60))["status"] == SessionStatus.COMPLETED
        assert ran.read_text() == "x\n"
    finally:
        deployed.stop()


def test_an_invalid_session_is_refused_before_it_is_produced_as_the_cli_refuses_it(deployment, tmp_path):
    # The engine's own check, compiled into the client: every problem at once, the same words
    # as `agency submit`, and nothing produced (issue 30, finding 4).
    agency = deployment.client
    sid = unique("invalid")
    session = {"session_id": sid, "priority": 5, "groups": [
        {"id": "g", "tasks": [{"id": "t", "executor": "simulate", "depends_on": ["nope"]}]}]}
    with pytest.raises(InvalidSession) as refused:
        agency.submit(session)
    with pytest.raises(NotFound):
        agency.status(sid)
    file = tmp_path / "invalid.json"
    file.write_text(json.dumps(session))
    cli = deployment.agency("submit", str(file))
    assert cli.returncode == 1
    said = cli.stderr.decode().strip()
    assert said == f"error: {file}: {refused.value}", (said, str(refused.value))
    assert "unknown executor `simulate`" in str(refused.value) and "unknown task `nope`" in str(refused.value)
    with pytest.raises(InvalidSession, match="unknown executor `nowhere`"):
        agency.submit_task("nowhere", {})
    with pytest.raises(InvalidSession, match="depends_on"):
        agency.submit_workflow([{"executor": "echo", "depends_on": ["ghost"]}])
    # The executors checked are the workers' own.
    listed = json.loads(deployment.agency("executors", "--embedded", "--json").stdout)
    from agency_client.client import BUILTIN_EXECUTORS
    assert sorted(e["name"] for e in listed) == sorted(BUILTIN_EXECUTORS)


def test_rerun_executes_only_what_failed(deployment, tmp_path):
    agency = deployment.client
    flag = tmp_path / "flag"
    script = f"if [ $(($0 % 3)) = 0 ] && [ ! -f {flag} ]; then exit 1; fi; echo $0"
    session = {"groups": [{"id": "g", "failure_policy": "all_settled", "tasks": [{"id": "items", "executor": "command",
        "input": {"argv": ["sh", "-c", script, "{{n}}"],
                  "expansion_config": {"type": "range", "range": "1-12", "variable": "n"}}}]}]}
    sid = agency.submit(session, session_id=unique("rerun"))
    first = agency.wait(sid, timeout=60)
    assert first["status"] == "partial" and first["groups"]["g"]["tasks"]["items"]["failed"] == 4
    flag.write_text("")
    assert agency.rerun(sid) == sid
    result = agency.wait(sid, timeout=60)
    assert result["status"] == "completed", result
    assert result["reused"] == 8
    assert result["context"]["items"] == list(range(1, 13))
    with pytest.raises(AgencyError, match="nothing to rerun"):
        agency.rerun(sid)
    with pytest.raises(NotFound):
        agency.rerun(unique("nobody"))


def test_wait_times_out_and_the_session_goes_on(deployment):
    agency = deployment.client
    sid = agency.submit(naps(8, ms=300), session_id=unique("slow"))
    started = time.monotonic()
    with pytest.raises(Timeout):
        agency.wait(sid, timeout=0.5)
    assert time.monotonic() - started < 5
    assert agency.wait(sid, timeout=60)["status"] == "completed"


def test_health_and_executors(deployment):
    agency = deployment.client
    health = agency.health()
    assert health["healthy"], health
    assert len(health["coordinators"]) == 1 and len(health["workers"]) == 2
    names = [executor["name"] for executor in agency.executors()]
    assert {"echo", "sleep", "fail", "command"} <= set(names) and names == sorted(names)
    # The command line agrees.
    shown = deployment.agency("health", "--json")
    assert shown.returncode == 0, shown.stderr
    # A worker killed: stale within 10 s (heartbeats every 2 s), and named.
    killed = deployment.processes[1]
    killed.kill()
    killed.wait()
    deadline = time.monotonic() + 30
    while agency.health()["healthy"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    health = agency.health()
    assert [member["pid"] for member in health["stale"]] == [killed.pid], health
    assert any(str(killed.pid) in problem for problem in health["problems"]), health


def test_results_kept_by_reference_are_read_by_page(deployment):
    check_results_by_reference(deployment)
