"""Teachers that are known to be good, on numbers computable by hand: nnU-Net's foreground Dice of a teacher's
segmentation (checked against nnU-Net's own ``compute_metrics_on_folder``), which teachers fail, their weights
under each ``teacher_weighting``, and how the weights enter L_PWD's combined probabilities, L_AFS's average and
the ensemble (a teacher of weight 0 is not run). Runs in seconds (no training)."""
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_teachformer.distillation.attention import attention_feature_similarity, attention_map
from nnunet_teachformer.distillation.losses import combine_teacher_probabilities
from nnunet_teachformer.distillation.teacher_quality import (case_dice, failed_teachers, foreground_mean,
                                                             teacher_weights)
from nnunet_teachformer.distillation.teachers import Teacher, TeacherEnsemble, TeacherRef
from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.networks.unetr import UNETR_SPEC
from nnunet_teachformer.trainers import TeachFormerTrainer_dropFailed_tiny, TeachFormerTrainer_tiny


def _cases():
    """(reference, prediction) label maps of three 6^3 cases: partial overlap, a missed label 2, and label 2 empty
    in both (Dice NaN, skipped by nnU-Net's mean)."""
    pairs = []
    for shift, with_two in ((0, True), (1, True), (2, False)):
        reference = np.zeros((6, 6, 6), dtype=np.uint8)
        reference[1:4, 1:4, 1:4] = 1
        prediction = np.zeros_like(reference)
        prediction[1 + shift:4 + shift, 1:4, 1:4] = 1
        if with_two:
            reference[5, 5, 4:6] = 2
            prediction[5, 5, 5] = 2 if shift == 0 else 0
        pairs.append((reference, prediction))
    return pairs


def test_foreground_dice_is_nnunets(tmp_path, monkeypatch):
    import multiprocessing.dummy

    import nnunetv2.evaluation.evaluate_predictions as evaluate_predictions
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()
    per_case = []
    for i, (reference, prediction) in enumerate(_cases()):
        for folder, seg in (("ref", reference), ("pred", prediction)):
            sitk.WriteImage(sitk.GetImageFromArray(seg), str(tmp_path / folder / f"c{i}.nii.gz"))
        per_case.append(case_dice(reference, prediction, [1, 2]))
    assert per_case[0] == pytest.approx({1: 1.0, 2: 2 / 3})
    assert per_case[1][2] == 0.0 and math.isnan(per_case[2][2])
    monkeypatch.setattr(evaluate_predictions.multiprocessing, "get_context", lambda _: multiprocessing.dummy)
    summary = evaluate_predictions.compute_metrics_on_folder(
        str(tmp_path / "ref"), str(tmp_path / "pred"), None, SimpleITKIO(), ".nii.gz", [1, 2], num_processes=1)
    assert foreground_mean(per_case) == pytest.approx(summary["foreground_mean"]["Dice"], abs=1e-12)
    assert foreground_mean(per_case) == pytest.approx(((1 + 2 / 3 + 1 / 3) / 3 + (2 / 3 + 0) / 2) / 2)


def test_ignore_label_voxels_do_not_count():
    reference = np.array([[[1, 1, 3, 0]]])
    prediction = np.array([[[1, 1, 1, 1]]])
    assert case_dice(reference, prediction, [1], ignore_label=3)[1] == pytest.approx(4 / 5)  # 2 TP, 1 FP
    assert case_dice(reference, prediction, [1])[1] == pytest.approx(4 / 6)


def test_failed_teachers_are_far_below_the_best():
    assert failed_teachers([0.8, 0.011, 0.5], 0.5) == [False, True, False]
    assert failed_teachers([0.8, 0.4], 0.5) == [False, False]  # at the threshold: not failed
    assert failed_teachers([0.0, 0.0], 0.5) == [True, True]  # every teacher at 0
    assert failed_teachers([None, 0.2, 0.05], 0.5) == [False, False, True]  # unknown: never failed
    assert failed_teachers([None, None], 0.5) == [False, False]


def test_weights_of_each_weighting():
    dice = [0.6, 0.01, 0.4]
    failed = failed_teachers(dice, 0.5)
    assert failed == [False, True, False]
    assert teacher_weights(dice, failed, "equal") == ([1 / 3] * 3, None)
    weights, why = teacher_weights(dice, failed, "dice")
    assert weights == pytest.approx([0.6 / 1.01, 0.01 / 1.01, 0.4 / 1.01]) and why is None
    assert teacher_weights(dice, failed, "drop_failed") == ([0.5, 0.0, 0.5], None)


def test_weights_fall_back_to_equal_when_nothing_tells_teachers_apart():
    zero = [0.0, 0.0]
    assert teacher_weights(zero, failed_teachers(zero, 0.5), "dice") == \
        ([0.5, 0.5], "every teacher has Dice 0 on the inner hold-out")
    assert teacher_weights(zero, failed_teachers(zero, 0.5), "drop_failed") == \
        ([0.5, 0.5], "every teacher failed on the inner hold-out")
    unknown = [None, 0.4]
    assert teacher_weights(unknown, failed_teachers(unknown, 0.5), "dice") == \
        ([0.5, 0.5], "not every teacher's inner-hold-out Dice is known")
    with pytest.raises(ValueError, match="unknown teacher weighting"):
        teacher_weights([0.5], [False], "best_only")


def test_weighted_combination_of_probabilities_by_hand():
    good = torch.tensor([0.9, 0.1]).view(1, 2, 1, 1, 1)
    bad = torch.tensor([0.2, 0.8]).view(1, 2, 1, 1, 1)
    combined = combine_teacher_probabilities([good, bad], "mean", teacher_weights=[0.75, 0.25])
    assert combined.flatten().tolist() == pytest.approx([0.75 * 0.9 + 0.25 * 0.2, 0.75 * 0.1 + 0.25 * 0.8])
    assert combine_teacher_probabilities([good, bad], "mean", teacher_weights=[1.0, 0.0]).flatten().tolist() == \
        pytest.approx([0.9, 0.1])
    assert torch.equal(combine_teacher_probabilities([good, bad], "mean", teacher_weights=[0.5, 0.5]),
                       combine_teacher_probabilities([good, bad], "mean"))
    target = torch.zeros(1, 1, 1, 1, 1)  # class 0: per voxel the teachers weigh 0.9 and 0.2, times 0.25 / 0.75
    gt = combine_teacher_probabilities([good, bad], "gt_confidence", target, teacher_weights=[0.25, 0.75])
    w = 0.9 * 0.25 / (0.9 * 0.25 + 0.2 * 0.75)
    assert gt.flatten().tolist() == pytest.approx([w * 0.9 + (1 - w) * 0.2, w * 0.1 + (1 - w) * 0.8])


def test_weighted_afs_average_by_hand():
    torch.manual_seed(0)
    student = torch.rand(1, 4, 4, 4, 4)
    same, other = attention_map(student), attention_map(torch.rand(1, 4, 4, 4, 4))
    distance = attention_feature_similarity(student, [other]).item()
    assert distance > 0
    assert attention_feature_similarity(student, [same, other]).item() == pytest.approx(distance / 2, rel=1e-5)
    assert attention_feature_similarity(student, [same, other], teacher_weights=[0.9, 0.1]).item() == \
        pytest.approx(0.1 * distance, rel=1e-5)


def test_a_teacher_of_weight_zero_is_not_run():
    torch.manual_seed(0)
    patch = (32, 32, 32)
    networks = [UNETR_SPEC.build(2, 3, patch, preset="tiny").eval() for _ in range(3)]
    calls = []
    for i, network in enumerate(networks):
        network.register_forward_hook(lambda *_, i=i: calls.append(i))
    teachers = [Teacher(TeacherRef(f"T{i}"), None, n) for i, n in enumerate(networks)]
    x = torch.randn(1, 2, *patch)
    kept = TeacherEnsemble(teachers, ("fine",), 2.0, 3.0, "mean", True, weights=[0.6, 0.0, 0.2])
    signals = kept(x)
    assert calls == [0, 2] and signals.weights == pytest.approx([0.75, 0.25]) and len(signals.maps["fine"]) == 2
    alone = [TeacherEnsemble([t], (), 2.0, 3.0, "mean", True)(x).probabilities for t in (teachers[0], teachers[2])]
    assert torch.allclose(signals.probabilities, 0.75 * alone[0] + 0.25 * alone[1], atol=1e-6)
    assert TeacherEnsemble(teachers, (), 2.0, 3.0, "mean", True, weights=[0.5, 0.0, 0.5]).weights is None  # plain mean
    with pytest.raises(ValueError, match="not all 0"):
        TeacherEnsemble(teachers, (), 2.0, 3.0, "mean", True, weights=[0.0, 0.0, 0.0])


class _NoHoldout(TeachFormerTrainer_dropFailed_tiny):
    early_stopping_patience = None


class _BadRatio(TeachFormerTrainer_tiny):
    teacher_failure_ratio = 1.5
    teacher_weighting = "best"


def test_weighting_options_are_checked_when_the_trainer_is_built():
    plans = {"plans_name": "P", "configurations": {}}  # no configuration: the options are checked before it
    with pytest.raises(TeachFormerError, match="teacher_weighting = 'drop_failed' .* early_stopping_patience = None"):
        _NoHoldout._check_before_start(plans, "3d_fullres", {})
    with pytest.raises(TeachFormerError) as error:
        _BadRatio._check_before_start(plans, "3d_fullres", {})
    assert "teacher_failure_ratio = 1.5 (must be a number in (0, 1])" in str(error.value)
    assert "teacher_weighting = 'best' (must be one of 'equal', 'dice', 'drop_failed')" in str(error.value)
