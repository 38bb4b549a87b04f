#!/usr/bin/env python3
"""Turns the fault suite's measurements (target/fault-matrix.jsonl, one line per passing case,
written by tests/faults/) into the Markdown table of docs/reliability.md.

    python3 scripts/fault-table.py [target/fault-matrix.jsonl]
"""
import json
import re
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "target/fault-matrix.jsonl"
try:
    with open(path, encoding="utf-8") as lines:
        cases = [json.loads(line) for line in lines if line.strip()]
except FileNotFoundError:
    sys.exit(f"{path}: no measurements; run `cargo test -p integration-tests --test faults` first")
except json.JSONDecodeError as error:
    sys.exit(f"{path}: a line is not JSON ({error})")

print("| case | fault, how injected | sessions | instances | lost | recorded twice | results published | last result after the fault |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
def order(case):
    """By the matrix's number (F2 before F13), then by name."""
    number = re.match(r"F(\d+)", case["case"])
    return (int(number.group(1)) if number else 1_000, case["case"])


for case in sorted(cases, key=order):
    recovered = case["recovered_s"]
    after = "none: it came before the fault" if recovered is None else f"{recovered:.1f} s"
    print(
        f"| {case['case']} | {case['fault']} | {case['sessions']} | {case['instances']:,} "
        f"| {case['lost']} | {case['recorded_twice']} | {case['results_published']} "
        f"| {after} |"
    )
