"""Where the distillation gradients go: L_AFS and L_PWD each reach the student's parameters through its
tapped features and logits, and nothing reaches a teacher; teacher maps are resized with known values."""
import pytest
import torch

from nnunet_teachformer.distillation.attention import attention_feature_similarity, resize_map
from nnunet_teachformer.distillation.losses import pixelwise_distillation
from nnunet_teachformer.distillation.teachers import Teacher, TeacherEnsemble, TeacherRef
from nnunet_teachformer.networks.hdenseformer import HDENSEFORMER_LIGHT_SPEC
from nnunet_teachformer.networks.taps import capture_taps
from nnunet_teachformer.networks.unetr import UNETR_SPEC

PATCH = (32, 32, 32)


def _pair():
    torch.manual_seed(0)
    student = HDENSEFORMER_LIGHT_SPEC.build(2, 3, PATCH, preset="tiny")
    teacher = UNETR_SPEC.build(2, 3, PATCH, preset="tiny").eval().requires_grad_(False)
    ensemble = TeacherEnsemble([Teacher(TeacherRef("UNETRTrainer_tiny"), None, teacher)], ("coarse", "fine"), 2.0,
                               3.0, "mean", need_probabilities=True)
    return student, teacher, ensemble


@pytest.mark.parametrize("term", ["coarse", "fine", "pwd"])
def test_each_distillation_term_trains_the_student_and_never_a_teacher(term):
    student, teacher, ensemble = _pair()
    x = torch.randn(2, 2, *PATCH)
    signals = ensemble(x)
    with capture_taps(student, ("coarse", "fine")) as features:
        logits = student(x)
    if term == "pwd":
        loss = pixelwise_distillation(logits, signals.probabilities, 3.0)
    else:
        loss = attention_feature_similarity(features[term], signals.maps[term])
    assert loss.item() > 0
    loss.backward()
    # the encoder lies before both taps: a detached feature or logit leaves it without gradient
    encoder_grad = student.encoder[0][0].weight.grad
    assert encoder_grad is not None and encoder_grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert not signals.probabilities.requires_grad
    assert not any(m.requires_grad for maps in signals.maps.values() for m in maps)


def test_fine_tap_gradient_stops_before_the_last_decoder_stage():
    student, _, ensemble = _pair()
    x = torch.randn(1, 2, *PATCH)
    with capture_taps(student, ("fine",)) as features:
        student(x)
    attention_feature_similarity(features["fine"], ensemble(x).maps["fine"]).backward()
    assert student.decoder[1].conv[0].weight.grad.abs().sum() > 0  # the tapped stage itself
    assert student.decoder[2].conv[0].weight.grad is None and student.head.weight.grad is None  # after the tap


def test_teacher_maps_are_resized_trilinearly_with_known_values():
    n = 4
    ramp = torch.arange(n, dtype=torch.float32).view(1, n, 1, 1).expand(1, n, 2, 2).contiguous()  # value = index
    up = resize_map(ramp, (2 * n, 2, 2))
    # half-pixel centres (align_corners=False): output j samples j/2 - 1/4, clamped to the first and last voxel
    expected = torch.clamp(torch.arange(2 * n) / 2 - 0.25, 0, n - 1)
    assert torch.allclose(up[0, :, 0, 0], expected)
    assert torch.allclose(resize_map(ramp, (n // 2, 2, 2))[0, :, 0, 0], torch.tensor([0.5, 2.5]))  # pairs averaged
