"""Smoke test of the benchmark scripts (the benchmarks themselves are not part of the test suite): each runs at
its ``--tiny`` size on the CPU, ends with its one-line summary and writes the JSON keys that outside checks read,
as finite positive numbers (the distillation budget's Dice figures, whose tiny models may score 0, as fractions
in their place)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.image import imread

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
KEYS = {
    "train_step.py": ("waste_ratio", "kd_over_student"),
    "inference.py": ("speedup_vs_teachers_min", "speedup_vs_nnunet_default", "memory_ratio_vs_teachers_min"),
    "real_ct_prediction.py": ("teachformer_s_per_scan", "nnunet_s_per_scan", "speedup_vs_nnunetv2_predict"),
}
pytestmark = pytest.mark.slow  # each benchmark script converts, plans and trains on a tiny phantom


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One scratch nnU-Net tree for the scripts, so the tiny phantom is converted once."""
    return tmp_path_factory.mktemp("benchmarks")


def run_tiny(script, workdir, out, *options):
    """The script's --tiny run; its JSON."""
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), "--tiny", "--device", "cpu", "--json", str(out),
                             "--workdir", str(workdir), *options], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.stdout.strip().splitlines()[-1].startswith(f"SUMMARY {script[:-3]}"), result.stdout[-2000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("script", sorted(KEYS))
def test_runs_tiny_and_writes_finite_ratios(script, workdir, tmp_path):
    data = run_tiny(script, workdir, tmp_path / "result.json")
    for key in KEYS[script]:
        value = data[key]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, value)


def test_distillation_budget_scores_every_model_budget_and_seed(workdir, tmp_path):
    """Teacher, baseline and distilled student trained through nnUNetv2_train at the tiny budget under two seeds,
    each scored on the held-out cases; the distilled student's difference pairs every (seed, case)."""
    data = run_tiny("distillation_budget.py", workdir, tmp_path / "budget.json", "--variants", "TeachFormerTrainer_noAFS")
    teacher = data["teachers"][data["best_teacher"]]
    assert 0 <= teacher["dice"] <= 1 and len(teacher["case_dice"]) == data["settings"]["held_out_cases"]
    fraction = data["fraction_of_best_teacher_at_largest_budget"]
    assert isinstance(fraction, float) and (fraction >= 0 or math.isnan(fraction))  # NaN: the tiny teacher scored 0
    seeds = [str(s) for s in data["settings"]["seeds"]]
    [budget] = data["budgets"]
    models = budget["models"]
    assert {m["role"] for m in models.values()} == {"baseline", "distilled", "variant"} and len(seeds) == 2
    for model in models.values():
        assert sorted(model["dice_per_seed"]) == seeds and all(0 <= v <= 1 for v in model["dice_per_seed"].values())
        assert len(set(model["trainers"].values())) == 2  # one trainer variant per seed
    difference = models["TeachFormerTrainer"]["minus_baseline"]
    assert difference["pairs"] == 2 * data["settings"]["held_out_cases"]
    assert difference["ci_low"] <= difference["mean"] <= difference["ci_high"]
    ablation = models["TeachFormerTrainer_noAFS"]["minus_distilled"]  # an ablation pairs with the paper's student
    assert ablation["pairs"] == 2 * data["settings"]["held_out_cases"]
    assert imread(data["plot"]).ndim == 3


def test_distillation_budget_refuses_a_variant_it_cannot_train(tmp_path):
    result = subprocess.run([sys.executable, str(BENCHMARKS / "distillation_budget.py"), "--tiny", "--device", "cpu",
                             "--workdir", str(tmp_path / "work"), "--variants", "TeachFormerTrainer_SwinUNETRTeacher"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "learns from SwinUNETRTrainer, none of which this run trains (--teachers)" in result.stderr
    assert not any((tmp_path / "work" / "nnUNet_raw").iterdir())  # refused before any phantom was written
    result = subprocess.run([sys.executable, str(BENCHMARKS / "distillation_budget.py"), "--tiny", "--device", "cpu",
                             "--workdir", str(tmp_path / "work"), "--variants", "UNetLightR4Trainer:huge"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "no width preset 'huge'; presets: tiny, paper" in result.stderr
