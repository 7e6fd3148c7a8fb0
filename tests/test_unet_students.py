"""The U-Net students: nnU-Net's U-Net built from the plans' architecture entry at 1/2, 1/4, 1/8 of its widths,
with deep supervision and distillation taps as nnU-Net's U-Net has them (a distillation step inside nnU-Net's loop:
test_trainer_mechanics; the study's commands: test_study)."""
import torch
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from nnunet_teachformer.distillation.attention import attention_feature_similarity
from nnunet_teachformer.evaluation.complexity import count_parameters
from nnunet_teachformer.networks.taps import capture_taps, distillation_taps_of
from nnunet_teachformer.trainers import (TeachFormerTrainer_UNetLightR4Student, UNetLightR2Trainer,
                                         UNetLightR2Trainer_tiny, UNetLightR4Trainer, UNetLightR8Trainer,
                                         UNetLightR8Trainer_tiny, UNetTrainer)

PATCH = (64, 64, 64)
SMALL = (32, 32, 32)  # forward passes: any multiple of the U-Net's 16x pooling runs, and faster
PLANNED = [32, 64, 128, 256, 320]
# 3d_fullres as TeachFormerPlans holds it for a 64^3 patch (the test phantom's and a 144^3 PET/CT case's plans)
CONFIGURATION = ConfigurationManager({
    "patch_size": list(PATCH), "spacing": [1.0, 1.0, 1.0], "batch_size": 2,
    "architecture": {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": 5, "features_per_stage": PLANNED, "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * 5, "strides": [[1, 1, 1]] + [[2, 2, 2]] * 4, "n_conv_per_stage": [2] * 5,
            "n_conv_per_stage_decoder": [2] * 4, "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}})


def _build(trainer, deep_supervision=False):
    return trainer.build_network_architecture(None, CONFIGURATION, 2, 3, enable_deep_supervision=deep_supervision)


def test_widths_are_the_plans_divided_by_r_and_sizes_fall_with_r():
    sizes = []
    for r, trainer in ((2, UNetLightR2Trainer), (4, UNetLightR4Trainer), (8, UNetLightR8Trainer)):
        network = _build(trainer)
        assert type(network).__name__ == "PlainConvUNet"
        assert list(network.encoder.output_channels) == [f // r for f in PLANNED], r
        sizes.append(count_parameters(network))
    full = count_parameters(_build(UNetTrainer))
    assert full > sizes[0] > sizes[1] > sizes[2]
    assert 0.9e6 < sizes[1] < 1.2e6  # 1/4 of the widths: ~1/16 of the 16.5M parameters, H-DenseFormer Light's order


def test_tiny_preset_divides_by_eight_more_and_keeps_four_channels():
    assert list(_build(UNetLightR2Trainer_tiny).encoder.output_channels) == [4, 4, 8, 16, 20]
    assert list(_build(UNetLightR8Trainer_tiny).encoder.output_channels) == [4, 4, 4, 4, 5]


def test_deep_supervision_heads_are_nnunets_one_per_decoder_stage():
    network = _build(UNetLightR4Trainer, deep_supervision=True)
    with torch.no_grad():
        outputs = network(torch.zeros(1, 2, *SMALL))
    assert [tuple(o.shape[2:]) for o in outputs] == [(32 // 2 ** i,) * 3 for i in range(4)]
    network.decoder.deep_supervision = False  # what the trainer's set_deep_supervision_enabled(False) sets
    with torch.no_grad():
        assert network(torch.zeros(1, 2, *SMALL)).shape == (1, 3, *SMALL)


def test_distilled_student_taps_and_attention_loss_reach_its_weights():
    torch.manual_seed(0)
    student = _build(TeachFormerTrainer_UNetLightR4Student, deep_supervision=True)
    taps = distillation_taps_of(student)
    assert taps["coarse"].module is student.encoder.stages[-1] and taps["fine"].module is student.decoder.stages[-2]
    x = torch.randn(1, 2, *SMALL)
    with capture_taps(student) as features:
        student(x)
    assert features["coarse"].shape == (1, 80, 2, 2, 2) and features["fine"].shape == (1, 16, 16, 16, 16)
    teacher_maps = {"coarse": [torch.rand(1, 4, 4, 4)], "fine": [torch.rand(1, 8, 8, 8)]}  # resized to the student's
    sum(attention_feature_similarity(features[t], teacher_maps[t]) for t in teacher_maps).backward()
    assert student.encoder.stages[0][0].convs[0].conv.weight.grad.abs().sum() > 0

