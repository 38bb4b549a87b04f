#!/usr/bin/env python3
"""The plots of docs/benchmarks.md, from measurements this script takes.

    scripts/plot-benchmarks.py measure   # runs the benchmarks, writes docs/plots/data.json
    scripts/plot-benchmarks.py draw      # draws docs/plots/*.svg from docs/plots/data.json

`measure` needs a release build (`cargo build --release -p agency`) and the servers
(`scripts/services.sh up`); it runs `agency bench embedded --json` (RUNS times), `agency bench
distributed` (a coordinator and two workers over Apache Kafka and Redis) and the Celery peer
(`../shared/peers/celery/bench.sh N`, one chord of N no-op tasks) at each of its sizes, one
after another on an otherwise idle machine. `draw` needs matplotlib: it makes a virtual
environment with it in ~/.cache/agency-plots-venv when the running Python has none.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "docs" / "plots" / "data.json"
AGENCY = ROOT / "target" / "release" / "agency"
CELERY = ROOT.parent / "shared" / "peers" / "celery" / "bench.sh"
EMBEDDED_SIZES = [10_000, 100_000, 1_000_000]
DISTRIBUTED_SIZES = [10_000, 100_000, 1_000_000]
CELERY_SIZES = [1_000, 3_000, 10_000]
RUNS = 3


def log(message):
    print(f"plot-benchmarks: {message}", file=sys.stderr, flush=True)


def measure():
    if not AGENCY.exists():
        sys.exit(f"plot-benchmarks: {AGENCY} is missing: cargo build --release -p agency")
    data = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "embedded": [], "distributed": [], "celery": []}
    sizes = ",".join(str(n) for n in EMBEDDED_SIZES)
    for run in range(RUNS):
        log(f"embedded, run {run + 1} of {RUNS}")
        out = subprocess.run([AGENCY, "bench", "embedded", "--sizes", sizes, "--json"],
                             check=True, capture_output=True, text=True).stdout
        data["embedded"] += [json.loads(line) for line in out.splitlines() if line.strip()]
    for run in range(RUNS):
        log(f"distributed, run {run + 1} of {RUNS}")
        done = subprocess.run([AGENCY, "bench", "distributed", "--retries", "0", "--sizes",
                               ",".join(str(n) for n in DISTRIBUTED_SIZES)],
                              check=True, capture_output=True, text=True)
        summary = json.loads(done.stderr.strip().splitlines()[-1])
        data["distributed"].append(summary)
    for n in CELERY_SIZES:
        log(f"celery chord of {n}")
        out = subprocess.run(["bash", CELERY, str(n)], check=True, capture_output=True,
                             text=True).stdout
        # "celery chord n=N callback_seconds=S client_seconds=C tasks_per_s=R": the chord's
        # callback ran at S (the client's get() returns much later, docs/benchmarks.md).
        line = next(l for l in out.splitlines() if l.startswith("celery chord"))
        fields = dict(part.split("=") for part in line.split()[2:])
        data["celery"].append({"instances": int(fields["n"]), "seconds": float(fields["callback_seconds"]),
                               "instances_per_s": float(fields["tasks_per_s"])})
    DATA.parent.mkdir(parents=True, exist_ok=True)
    DATA.write_text(json.dumps(data, indent=1) + "\n")
    log(f"wrote {DATA.relative_to(ROOT)}")


def with_matplotlib():
    """Runs this script again under a Python that has matplotlib, unless this one has."""
    try:
        import matplotlib  # noqa: F401
        return
    except ImportError:
        pass
    venv = Path.home() / ".cache" / "agency-plots-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        log(f"installing matplotlib into {venv}")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "matplotlib"], check=True)
    os.execv(python, [python, __file__, *sys.argv[1:]])


def spread(rows, key="instances_per_s"):
    """Each size's median and range over the runs."""
    by = {}
    for row in rows:
        by.setdefault(row["instances"], []).append(row[key])
    out = []
    for n in sorted(by):
        values = sorted(by[n])
        out.append((n, values[len(values) // 2], values[0], values[-1]))
    return out


def draw():
    with_matplotlib()
    import matplotlib
    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    data = json.loads(DATA.read_text())
    plots = DATA.parent
    plt.rcParams.update({"font.size": 10, "svg.fonttype": "none", "svg.hashsalt": "agency"})

    fig, ax = plt.subplots(figsize=(7, 4.2))
    series = [
        ("agency embedded (one process)", spread(data["embedded"]), "#2e7d32", "o"),
        ("agency distributed (Kafka + Redis, 2 workers)",
         spread([row for run in data["distributed"] for row in run["fan_out"]]), "#1565c0", "s"),
        ("Celery chord (Redis, 2 processes)", spread(data["celery"]), "#c62828", "^"),
    ]
    for label, points, color, marker in series:
        ns = [p[0] for p in points]
        ax.plot(ns, [p[1] for p in points], marker=marker, color=color, label=label)
        ax.fill_between(ns, [p[2] for p in points], [p[3] for p in points], color=color,
                        alpha=0.15, linewidth=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("no-op instances in one fan-out (N)")
    ax.set_ylabel("instances per second, submit to result")
    ax.set_title(f"Fan-out throughput (median of runs, band: min to max), {data['measured_at'][:10]}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="center right", fontsize=9)
    fig.tight_layout()
    fig.savefig(plots / "throughput.svg", metadata={"Date": None})

    fig, ax = plt.subplots(figsize=(8, 3.6))
    runs = data["distributed"]
    rows = [("one-task session over Kafka + Redis", "latency_ms"),
            ("the same, in-memory broker + Redis", "latency_without_kafka_ms"),
            ("one Kafka hop", "kafka_hop_ms")]
    width = 0.8 / len(runs)
    for i, run in enumerate(runs):
        ys = [y + (i - (len(runs) - 1) / 2) * width for y in range(len(rows))]
        ax.barh(ys, [run[key]["p99"] for _, key in rows], height=width * 0.9, color="#90caf9",
                label="p99" if i == 0 else None)
        ax.barh(ys, [run[key]["p50"] for _, key in rows], height=width * 0.9, color="#1565c0",
                label="p50" if i == 0 else None)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds (one bar per run)")
    ax.set_title("Latency, distributed: p50 and p99, 200 sessions per run", loc="left")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(plots / "latency.svg", metadata={"Date": None})
    log(f"drew {plots.relative_to(ROOT)}/throughput.svg and latency.svg")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "draw"
    if what == "measure":
        measure()
    elif what == "draw":
        draw()
    else:
        sys.exit(__doc__)
