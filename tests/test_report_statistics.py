"""The report's statistics on numbers computable by hand, and on a fabricated nnU-Net results tree.

Holm's correction, the bootstrap CI, the NaN rule (correct empty prediction = Dice 1), the declared
reference and the split of a distilled trainer by teacher set. The fabricated tree is real nnU-Net
output in everything but the training: 8^3 label maps written with SimpleITK, scored by nnU-Net's own
``compute_metrics_on_folder`` into ``fold_X/validation/summary.json``, and ``teachers.json`` records as
the distilled trainer writes them. Runs in seconds (no training).
"""
import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import stats

from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.evaluation.metrics import case_score, count_undefined
from nnunet_teachformer.evaluation.report import build_report, declared_reference
from nnunet_teachformer.evaluation.report_tables import ModelRow
from nnunet_teachformer.evaluation.results import (ROLE_DISTILLED, ROLE_TEACHER, FoldResult, ModelResults,
                                                    fold_teachers, split_by_teacher_set)
from nnunet_teachformer.evaluation.statistics import bootstrap_effect, holm, mean_sd, paired_test

# ---- Holm, bootstrap, NaN rule: numbers by hand ------------------------------------------------------------


def test_holm_matches_hand_computed_values():
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> kept monotone at 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1; a NaN (no test) is not part of the family: m = 2 here
    adjusted = holm([0.5, math.nan, 0.6])
    assert adjusted[0] == pytest.approx(1.0) and adjusted[2] == pytest.approx(1.0) and math.isnan(adjusted[1])
    assert holm([0.02, math.nan]) == pytest.approx([0.02, math.nan], nan_ok=True)  # one test: unchanged


def test_fold_mean_and_sd_leave_an_undefined_fold_out():
    # the one mean +- sd of the report and the model card: sample sd (ddof 1); a NaN fold value is left out
    assert mean_sd([0.6, 0.7]) == pytest.approx((0.65, math.sqrt(0.005)))
    assert mean_sd([0.6, math.nan, 0.7]) == pytest.approx((0.65, math.sqrt(0.005)))
    assert mean_sd([0.5, math.nan]) == pytest.approx((0.5, math.nan), nan_ok=True)  # one defined fold: no sd
    assert all(math.isnan(v) for v in mean_sd([math.nan]) + mean_sd([]))


def test_bootstrap_ci_by_hand_and_shrinking_with_n():
    # two cases 0 and 1: resampled means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4 -> 95 % CI [0, 1]
    effect = bootstrap_effect([0.0, 1.0])
    assert (effect.n, effect.mean_difference, effect.ci_low, effect.ci_high) == (2, 0.5, 0.0, 1.0)
    rng = np.random.default_rng(1)
    true_difference = 0.05
    widths = []
    for n in (20, 80, 320):
        differences = true_difference + rng.normal(0, 0.1, n)
        effect = bootstrap_effect(differences)
        assert effect.ci_low < true_difference < effect.ci_high
        assert effect.ci_low < effect.mean_difference < effect.ci_high
        widths.append(effect.ci_high - effect.ci_low)
        # close to the normal-theory width 2 * 1.96 * sd / sqrt(n)
        assert widths[-1] == pytest.approx(2 * 1.96 * differences.std(ddof=1) / math.sqrt(n), rel=0.2)
    assert widths[0] > widths[1] > widths[2]
    assert bootstrap_effect([0.1, 0.2, 0.4]) == bootstrap_effect([0.1, 0.2, 0.4])  # seeded
    constant = bootstrap_effect([0.2, 0.2, 0.2])
    assert constant.ci_low == constant.ci_high == pytest.approx(0.2)
    assert math.isnan(bootstrap_effect([0.3]).ci_low)


def test_correct_empty_prediction_scores_one_and_keeps_the_pair():
    assert case_score({1: 0.5, 2: math.nan}) == pytest.approx(0.75)  # label 2 empty in both: Dice 1
    assert case_score({1: 0.5, 2: 0.0}) == pytest.approx(0.25)  # false positive on an empty label: 0
    assert case_score({1: math.nan, 2: math.nan}) == 1.0
    reference = {"a": {1: 0.9, 2: math.nan}, "b": {1: 0.8, 2: 0.6}, "c": {1: math.nan, 2: math.nan}, "d": {1: 0.5}}
    other = {"a": {1: 0.7, 2: 0.0}, "b": {1: 0.2, 2: 0.4}, "c": {1: 0.1, 2: 0.1}, "e": {1: 0.45}}
    result = paired_test("r", reference, "o", other, {"a": 0, "b": 0, "c": 1, "d": 1})
    assert (result.n, result.unpaired) == (3, 2)  # c is paired; d and e have no partner
    a, b = [0.95, 0.7, 1.0], [0.35, 0.3, 0.1]
    assert result.mean_difference == pytest.approx(np.mean(np.subtract(a, b)))
    assert result.t_p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert result.per_fold[0].n == 2 and result.per_fold[0].mean_difference == pytest.approx(0.5)  # (0.6 + 0.4) / 2
    assert result.per_fold[1].n == 1 and result.per_fold[1].mean_difference == pytest.approx(0.9)
    assert count_undefined(reference) == 3


# ---- declared reference and teacher sets on fabricated models -----------------------------------------------

def _model(trainer, folder, role=ROLE_DISTILLED, folds=(0,), dice=0.5):
    model = ModelResults(trainer, "P", "C", folder / f"{trainer}__P__C", role, None, name=trainer)
    for f in folds:
        model.folds[f] = FoldResult(f, model.folder / f"fold_{f}", {}, {f"case{f}": {1: dice}})
    return model


def test_reference_is_declared_not_the_best_model(tmp_path):
    def rows(*models):
        return [ModelRow(m, (1,)) for m in models]

    teacher = _model("UNETRTrainer", tmp_path, ROLE_TEACHER, dice=0.9)
    full, tiny = _model("TeachFormerTrainer", tmp_path, dice=0.2), _model("TeachFormerTrainer_tiny", tmp_path, dice=0.8)
    row, rule = declared_reference(rows(teacher, tiny, full), None)
    assert row.name == "TeachFormerTrainer" and "declared default" in rule  # not the better _tiny
    assert declared_reference(rows(teacher, tiny), None)[0].name == "TeachFormerTrainer_tiny"
    assert declared_reference(rows(teacher, tiny, full), "UNETRTrainer")[1] == \
        "UNETRTrainer, declared with --reference UNETRTrainer"
    row, rule = declared_reference(rows(teacher), None)
    assert row is None and rule.startswith("none: no TeachFormerTrainer")
    with pytest.raises(TeachFormerError, match="TeachFormerTrainer_demo and TeachFormerTrainer_tiny"):
        declared_reference(rows(teacher, tiny, _model("TeachFormerTrainer_demo", tmp_path)), None)
    with pytest.raises(TeachFormerError, match="--reference SwinUNETRTrainer is not a model of this dataset"):
        declared_reference(rows(teacher, tiny), "SwinUNETRTrainer")
    untrained = _model("TeachFormerTrainer", tmp_path, folds=())
    untrained.missing = {0: "not trained"}
    assert declared_reference(rows(teacher, untrained), None)[0] is None  # default without results: no tests
    with pytest.raises(TeachFormerError, match="has none of the requested folds"):
        declared_reference(rows(teacher, untrained), "TeachFormerTrainer")


def _write_teachers(fold_folder, teachers):
    fold_folder.mkdir(parents=True, exist_ok=True)
    (fold_folder / "teachers.json").write_text(json.dumps(teachers))


def test_folds_taught_by_different_teacher_sets_are_separate_rows(tmp_path):
    model = _model("TeachFormerTrainer", tmp_path, folds=(0, 1, 2))
    model.missing = {3: "not trained"}
    _write_teachers(model.folder / "fold_0", [{"trainer": "UNETRTrainer", "checkpoint": "/t/u0.pth",
                                               "provenance": "recorded"}])
    _write_teachers(model.folder / "fold_1", [{"trainer": "UNETRTrainer", "checkpoint": "/t/u1.pth",
                                               "provenance": "recorded"},
                                              {"trainer": "SwinUNETRTrainer", "checkpoint": "/t/s1.pth",
                                               "provenance": "unrecorded"}])
    _write_teachers(model.folder / "fold_2", [{"trainer": "UNETRTrainer", "checkpoint": "/t/u2.pth"}])  # old record
    model.teachers = {f: fold_teachers(model.folder / f"fold_{f}") for f in model.folds}
    one, two = split_by_teacher_set(model)
    assert one.name == "TeachFormerTrainer [UNETRTrainer]" and sorted(one.folds) == [0, 2]
    assert two.name == "TeachFormerTrainer [SwinUNETRTrainer+UNETRTrainer]" and sorted(two.folds) == [1]
    assert not one.complete and sorted(one.missing) == [1, 3] and "row " + two.name in one.missing[1]
    assert sorted(two.missing) == [0, 2, 3]
    assert len(one.teacher_warnings) == 1 and one.teacher_warnings[0].startswith(
        "fold 2: teacher UNETRTrainer (/t/u2.pth): provenance unknown")
    assert len(two.teacher_warnings) == 1 and two.teacher_warnings[0].startswith(
        "fold 1: teacher SwinUNETRTrainer (/t/s1.pth): provenance unrecorded")
    assert set(one.case_dice()) == {"case0", "case2"}  # each row only its own folds' cases
    model.teachers = {0: model.teachers[0], 2: model.teachers[0]}
    model.folds = {f: model.folds[f] for f in (0, 2)}
    assert split_by_teacher_set(model) == [model]  # one teacher set: one row, named as before


# ---- the whole report on a fabricated results tree ----------------------------------------------------------

DATASET_ID = 993
DATASET = f"Dataset{DATASET_ID}_ReportStatistics"
CONFIG = "3d_fullres"
LABELS = {"background": 0, "A": 1, "B": 2}
CASES = {0: [f"case_{i:02d}" for i in range(5)], 1: [f"case_{i:02d}" for i in range(5, 10)]}
EMPTY_B = {"case_01", "case_07"}  # no label B in the reference
TEACHER, REFERENCE, ABLATION = "UNETRTrainer_tiny", "TeachFormerTrainer_tiny", "TeachFormerTrainer_noAFS_tiny"
# voxels of the 27-voxel label-A cube each model misses, per case (fixes its Dice A: 2 (27 - k) / (54 - k))
MISSED = {TEACHER: [9, 3, 14, 6, 11, 12, 4, 8, 10, 7],
          REFERENCE: [1, 0, 5, 2, 3, 4, 0, 6, 2, 1],
          ABLATION: [4, 9, 2, 7, 5, 6, 3, 1, 12, 8]}
FALSE_POSITIVE_B = {TEACHER}  # predicts one voxel of B where the reference has none: Dice 0, not NaN
TEACHER_SETS = {REFERENCE: {0: [("UNETRTrainer_tiny", "recorded")], 1: [("UNETRTrainer_tiny", "recorded")]},
                ABLATION: {0: [("UNETRTrainer_tiny", "recorded")],
                           1: [("UNETRTrainer_tiny", "recorded"), ("SwinUNETRTrainer_tiny", "unrecorded")]}}


def _label_map(case_index, missed=0, with_b=True, false_positive_b=False):
    seg = np.zeros((8, 8, 8), dtype=np.uint8)
    cube = np.zeros_like(seg, dtype=bool)
    cube[1:4, 1:4, 1:4] = True
    voxels = np.argwhere(cube)[missed:]
    seg[tuple(voxels.T)] = 1
    if with_b:
        seg[5:7, 5:7, 4 + case_index % 3:6 + case_index % 3] = 2
    elif false_positive_b:
        seg[6, 6, 6] = 2
    return seg


def _write(seg, path):
    image = sitk.GetImageFromArray(seg)
    image.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(image, str(path))


class _InProcess:
    """Stands in for ``multiprocessing`` in nnU-Net's evaluation module: the same code, a thread pool instead of
    spawning a process per folder (~4 s each on 2 cores)."""
    @staticmethod
    def get_context(method):
        import multiprocessing.dummy
        return multiprocessing.dummy


def _nnunet_summary(gt, validation):
    """``validation/summary.json`` by nnU-Net's ``compute_metrics_on_folder``, as nnU-Net's validation writes it."""
    import nnunetv2.evaluation.evaluate_predictions as evaluate_predictions
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate_predictions, "multiprocessing", _InProcess)
        evaluate_predictions.compute_metrics_on_folder(str(gt), str(validation), str(validation / "summary.json"),
                                                       SimpleITKIO(), ".nii.gz", [1, 2], num_processes=1)


@pytest.fixture(scope="module")
def fabricated(nnunet_dirs, tmp_path_factory):
    gt = nnunet_dirs["nnUNet_preprocessed"] / DATASET / "gt_segmentations"
    gt.mkdir(parents=True)
    all_cases = CASES[0] + CASES[1]
    for i, case in enumerate(all_cases):
        _write(_label_map(i, with_b=case not in EMPTY_B), gt / f"{case}.nii.gz")
    results = nnunet_dirs["nnUNet_results"] / DATASET
    dataset_json = {"labels": LABELS, "file_ending": ".nii.gz", "channel_names": {"0": "CT"}, "numTraining": 10}
    folders = {}
    for trainer, missed in MISSED.items():
        folder = results / f"{trainer}__nnUNetPlans__{CONFIG}"
        folders[trainer] = folder
        folder.mkdir(parents=True)
        (folder / "dataset.json").write_text(json.dumps(dataset_json))
        (folder / "plans.json").write_text(json.dumps({"image_reader_writer": "SimpleITKIO"}))
        for fold, cases in CASES.items():
            validation = folder / f"fold_{fold}" / "validation"
            validation.mkdir(parents=True)
            for case in cases:
                i = all_cases.index(case)
                _write(_label_map(i, missed[i], with_b=case not in EMPTY_B,
                                  false_positive_b=trainer in FALSE_POSITIVE_B), validation / f"{case}.nii.gz")
            _nnunet_summary(gt, validation)
            if trainer in TEACHER_SETS:
                _write_teachers(folder / f"fold_{fold}", [
                    {"trainer": t, "checkpoint": str(results / f"{t}__nnUNetPlans__{CONFIG}" / f"fold_{fold}" /
                                                     "checkpoint_final.pth"), "provenance": p}
                    for t, p in TEACHER_SETS[trainer][fold]])
    out = tmp_path_factory.mktemp("report_statistics")
    report = build_report(DATASET_ID, [0, 1], output=out, timing=False, gallery_cases=0, log=lambda m: None)
    return {"folders": folders, "report": report, "out": out}


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _scores(folder, folds=(0, 1)):
    """Per case: mean Dice over labels A and B from nnU-Net's summary.json, NaN counted as 1 (the rule)."""
    scores = {}
    for fold in folds:
        summary = json.loads((folder / f"fold_{fold}" / "validation" / "summary.json").read_text())
        for entry in summary["metric_per_case"]:
            case = entry["prediction_file"].split("/")[-1][:-len(".nii.gz")]
            values = [m["Dice"] for m in entry["metrics"].values()]
            scores[case] = float(np.mean([1.0 if v is None or math.isnan(v) else v for v in values]))
    return scores


def test_fabricated_report_reference_rows_and_teacher_marks(fabricated):
    report = fabricated["report"]
    assert report.reference == REFERENCE and "declared default" in report.reference_rule
    rows = {r["model"]: r for r in _csv(fabricated["out"] / "models.csv")}
    first, second = f"{ABLATION} [{TEACHER}]", f"{ABLATION} [SwinUNETRTrainer_tiny+{TEACHER}]"
    assert set(rows) == {TEACHER, REFERENCE, first, second}
    assert (rows[first]["folds_available"], rows[first]["folds_missing"]) == ("0", "1")
    assert (rows[second]["folds_available"], rows[second]["folds_missing"]) == ("1", "0")
    assert rows[first]["dice_fg"] == "" and rows[first]["complete"] == "False"  # never averaged over one set's folds
    summary = json.loads((fabricated["folders"][ABLATION] / "fold_1/validation/summary.json").read_text())
    assert float(rows[second]["dice_fg_fold1"]) == pytest.approx(summary["foreground_mean"]["Dice"])
    assert rows[second]["teacher_warnings"].startswith("fold 1: teacher SwinUNETRTrainer_tiny (") and \
        "checkpoint_final.pth): provenance unrecorded" in rows[second]["teacher_warnings"]
    assert rows[first]["teacher_warnings"] == rows[REFERENCE]["teacher_warnings"] == ""
    assert f"| {second} † |" in report.table_markdown and f"| {first} |" in report.table_markdown
    assert "† taught (in at least one fold) by a teacher without a provenance record" in report.markdown
    assert f"- {second} †: fold 1: SwinUNETRTrainer_tiny+{TEACHER}" in report.markdown
    assert f"taught by another teacher set (row {second})" in " ".join(report.missing)


def test_fabricated_report_paired_tests_holm_and_effect_sizes(fabricated):
    folders = fabricated["folders"]
    reference = _scores(folders[REFERENCE])
    tests = {t["other"]: t for t in _csv(fabricated["out"] / "paired_tests.csv")}
    first, second = f"{ABLATION} [{TEACHER}]", f"{ABLATION} [SwinUNETRTrainer_tiny+{TEACHER}]"
    expected_folds = {TEACHER: (0, 1), first: (0,), second: (1,)}
    raw_t, raw_w = [], []
    for other, folds in expected_folds.items():
        scores = _scores(folders[TEACHER if other == TEACHER else ABLATION], folds)
        cases = sorted(scores)
        a, b = np.array([reference[c] for c in cases]), np.array([scores[c] for c in cases])
        row = tests[other]
        assert row["reference"] == REFERENCE and int(row["n"]) == len(cases) and row["unpaired"] == str(10 - len(cases))
        assert float(row["mean_difference"]) == pytest.approx((a - b).mean())
        assert float(row["ci_low"]) < (a - b).mean() < float(row["ci_high"])
        assert float(row["t_p"]) == pytest.approx(stats.ttest_rel(a, b).pvalue)
        assert float(row["wilcoxon_p"]) == pytest.approx(stats.wilcoxon(a, b).pvalue)
        for fold in folds:
            mine = [i for i, c in enumerate(cases) if c in CASES[fold]]
            assert float(row[f"mean_difference_fold{fold}"]) == pytest.approx((a - b)[mine].mean())
            assert int(row[f"n_fold{fold}"]) == 5
        raw_t.append(stats.ttest_rel(a, b).pvalue)
        raw_w.append(stats.wilcoxon(a, b).pvalue)
    # Holm by hand over the three comparisons
    order = np.argsort(raw_t)
    expected, running = {}, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (3 - rank) * raw_t[i]))
        expected[list(expected_folds)[i]] = running
    for other, value in expected.items():
        assert float(tests[other]["t_p_holm"]) == pytest.approx(value)
        assert float(tests[other]["t_p_holm"]) >= float(tests[other]["t_p"])
    # pooled over both folds for the teacher: the table shows ΔDice with its CI and the corrected p
    teacher_row = next(line for line in fabricated["report"].table_markdown.splitlines()
                       if line.startswith(f"| {TEACHER} |"))
    assert f"{100 * float(tests[TEACHER]['mean_difference']):+.2f} [" in teacher_row
    holm_t = float(tests[TEACHER]["t_p_holm"])
    assert (f"{holm_t:.3g}" if holm_t >= 1e-3 else f"{holm_t:.1e}") + ("*" if holm_t < 0.05 else "") in teacher_row
    assert "### Effect size per fold" in fabricated["report"].markdown


def test_fabricated_report_counts_correct_empty_predictions(fabricated):
    rows = {r["model"]: r for r in _csv(fabricated["out"] / "models.csv")}
    # the reference predicts no B where there is none (2 cases): nnU-Net's NaN, counted and scored 1
    assert rows[REFERENCE]["dice_empty_correct"] == "2"
    assert rows[TEACHER]["dice_empty_correct"] == "0"  # its false positive B is Dice 0, not NaN
    assert f"- {REFERENCE}: 2 of 20" in fabricated["report"].markdown
    per_case = {(r["model"], r["case"]): r for r in _csv(fabricated["out"] / "per_case.csv")}
    for case in EMPTY_B:
        row = per_case[(REFERENCE, case)]
        assert row["dice_B"] == ""  # nnU-Net's NaN kept in the per-label column
        assert float(row["case_score"]) == pytest.approx((float(row["dice_A"]) + 1) / 2)
        teacher = per_case[(TEACHER, case)]
        assert float(teacher["dice_B"]) == 0.0
        assert float(teacher["case_score"]) == pytest.approx(float(teacher["dice_A"]) / 2)


def test_fabricated_report_refuses_an_unknown_or_ambiguous_reference(fabricated, tmp_path):
    with pytest.raises(TeachFormerError, match="--reference NoSuchTrainer is not a model of this dataset"):
        build_report(DATASET_ID, [0, 1], output=tmp_path / "refused", reference="NoSuchTrainer", timing=False,
                     gallery_cases=0, log=lambda m: None)
    assert not (tmp_path / "refused").exists()  # refused before anything is written
    with pytest.raises(TeachFormerError, match="matches several rows"):
        build_report(DATASET_ID, [0, 1], output=tmp_path, reference=ABLATION, timing=False, gallery_cases=0,
                     log=lambda m: None)
    report = build_report(DATASET_ID, [0, 1], output=tmp_path, reference=f"{ABLATION} [{TEACHER}]", timing=False,
                          gallery_cases=0, log=lambda m: None)
    assert report.reference == f"{ABLATION} [{TEACHER}]"
    # paired over fold 0 only; the other teacher-set row has only fold 1: nothing to pair, no test
    assert {t.other: t.n for t in report.tests} == {TEACHER: 5, REFERENCE: 5,
                                                    f"{ABLATION} [SwinUNETRTrainer_tiny+{TEACHER}]": 0}


def test_a_teacher_that_failed_on_the_inner_holdout_is_marked_on_the_students_row(nnunet_dirs, tmp_path):
    """teachers.json as a distilled student writes it after measuring its teachers: the report marks the row (‡),
    names the failed teacher with its Dice, the best one's and its weight, and lists every teacher's Dice."""
    dataset, student = "Dataset994_FailedTeacher", "TeachFormerTrainer_dropFailed_tiny"
    gt = nnunet_dirs["nnUNet_preprocessed"] / dataset / "gt_segmentations"
    validation = nnunet_dirs["nnUNet_results"] / dataset / f"{student}__nnUNetPlans__{CONFIG}" / "fold_0" / "validation"
    gt.mkdir(parents=True)
    validation.mkdir(parents=True)
    for i, case in enumerate(CASES[0]):
        _write(_label_map(i), gt / f"{case}.nii.gz")
        _write(_label_map(i, missed=2), validation / f"{case}.nii.gz")
    _nnunet_summary(gt, validation)
    (validation.parent.parent / "dataset.json").write_text(json.dumps({"labels": LABELS, "file_ending": ".nii.gz",
                                                                      "channel_names": {"0": "CT"}, "numTraining": 5}))
    (validation.parent.parent / "plans.json").write_text(json.dumps({"image_reader_writer": "SimpleITKIO"}))
    holdout = {"inner_holdout_cases": ["case_08", "case_09"], "provenance": "recorded"}
    _write_teachers(validation.parent, [
        {"trainer": "UNetTrainer_tiny", "checkpoint": "/t/u.pth", "inner_holdout_dice": 0.8, "failed": False,
         "weight": 1.0, **holdout},
        {"trainer": "UNETRTrainer_tiny", "checkpoint": "/t/r.pth", "inner_holdout_dice": 0.011, "failed": True,
         "weight": 0.0, **holdout}])
    report = build_report(994, [0], output=tmp_path, timing=False, gallery_cases=0, log=lambda m: None)
    assert f"| {student} ‡ |" in report.table_markdown
    assert "‡ taught (in at least one fold) by a teacher that failed on the student's inner hold-out" in report.markdown
    failed = ("fold 0: teacher UNETRTrainer_tiny failed on the inner hold-out (Dice 0.011; best UNetTrainer_tiny "
              "0.800; weight 0.000)")
    assert f"  - ‡ {failed}" in report.markdown
    assert "  - fold 0: inner-hold-out Dice (weight) UNetTrainer_tiny 0.800 (1.000), UNETRTrainer_tiny 0.011 (0.000)" \
        in report.markdown
    assert _csv(tmp_path / "models.csv")[0]["failed_teachers"] == failed
