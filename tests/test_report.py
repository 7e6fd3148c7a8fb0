"""``teachformer report`` on a real results tree: a teacher, a distilled student and nnU-Net's U-Net trained on
fold 0 of a phantom dataset of its own (so other tests' models do not appear in it), checked against nnU-Net's
summary files and scipy; plus fast unit checks of the statistics, HD95, complexity and aggregation rules.

The dataset is a 32 mm phantom (32^3 voxels): nnU-Net plans a 32^3 patch, which every trainer adapts to 64x32x32
(``trainers.patch_adaptation``: an all-32 patch grows one axis), a quarter of the voxels of the session
phantom's 64^3, so the three trainings and the report's timing cost a quarter of the compute."""
import csv
import json
import math
import shutil

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from scipy import stats
from torch import nn

from conftest import CONFIG, console_script, planning_env, run_cli
from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.evaluation.complexity import measure_complexity, network_builder
from nnunet_teachformer.evaluation.metrics import evaluate_predictions, hd95
from nnunet_teachformer.evaluation.report import build_report
from nnunet_teachformer.evaluation.report_tables import ModelRow
from nnunet_teachformer.evaluation.results import (ROLE_DISTILLED, FoldResult, ModelResults, find_trainer_class,
                                                    missing_models, teachers_used)
from nnunet_teachformer.evaluation.statistics import paired_test

REPORT_DATASET_ID = 991
REPORT_DATASET = f"Dataset{REPORT_DATASET_ID}_TeachFormerPhantom"
REPORT_SIZE = 32  # voxels per axis of the phantom (the session's is 48)
PLANS = "nnUNetPlans"
TEACHER = "UNETRTrainer_tiny"
DISTILLED = "TeachFormerTrainer_UNETRTeacher_tiny"  # distils the UNETR teacher of the same fold
NNUNET = "UNetTrainer_tiny"  # nnU-Net's own U-Net (tiny widths): the row nnU-Net users compare with
LABELS = {1: "GTVp", 2: "GTVn"}


@pytest.fixture(scope="module")
def report_tree(nnunet_dirs):
    """Dataset 991 (15 cases of 32^3 voxels: 3 validation cases per fold) with the teacher, the distilled student
    and nnU-Net's U-Net on fold 0."""
    run_cli([console_script("teachformer"), "convert", "synthetic", "--dataset-id", REPORT_DATASET_ID, "--cases", 15,
             "--size", REPORT_SIZE])
    run_cli([console_script("nnUNetv2_plan_and_preprocess"), "-d", REPORT_DATASET_ID, "-c", CONFIG, "-np", 1],
            env=planning_env())
    for trainer in (TEACHER, DISTILLED, NNUNET):
        run_cli([console_script("nnUNetv2_train"), REPORT_DATASET_ID, CONFIG, 0, "-tr", trainer, "-device", "cpu"])
    results = nnunet_dirs["nnUNet_results"] / REPORT_DATASET
    return {name: results / f"{name}__{PLANS}__{CONFIG}" for name in (TEACHER, DISTILLED, NNUNET)}


def _summary(folder, fold=0):
    return json.loads((folder / f"fold_{fold}" / "validation" / "summary.json").read_text())


def _case_scores(summary):
    """Per case: mean Dice over the foreground labels, a NaN label (absent in both: correct) counted as 1."""
    return {entry["prediction_file"].split("/")[-1][:-len(".nii.gz")]:
            float(np.mean(np.nan_to_num([v["Dice"] for v in entry["metrics"].values()], nan=1.0)))
            for entry in summary["metric_per_case"]}


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def report(report_tree, tmp_path_factory):
    """The CLI run on fold 0, after removing the teacher's summary.json (the report must re-create it); the
    distilled student is not one of the default references, so it is declared."""
    summary_file = report_tree[TEACHER] / "fold_0" / "validation" / "summary.json"
    original = json.loads(summary_file.read_text())
    summary_file.unlink()
    out = tmp_path_factory.mktemp("report")
    result = run_cli([console_script("teachformer"), "report", "-d", REPORT_DATASET_ID, "-f", 0, "-o", out,
                      "--device", "cpu", "--reference", DISTILLED])
    return {"out": out, "stdout": result.stdout, "original_teacher_summary": original}


def test_missing_summary_is_recomputed_by_nnunet(report, report_tree):
    recomputed = _summary(report_tree[TEACHER])
    original = report["original_teacher_summary"]
    assert recomputed["foreground_mean"]["Dice"] == pytest.approx(original["foreground_mean"]["Dice"])
    for label in LABELS:
        assert recomputed["mean"][str(label)]["Dice"] == pytest.approx(original["mean"][str(label)]["Dice"],
                                                                       nan_ok=True)


def test_table_matches_nnunet_summaries(report, report_tree):
    rows = {r["model"]: r for r in _csv(report["out"] / "models.csv")}
    assert set(rows) == {TEACHER, DISTILLED, NNUNET}  # one row per model
    assert rows[TEACHER]["role"] == "teacher" and rows[DISTILLED]["role"] == "student (distilled)"
    assert rows[NNUNET]["role"] == "nnU-Net baseline"
    for name, folder in report_tree.items():
        summary = _summary(folder)
        row = rows[name]
        assert row["complete"] == "True" and row["folds_missing"] == ""
        assert float(row["dice_fg"]) == pytest.approx(summary["foreground_mean"]["Dice"], abs=1e-12)
        assert float(row["dice_fg_fold0"]) == pytest.approx(summary["foreground_mean"]["Dice"], abs=1e-12)
        assert row["dice_fg_sd"] == ""  # one fold: no sd
        for label, label_name in LABELS.items():
            assert float(row[f"dice_{label_name}"]) == pytest.approx(summary["mean"][str(label)]["Dice"], abs=1e-12)
        # the Markdown table shows the same numbers in percent
        assert f"{100 * summary['foreground_mean']['Dice']:.2f}" in report["stdout"]
    record = json.loads((report_tree[DISTILLED] / "fold_0" / "teachers.json").read_text())
    mark = ("" if all(t.get("provenance") == "recorded" for t in record) else " †") + \
        (" ‡" if any(t.get("failed") for t in record) else "")  # no provenance record, a failed teacher: marked
    assert f"**{DISTILLED}{mark}**" in report["stdout"]
    assert f"Reference for the paired tests: {DISTILLED}, declared with --reference {DISTILLED}" in report["stdout"]


def test_parameters_gflops_and_timing(report, report_tree):
    rows = {r["model"]: r for r in _csv(report["out"] / "models.csv")}
    for name, folder in report_tree.items():
        build, input_shape = network_builder(folder, find_trainer_class(name), CONFIG)
        network = build()
        assert int(rows[name]["parameters"]) == sum(p.numel() for p in network.parameters())
        # nnU-Net's 32^3 patch, adapted alike by every trainer of the package (trainers.patch_adaptation: all
        # axes at 32, so the first grows to 64)
        assert float(rows[name]["gflops"]) > 0 and rows[name]["patch_size"] == "64x32x32"
        assert float(rows[name]["seconds_per_case"]) > 0
        assert rows[name]["timing_device"] == "cpu" and rows[name]["timing_fold"] == "0"
        assert rows[name]["tta_mirroring"] == "True"


def test_tiny_validation_skips_mirroring_and_the_checkpoint_keeps_it(report_tree):
    """The _tiny schedule validates without mirroring TTA (StudyProtocol.validation_mirroring); the checkpoint
    keeps nnU-Net's mirroring axes, so predictions and the report's timing still mirror."""
    for name, folder in report_tree.items():
        log = "".join(p.read_text() for p in (folder / "fold_0").glob("training_log_*.txt"))
        assert "Final validation without mirroring test-time augmentation" in log, name
        checkpoint = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        assert tuple(checkpoint["inference_allowed_mirroring_axes"]) == (0, 1, 2), name


def test_paired_tests_equal_scipy(report, report_tree):
    reference, other = _case_scores(_summary(report_tree[DISTILLED])), _case_scores(_summary(report_tree[TEACHER]))
    cases = sorted(reference)
    assert len(cases) == 3
    a, b = [reference[c] for c in cases], [other[c] for c in cases]
    rows = {r["other"]: r for r in _csv(report["out"] / "paired_tests.csv")}
    assert set(rows) == {TEACHER, NNUNET}
    row = rows[TEACHER]
    assert (row["reference"], int(row["n"])) == (DISTILLED, 3)
    expected_t = stats.ttest_rel(a, b)
    assert float(row["t_statistic"]) == pytest.approx(expected_t.statistic, rel=1e-9)
    assert float(row["t_p"]) == pytest.approx(expected_t.pvalue, rel=1e-9)
    assert float(row["wilcoxon_p"]) == pytest.approx(stats.wilcoxon(a, b).pvalue, rel=1e-9)
    # Holm over the comparisons that have a p-value (a degenerate one has none and is left out of the family)
    family = sorted((float(r["t_p"] or "nan"), float(r["t_p_holm"] or "nan")) for r in rows.values()
                    if not math.isnan(float(r["t_p"] or "nan")))
    corrected = 0.0
    for rank, (p, holm) in enumerate(family):
        corrected = max(corrected, min(1.0, (len(family) - rank) * p))
        assert holm == pytest.approx(corrected)
    diff = np.subtract(a, b)
    assert float(row["cohens_dz"]) == pytest.approx(diff.mean() / diff.std(ddof=1), rel=1e-9)
    assert float(row["mean_difference"]) == pytest.approx(diff.mean())
    assert float(row["ci_low"]) <= diff.mean() <= float(row["ci_high"])


def test_pngs_are_images(report):
    pngs = sorted(report["out"].glob("*.png"))
    names = {p.stem for p in pngs}
    assert {"dice_vs_parameters", "dice_vs_gflops", "case_dice_boxplot", "gallery"} <= names
    assert any(n.startswith("training_curves_") for n in names)
    for png in pngs:
        assert png.stat().st_size > 1000
        image = imread(png)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, png
        assert image.std() > 0, png  # not a blank canvas
        assert str(png) in report["stdout"]


def test_missing_folds_are_reported_not_averaged(report_tree, tmp_path):
    result = build_report(REPORT_DATASET_ID, [0, 1], output=tmp_path, reference=DISTILLED, timing=False,
                          gallery_cases=0)
    rows = {r["model"]: r for r in _csv(tmp_path / "models.csv")}
    for name, folder in report_tree.items():
        row = rows[name]
        assert row["complete"] == "False" and row["folds_available"] == "0" and row["folds_missing"] == "1"
        assert row["dice_fg"] == "" and row["dice_GTVp"] == "" and row["hd95_fg"] == ""  # nothing averaged
        assert float(row["dice_fg_fold0"]) == pytest.approx(_summary(folder)["foreground_mean"]["Dice"])
        assert any(m.startswith(f"{name} fold 1: not trained") for m in result.missing)
    assert "incomplete" in result.table_markdown
    assert "## Missing" in result.markdown and "Time per case: not measured" in result.markdown
    assert result.tests[0].n == 3  # the paired test still uses the cases both models have
    # the distilled student's baseline (same network and schedule, no distillation) was never trained
    assert f"model HDenseFormerLightTrainer_tiny__{PLANS}__{CONFIG} (student without distillation of {DISTILLED})" \
        ": no result folder" in result.missing


def test_a_folder_of_the_users_files_takes_the_report_only_with_overwrite(report_tree, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    options = dict(output=tmp_path, reference=DISTILLED, timing=False, gallery_cases=0)
    with pytest.raises(TeachFormerError, match="not an earlier teachformer report"):
        build_report(REPORT_DATASET_ID, [0], **options)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    build_report(REPORT_DATASET_ID, [0], overwrite=True, **options)  # the suggested fix
    build_report(REPORT_DATASET_ID, [0], **options)  # over its own earlier report: no flag needed
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "report.md").is_file()


def test_evaluate_predictions_matches_nnunet_and_monai(report, report_tree, nnunet_dirs, tmp_path):
    validation = report_tree[DISTILLED] / "fold_0" / "validation"
    predictions = tmp_path / "predictions"
    shutil.copytree(validation, predictions)
    (predictions / "summary.json").unlink()
    metrics = evaluate_predictions(predictions, nnunet_dirs["nnUNet_preprocessed"] / REPORT_DATASET /
                                   "gt_segmentations", report_tree[DISTILLED] / "dataset.json", num_processes=1)
    summary = _summary(report_tree[DISTILLED])
    assert metrics.summary["foreground_mean"]["Dice"] == pytest.approx(summary["foreground_mean"]["Dice"])
    per_case = {(r["model"], r["case"]): r for r in _csv(report["out"] / "per_case.csv")}
    for case, values in metrics.hd95.items():
        row = per_case[(DISTILLED, case)]
        for label, name in LABELS.items():
            expected = float(row[f"hd95_{name}"]) if row[f"hd95_{name}"] else math.nan
            assert values[label] == pytest.approx(expected, nan_ok=True)


# ---- fast unit checks ----------------------------------------------------------------------------

def test_paired_test_degenerate_inputs_give_nan_and_a_note():
    one = {"a": {1: 0.5}}
    assert math.isnan(paired_test("r", one, "o", one).t_p) and "fewer than 2" in paired_test("r", one, "o", one).note
    same = {"a": {1: 0.5}, "b": {1: 0.7}}
    result = paired_test("r", same, "o", same)
    assert math.isnan(result.t_p) and math.isnan(result.wilcoxon_p) and "identical" in result.note
    shifted = {"a": {1: 0.6}, "b": {1: 0.8}}
    result = paired_test("r", shifted, "o", same)
    assert math.isnan(result.t_p) and "constant difference" in result.note
    # a NaN label (correct empty prediction) scores 1, so no case leaves the pair
    reference = {"a": {1: 0.9, 2: math.nan}, "b": {1: 0.8, 2: 0.6}, "c": {1: math.nan, 2: math.nan}, "d": {1: 0.5}}
    other = {"a": {1: 0.7, 2: math.nan}, "b": {1: 0.2, 2: 0.4}, "c": {1: 0.1, 2: 0.1}, "d": {1: 0.45}}
    result = paired_test("r", reference, "o", other)
    assert (result.n, result.unpaired) == (4, 0)
    assert result.t_p == pytest.approx(stats.ttest_rel([0.95, 0.7, 1.0, 0.5], [0.85, 0.3, 0.1, 0.45]).pvalue)


def test_hd95_known_distance_and_empty_masks():
    reference = np.zeros((20, 20, 20), dtype=np.uint8)
    reference[5, 5, 5] = 1
    prediction = np.roll(reference, 3, axis=2)  # one voxel, 3 voxels away along the last axis
    values = hd95(prediction, reference, [1, 2], spacing=(1.0, 1.0, 2.0))
    assert values[1] == pytest.approx(6.0)  # 3 voxels of 2 mm
    assert math.isnan(values[2])  # label 2 empty in both
    assert math.isnan(hd95(np.zeros_like(reference), reference, [1], (1, 1, 1))[1])


class _ItemInForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(2, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x) * (x.abs().max().item() > -1)  # .item() has no meta kernel


def test_complexity_counts_on_meta_and_falls_back_to_cpu():
    conv_flops = 2 * 4 * 8 ** 3 * 2 * 27  # 2 FLOPs per multiply-add, per output voxel and input tap
    plain = measure_complexity(lambda: nn.Conv3d(2, 4, 3, padding=1), (1, 2, 8, 8, 8))
    assert plain.flop_device == "meta" and plain.gflops * 1e9 == pytest.approx(conv_flops)
    assert plain.parameters == 4 * 2 * 27 + 4
    fallback = measure_complexity(_ItemInForward, (1, 2, 8, 8, 8))
    assert fallback.flop_device == "cpu" and fallback.gflops * 1e9 == pytest.approx(conv_flops)


def test_fold_means_and_sd_only_for_complete_models(tmp_path):
    def fold(f, dice):
        summary = {"foreground_mean": {"Dice": float(np.mean(dice))},
                   "mean": {1: {"Dice": dice[0]}, 2: {"Dice": dice[1]}}, "metric_per_case": []}
        return FoldResult(f, tmp_path / f"fold_{f}", summary, {})

    model = ModelResults("T", "P", "C", tmp_path, "teacher", None, name="T")
    model.folds = {0: fold(0, [0.6, 0.8]), 1: fold(1, [0.7, 0.5])}
    row = ModelRow(model, (1, 2))
    assert row.dice(1) == pytest.approx((0.65, np.std([0.6, 0.7], ddof=1)))
    assert row.dice("fg") == pytest.approx((0.65, np.std([0.7, 0.6], ddof=1)))
    model.missing = {2: "not trained"}
    assert all(math.isnan(v) for v in row.dice("fg"))
    assert row.fold_dice("fg") == pytest.approx({0: 0.7, 1: 0.6})


def test_teachers_are_the_ones_recorded_at_training_time(report_tree, tmp_path):
    record = json.loads((report_tree[DISTILLED] / "fold_0" / "teachers.json").read_text())
    assert [t["trainer"] for t in record] == [TEACHER]
    assert record[0]["checkpoint"] == str(report_tree[TEACHER] / "fold_0" / "checkpoint_final.pth")

    from nnunet_teachformer.trainers import TeachFormerTrainer_tiny
    model = ModelResults("TeachFormerTrainer_tiny", "P", "C", tmp_path, ROLE_DISTILLED, TeachFormerTrainer_tiny)
    expected_default = {"HDenseFormerTrainer_tiny", "SwinUNETRTrainer_tiny", "UNETRTrainer_tiny"}
    assert set(teachers_used(model)) == expected_default  # nothing recorded: the class's own teachers
    for fold, teachers in ((0, ["SwinUNETRTrainer_tiny"]), (1, ["SwinUNETRTrainer_tiny", "UNETRTrainer_tiny"])):
        (tmp_path / f"fold_{fold}").mkdir()
        (tmp_path / f"fold_{fold}" / "teachers.json").write_text(json.dumps([{"trainer": t} for t in teachers]))
    assert teachers_used(model) == ["SwinUNETRTrainer_tiny", "UNETRTrainer_tiny"]
    missing = " ".join(missing_models([model]))
    assert "SwinUNETRTrainer_tiny__P__C (teacher of" in missing and "HDenseFormerTrainer_tiny" not in missing
