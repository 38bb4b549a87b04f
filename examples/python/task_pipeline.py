#!/usr/bin/env python3
"""Seed 004's five examples (task_pipeline.py), for agency: one task, workflows in parallel and
in sequence, monitoring with a callback, cancelling, and checking the fleet's health.

Run it against a running deployment (a coordinator and workers, `docs/distributed.md`):

    pip install ./clients/python
    python3 examples/python/task_pipeline.py [--kafka HOST:PORT] [--redis URL] [--namespace NS]

The servers default to AGENCY_KAFKA, AGENCY_REDIS and AGENCY_NAMESPACE, as for the `agency`
command. Each example says what it did; the exit code is 0 when all five worked.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from agency_client import Agency, SessionStatus, check


def one_task(agency: Agency) -> str:
    """1. A task submitted and waited for: any program through the `command` executor."""
    sid = agency.submit_task("command", {"argv": ["python3", "-c", "import json; print(json.dumps({'mesh_size': 64, 'ok': True}))"]}, timeout_ms=60_000)
    result = check(agency.wait(sid, timeout=120))
    return f"session {sid} completed: {result['context']['task']}"


def parallel_workflow(agency: Agency) -> str:
    """2. Two tools side by side: a workflow of tasks run in parallel."""
    sid = agency.submit_workflow([
        {"executor": "echo", "input": {"tool": "fenicsx", "mesh_size": 32}},
        {"executor": "echo", "input": {"tool": "lammps", "steps": 1000}},
    ])
    result = check(agency.wait(sid, timeout=120))
    tools = sorted(step["tool"] for step in result["context"].values())
    return f"session {sid} ran {', '.join(tools)} in parallel"


def sequential_workflow(agency: Agency) -> str:
    """3. Each step after the one before, reading its result from the context."""
    sid = agency.submit_workflow([
        {"executor": "echo", "input": {"mesh": "generated", "cells": 4096}},
        {"executor": "echo", "input": {"solved_on": "{{context.step1.mesh}}", "cells": "{{context.step1.cells}}"}},
    ], sequential=True)
    result = check(agency.wait(sid, timeout=120))
    return f"session {sid}: step 2 read {result['context']['step2']} from step 1"


def monitor_with_callback(agency: Agency) -> str:
    """4. A fan-out followed to its result, a callback hearing each change."""
    sid = agency.submit_task("sleep", {"ms": 100, "ns": list(range(60)), "expansion_config": {"type": "array", "array_mapping": {"n": "ns"}}}, concurrency=4)
    seen = []

    def progress(update: dict) -> None:
        seen.append(update["status"])
        if "instances" in update:  # the live state; the last update is the result
            counts = update["instances"]
            print(f"    {update['status']}: {counts['succeeded']}/{counts['total']} instances", flush=True)
        else:
            print(f"    {update['status']}", flush=True)

    result = check(agency.monitor(sid, callback=progress, interval=0.2))
    return f"session {sid} completed after {len(seen)} updates ({result['groups']['task']['tasks']['task']['succeeded']} instances)"


def cancel(agency: Agency) -> str:
    """5. A long task cancelled while it runs: its result says `cancelled`."""
    sid = agency.submit_task("sleep", {"ms": 60_000})
    deadline = time.monotonic() + 60
    while agency.status(sid).get("status") == SessionStatus.PENDING:
        if time.monotonic() > deadline:
            raise RuntimeError(f"session {sid} was never taken by a coordinator")
        time.sleep(0.1)
    sent = agency.cancel(sid)
    result = agency.wait(sid, timeout=120)
    if result["status"] != SessionStatus.CANCELLED:
        raise RuntimeError(f"session {sid} ended {result['status']}, not cancelled")
    return f"session {sid} cancelled ({sent['status']}): {result['errors'][0]}"


def health(agency: Agency) -> str:
    """And the fleet's health, with the executors its workers run."""
    checked = agency.health()
    if not checked["healthy"]:
        raise RuntimeError("; ".join(checked["problems"]))
    names = [executor["name"] for executor in agency.executors()]
    return f"{len(checked['coordinators'])} coordinator(s), {len(checked['workers'])} worker(s), executors: {', '.join(names)}"


EXAMPLES = [one_task, parallel_workflow, sequential_workflow, monitor_with_callback, cancel, health]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kafka", default=os.environ.get("AGENCY_KAFKA", "127.0.0.1:9092"))
    parser.add_argument("--redis", default=os.environ.get("AGENCY_REDIS", "redis://127.0.0.1:6379"))
    parser.add_argument("--namespace", default=os.environ.get("AGENCY_NAMESPACE", ""))
    args = parser.parse_args()
    failed = 0
    with Agency(kafka=args.kafka, redis=args.redis, namespace=args.namespace) as agency:
        for example in EXAMPLES:
            title = example.__doc__.splitlines()[0]
            print(title, flush=True)
            try:
                print(f"  ok: {example(agency)}", flush=True)
            except Exception as error:  # an example's failure is said, and the others still run
                failed += 1
                print(f"  FAILED: {type(error).__name__}: {error}", flush=True)
    print(f"{len(EXAMPLES) - failed} of {len(EXAMPLES)} examples worked")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
