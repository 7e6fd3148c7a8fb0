"""nnU-Net's own U-Nets as teachers: the automatic distillation taps of PlainConvUNet and ResidualEncoderUNet sit at
the bottleneck and the second-to-last decoder stage, and a teacher built by UNetTrainer/ResEncUNetTrainer from
nnU-Net-style plans distils into a student without any gradient reaching it."""
import pytest
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from nnunet_teachformer.distillation.attention import attention_feature_similarity
from nnunet_teachformer.distillation.teachers import Teacher, TeacherEnsemble, TeacherRef
from nnunet_teachformer.networks.hdenseformer import HDENSEFORMER_LIGHT_SPEC
from nnunet_teachformer.networks.taps import capture_taps, distillation_taps_of
from nnunet_teachformer.trainers import ResEncUNetTrainer_tiny, UNetTrainer, UNetTrainer_tiny

PATCH = (32, 32, 32)
# an architecture entry as nnU-Net's planner writes it for a 32^3 patch (4 stages)
PLANS_ARCHITECTURE = (
    "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    {"n_stages": 4, "features_per_stage": [32, 64, 128, 256], "conv_op": "torch.nn.modules.conv.Conv3d",
     "kernel_sizes": [[3, 3, 3]] * 4, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
     "n_conv_per_stage": [2] * 4, "n_conv_per_stage_decoder": [2] * 3, "conv_bias": True,
     "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
     "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
    ["conv_op", "norm_op", "dropout_op", "nonlin"])


def _build(trainer, deep_supervision=False):
    class_name, kwargs = trainer.architecture(PLANS_ARCHITECTURE[0], dict(PLANS_ARCHITECTURE[1]))
    return get_network_from_plans(class_name, kwargs, PLANS_ARCHITECTURE[2], 2, 3, deep_supervision=deep_supervision)


@pytest.mark.parametrize("trainer", [UNetTrainer_tiny, ResEncUNetTrainer_tiny], ids=lambda t: t.__name__)
def test_taps_sit_at_the_bottleneck_and_the_second_to_last_decoder_stage(trainer):
    net = _build(trainer, deep_supervision=True).eval()
    assert type(net).__name__ == ("ResidualEncoderUNet" if "ResEnc" in trainer.__name__ else "PlainConvUNet")
    widths = [max(4, f // 8) for f in PLANS_ARCHITECTURE[1]["features_per_stage"]]
    assert list(net.encoder.output_channels) == widths
    seen = {}
    first = net.decoder.transpconvs[0].register_forward_pre_hook(lambda _m, i: seen.__setitem__("first", i[0]))
    last = net.decoder.transpconvs[-1].register_forward_pre_hook(lambda _m, i: seen.__setitem__("last", i[0]))
    x = torch.randn(2, 2, *PATCH)
    with torch.no_grad():
        plain = net(x)
        with capture_taps(net) as features:
            tapped = net(x)
    first.remove(), last.remove()
    assert all(torch.equal(a, b) for a, b in zip(plain, tapped))  # deep-supervision outputs untouched
    assert features["coarse"].shape == (2, widths[-1], 4, 4, 4) and torch.equal(features["coarse"], seen["first"])
    assert features["fine"].shape == (2, widths[1], 16, 16, 16) and torch.equal(features["fine"], seen["last"])


def test_paper_preset_keeps_the_plans_widths():
    assert list(_build(UNetTrainer).encoder.output_channels) == PLANS_ARCHITECTURE[1]["features_per_stage"]


def test_a_unet_teacher_distils_without_gradients_reaching_it():
    torch.manual_seed(0)
    teacher = _build(UNetTrainer_tiny).eval().requires_grad_(False)
    ensemble = TeacherEnsemble([Teacher(TeacherRef("UNetTrainer_tiny"), None, teacher)], ("coarse", "fine"), 2.0, 3.0,
                               "mean", need_probabilities=True)
    student = HDENSEFORMER_LIGHT_SPEC.build(2, 3, PATCH, preset="tiny")
    x = torch.randn(1, 2, *PATCH)
    signals = ensemble(x)
    with capture_taps(student) as features:
        student(x)
    loss = sum(attention_feature_similarity(features[t], signals.maps[t]) for t in ("coarse", "fine"))
    loss.backward()
    assert student.encoder[0][0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert signals.probabilities.shape == (1, 3, *PATCH)


def test_a_network_without_taps_is_named():
    with pytest.raises(TypeError, match="Linear exposes no distillation taps"):
        distillation_taps_of(torch.nn.Linear(2, 2))
