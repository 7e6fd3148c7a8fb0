"""The roster resolves: every trainer name a study can produce is found by nnU-Net's own trainer lookup, and is
the class with the network the roster says; a student's baseline and distilled trainers differ only by
distillation."""
import contextlib
import inspect
import io

import pytest
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

from nnunet_teachformer import roster
from nnunet_teachformer.networks.plans_unet import PlansUNetSpec
from nnunet_teachformer.networks.registry import NETWORKS
from nnunet_teachformer.trainers import TeachFormerTrainer, UNetTrainer
from nnunet_teachformer.trainers.nnunet_unets import RESENC_CLASS


def _lookup(name):
    with contextlib.redirect_stdout(io.StringIO()):
        return recursive_find_trainer_class_by_name(name)


@pytest.mark.parametrize("suffix", sorted(roster.PRESETS.values()))
def test_every_teacher_and_student_trainer_resolves_to_its_network(suffix):
    for key, name in roster.TEACHERS.items():
        cls = _lookup(name + suffix)
        if key in NETWORKS:
            assert cls.network_spec is NETWORKS[key], name
        else:  # nnU-Net's U-Nets: the plans' PlainConvUNet, or the residual-encoder U-Net
            assert issubclass(cls, UNetTrainer)
            built = cls.architecture("dynamic_network_architectures.architectures.unet.PlainConvUNet",
                                     {"n_stages": 3, "features_per_stage": [32, 64, 128], "n_conv_per_stage": [2] * 3})
            assert (built[0] == RESENC_CLASS) == (key == "resenc"), name
    for key, (baseline, distilled) in roster.STUDENTS.items():
        spec = _lookup(baseline + suffix).network_spec
        assert _lookup(distilled + suffix).network_spec is spec, key
        if key in NETWORKS:
            assert spec is NETWORKS[key], key
        else:  # nnU-Net's U-Net at 1/r of the plans' widths, "unet_r<r>"
            assert isinstance(spec, PlansUNetSpec) and key == f"unet_r{spec.width_divisor}", key


@pytest.mark.parametrize("suffix", sorted(roster.PRESETS.values()))
def test_a_students_baseline_and_distilled_trainer_differ_only_by_distillation(suffix):
    """Everything the distilled trainer has that TeachFormerTrainer does not define itself (optimiser, loss,
    network, schedule, augmentation, protocol) is the very attribute its baseline has."""
    distillation = set(vars(TeachFormerTrainer))
    for key, (baseline, distilled) in roster.STUDENTS.items():
        baseline, distilled = _lookup(baseline + suffix), _lookup(distilled + suffix)
        assert issubclass(distilled, TeachFormerTrainer) and not issubclass(baseline, TeachFormerTrainer), key
        shared = (set(dir(baseline)) | set(dir(distilled))) - distillation - {"__doc__", "__module__", "__dict__"}
        different = [name for name in sorted(shared) if inspect.getattr_static(baseline, name, None) is not
                     inspect.getattr_static(distilled, name, None)]
        assert different == [], (key, suffix)


@pytest.mark.parametrize("suffix", sorted(roster.PRESETS.values()))
def test_every_teacher_set_variant_distils_from_that_set(suffix):
    for teacher_set, variant in roster.TEACHER_SET_VARIANTS.items():
        cls = _lookup("TeachFormerTrainer" + variant + suffix)
        assert issubclass(cls, TeachFormerTrainer)
        assert sorted(cls.teacher_trainers) == sorted(roster.teacher_trainers(teacher_set)), cls.__name__
        assert all(ref.trainer.endswith(suffix) for ref in cls.teacher_refs())
    assert TeachFormerTrainer.teacher_trainers == roster.teacher_trainers(roster.PAPER_TEACHERS)
