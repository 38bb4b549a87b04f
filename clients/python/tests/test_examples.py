"""`examples/python/task_pipeline.py` (seed 004's five examples) run whole against a real
deployment, as a user would run it."""

import subprocess
import sys

from conftest import ROOT


def test_the_task_pipeline_examples_run_against_a_deployment(deployment):
    script = ROOT / "examples" / "python" / "task_pipeline.py"
    ran = subprocess.run([sys.executable, str(script)], env=deployment.env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[-1] == "6 of 6 examples worked", ran.stdout
    assert sum(line.startswith("  ok: ") for line in lines) == 6, ran.stdout
    assert any("cancelled" in line for line in lines if line.startswith("  ok: session")), ran.stdout
    assert any(line.strip().startswith("running:") for line in lines), ran.stdout
