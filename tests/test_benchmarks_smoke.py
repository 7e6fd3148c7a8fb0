"""Smoke test of the benchmark scripts (the benchmarks themselves are not part of the test suite): each runs at
its ``--tiny`` size on the CPU, ends with its one-line summary and writes the JSON keys that outside checks read,
as finite positive numbers."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
KEYS = {
    "train_step.py": ("waste_ratio", "kd_over_student"),
    "inference.py": ("speedup_vs_teachers_min", "speedup_vs_nnunet_default", "memory_ratio_vs_teachers_min"),
}
pytestmark = pytest.mark.slow  # each benchmark script converts, plans and trains on a tiny phantom


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One scratch nnU-Net tree for both scripts, so the tiny phantom is converted once."""
    return tmp_path_factory.mktemp("benchmarks")


@pytest.mark.parametrize("script", sorted(KEYS))
def test_runs_tiny_and_writes_finite_ratios(script, workdir, tmp_path):
    out = tmp_path / "result.json"
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), "--tiny", "--device", "cpu", "--json", str(out),
                             "--workdir", str(workdir)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.stdout.strip().splitlines()[-1].startswith(f"SUMMARY {script[:-3]}"), result.stdout[-2000:]
    data = json.loads(out.read_text())
    for key in KEYS[script]:
        value = data[key]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, value)
