"""The three losses against values computed by hand, and their masking of ignore-label voxels."""
import math

import pytest
import torch

from nnunet_teachformer.distillation.attention import (attention_feature_similarity, attention_map, map_distance,
                                                        normalise_map)
from nnunet_teachformer.distillation.losses import (SegmentationLoss, combine_teacher_probabilities,
                                                    pixelwise_distillation)
from nnunet_teachformer.distillation.teachers import TeacherRef, parse_teacher_list
from nnunet_teachformer.errors import TeachFormerError


def test_attention_map_is_channel_mean_of_squares():
    f = torch.zeros(1, 2, 2, 2, 2)
    f[:, 0] = 1.0
    f[:, 1] = -2.0
    f[0, 1, 0, 0, 0] = 4.0
    a = attention_map(f)
    assert a.shape == (1, 2, 2, 2)
    assert a[0, 1, 1, 1].item() == pytest.approx((1 + 4) / 2)
    assert a[0, 0, 0, 0].item() == pytest.approx((1 + 16) / 2)
    assert attention_map(f, power=1)[0, 1, 1, 1].item() == pytest.approx(1.5)


def test_normalisation_and_distance():
    m = torch.tensor([[3.0, 4.0]]).view(1, 1, 1, 2)
    assert normalise_map(m, "l2")[0].tolist() == pytest.approx([0.6, 0.8])
    assert normalise_map(m, "l1")[0].tolist() == pytest.approx([3 / 7, 4 / 7])
    e1, e2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert map_distance(e1, e2, "l2").item() == pytest.approx(2.0)  # squared L2 of (1, -1)
    assert map_distance(e1, e2, "l1").item() == pytest.approx(2.0)
    assert map_distance(e1, e1, "l2").item() == 0.0


def test_afs_is_zero_for_same_map_at_any_width_and_scale():
    torch.manual_seed(0)
    base = torch.rand(2, 1, 4, 4, 4)
    student = base.repeat(1, 8, 1, 1, 1)  # 8 channels
    teacher = 5.0 * base.repeat(1, 32, 1, 1, 1)  # 32 channels, other scale
    t_map = attention_map(teacher)
    assert attention_feature_similarity(student, [t_map]).item() == pytest.approx(0.0, abs=1e-6)
    other = attention_map(torch.rand(2, 4, 4, 4, 4))
    assert attention_feature_similarity(student, [t_map, other]).item() > 0


def test_afs_resizes_teacher_maps_to_the_student_grid():
    student = torch.ones(1, 3, 8, 8, 8)
    coarse_teacher = attention_map(torch.ones(1, 16, 2, 2, 2))  # constant map at 1/4 of the grid
    assert attention_feature_similarity(student, [coarse_teacher]).item() == pytest.approx(0.0, abs=1e-6)


def test_afs_ignores_masked_voxels():
    torch.manual_seed(0)
    student = torch.rand(1, 2, 4, 4, 4)
    teacher = student.clone()
    teacher[..., 0, 0, 0] = 100.0  # disagreement only where the label is ignored
    valid = torch.ones(1, 1, 4, 4, 4, dtype=torch.bool)
    valid[..., 0, 0, 0] = False
    t_map = attention_map(teacher)
    assert attention_feature_similarity(student, [t_map]).item() > 0.1
    assert attention_feature_similarity(student, [t_map], valid=valid).item() == pytest.approx(0.0, abs=1e-6)


def test_afs_on_2d_maps_by_hand():
    """nnU-Net's 2d configuration: (B, C, Y, X) taps. Student map (1, 0 / 0, 0), teacher map at half the grid
    resized bilinearly to a constant: unit-L2 vectors (1, 0, 0, 0) and (0.5, 0.5, 0.5, 0.5), squared distance
    (0.5^2 + 3 x 0.5^2) = 1."""
    student = torch.zeros(1, 2, 2, 2)
    student[0, :, 0, 0] = 1.0  # attention map: 1 at (0, 0), 0 elsewhere
    teacher = attention_map(torch.full((1, 4, 1, 1), 3.0))  # one cell: bilinear resize gives a constant 2x2
    assert attention_feature_similarity(student, [teacher]).item() == pytest.approx(1.0, abs=1e-6)
    assert attention_feature_similarity(student, [teacher], distance="l1").item() == pytest.approx(2.0, abs=1e-6)
    valid = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    valid[..., :2, :2] = True  # only the first cell of the 2x2 grid is valid (pooled from the 4x4 mask)
    assert attention_feature_similarity(student, [teacher], valid=valid).item() == pytest.approx(0.0, abs=1e-6)


def test_pixelwise_kl_on_2d_maps_by_hand():
    p, q = (0.8, 0.2), (0.5, 0.5)
    kl = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    student = torch.log(torch.tensor(q)).view(1, 2, 1, 1).repeat(1, 1, 2, 3)  # (B, C, Y, X)
    teacher = torch.tensor(p).view(1, 2, 1, 1).repeat(1, 1, 2, 3)
    assert pixelwise_distillation(student, teacher, 1.0).item() == pytest.approx(kl, rel=1e-5)


def _logits_for(q, temperature):
    return temperature * torch.log(torch.tensor(q)).view(1, len(q), 1, 1, 1)


def test_pixelwise_kl_matches_hand_computation():
    p, q, temperature = (0.8, 0.2), (0.5, 0.5), 2.0
    kl = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)  # 0.19274...
    teacher = torch.tensor(p).view(1, 2, 1, 1, 1)
    value = pixelwise_distillation(_logits_for(q, temperature), teacher, temperature)
    assert value.item() == pytest.approx(kl * temperature ** 2, rel=1e-5)
    assert pixelwise_distillation(_logits_for(p, temperature), teacher, temperature).item() == pytest.approx(0, abs=1e-6)


def test_pixelwise_kl_masks_ignored_voxels():
    temperature = 1.0
    student = torch.cat([_logits_for((0.5, 0.5), 1.0), _logits_for((0.99, 0.01), 1.0)], dim=4)  # 2 voxels
    teacher = torch.tensor([[0.8, 0.01], [0.2, 0.99]]).view(1, 2, 1, 1, 2)
    valid = torch.tensor([True, False]).view(1, 1, 1, 1, 2)
    kl_first = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    assert pixelwise_distillation(student, teacher, temperature, valid).item() == pytest.approx(kl_first, rel=1e-5)
    assert pixelwise_distillation(student, teacher, temperature).item() > kl_first


def test_teacher_combinations():
    confident = torch.tensor([0.98, 0.02]).view(1, 2, 1, 1, 1)
    unsure = torch.tensor([0.4, 0.6]).view(1, 2, 1, 1, 1)
    mean = combine_teacher_probabilities([confident, unsure], "mean")
    assert mean.flatten().tolist() == pytest.approx([0.69, 0.31])
    target = torch.zeros(1, 1, 1, 1, 1)  # ground truth: class 0
    gt = combine_teacher_probabilities([confident, unsure], "gt_confidence", target)
    w = 0.98 / (0.98 + 0.4)
    assert gt.flatten().tolist() == pytest.approx([w * 0.98 + (1 - w) * 0.4, w * 0.02 + (1 - w) * 0.6])
    ent = combine_teacher_probabilities([confident, unsure], "entropy")
    assert ent[0, 0].item() > mean[0, 0].item()  # the low-entropy teacher pulls harder
    for combined in (mean, gt, ent):
        assert combined.sum(1).flatten().tolist() == pytest.approx([1.0])
    with pytest.raises(ValueError):
        combine_teacher_probabilities([confident, unsure], "median")


def test_segmentation_loss_ignores_ignore_label():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, 4)
    target = torch.randint(0, 3, (2, 1, 4, 4, 4))
    loss = SegmentationLoss(batch_dice=False, ignore_label=3)
    a = target.clone()
    a[..., 0, 0] = 3
    b = a.clone()
    changed_logits = logits.clone()
    changed_logits[..., 0, 0] = 50 * torch.randn_like(changed_logits[..., 0, 0])
    assert loss(logits, a).item() == pytest.approx(loss(changed_logits, b).item(), rel=1e-5)
    assert loss(changed_logits, target).item() != pytest.approx(loss(logits, target).item(), rel=1e-3)


def test_segmentation_loss_of_a_perfect_prediction():
    target = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    target[..., :2, :, :] = 1
    target[..., 3, 3, 3] = 2
    logits = 40.0 * torch.nn.functional.one_hot(target[:, 0], 3).permute(0, 4, 1, 2, 3).float()
    value = SegmentationLoss(batch_dice=False)(logits, target).item()
    assert value == pytest.approx(-1.0, abs=1e-3)  # focal ~0, Dice loss = -Dice = -1


def test_teacher_list_format():
    refs = parse_teacher_list("SwinUNETRTrainer, UNETRTrainer:checkpoint_best.pth,")
    assert refs == (TeacherRef("SwinUNETRTrainer", "checkpoint_final.pth"),
                    TeacherRef("UNETRTrainer", "checkpoint_best.pth"))
    with pytest.raises(TeachFormerError, match="names no teacher"):
        parse_teacher_list(" , ")
