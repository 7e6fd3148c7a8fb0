"""In-process checks of the trainers inside nnU-Net's real loop: where gradients go (early stopping: test_protocol)."""
import json
import math

import pytest
import torch

from conftest import CONFIG, DATASET_NAME, TEACHFORMER_PLANS
from nnunet_teachformer.networks.plans_unet import narrowed
from nnunet_teachformer.trainers import TeachFormerTrainer_tiny, TeachFormerTrainer_UNetLightR4Student_tiny
from nnunet_teachformer.trainers.teachformer import LOSS_TERMS


def _trainer(cls, nnunet_dirs, fold=0):
    base = nnunet_dirs["nnUNet_preprocessed"] / DATASET_NAME
    plans = json.loads((base / f"{TEACHFORMER_PLANS}.json").read_text())
    plans["continue_training"] = False
    dataset_json = json.loads((base / "dataset.json").read_text())
    return cls(plans, CONFIG, fold, dataset_json, torch.device("cpu"))


@pytest.fixture
def scratch_results(tmp_path, monkeypatch, phantom):
    """A private nnUNet_results, so the folders these trainers make stay apart from the session's."""
    results = tmp_path / "results"
    (results / DATASET_NAME).mkdir(parents=True)
    monkeypatch.setenv("nnUNet_results", str(results))
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # single-threaded augmentation: no worker processes
    return results


@pytest.fixture
def scratch_results_with_teachers(scratch_results, nnunet_dirs, trained):
    """``scratch_results`` that also sees the session's trained models (symlinks)."""
    for folder in (nnunet_dirs["nnUNet_results"] / DATASET_NAME).iterdir():
        (scratch_results / DATASET_NAME / folder.name).symlink_to(folder, target_is_directory=True)
    return scratch_results


class _DistillProbe(TeachFormerTrainer_tiny):
    pass


def test_gradients_reach_only_the_student(scratch_results_with_teachers, nnunet_dirs):
    trainer = _trainer(_DistillProbe, nnunet_dirs)
    trainer.on_train_start()
    teacher_params = [p for t in trainer.teachers.teachers for p in t.network.parameters()]
    assert len(trainer.teachers.teachers) == 3 and teacher_params
    teachers_before = [p.detach().clone() for p in teacher_params]
    student_before = [p.detach().clone() for p in trainer.network.parameters()]

    out = trainer.train_step(next(trainer.dataloader_train))

    assert all(math.isfinite(float(out[k])) for k in ("loss", "train_l_seg", "train_l_afs", "train_l_pwd"))
    assert all(p.grad is None and not p.requires_grad for p in teacher_params)
    assert all(torch.equal(a, b) for a, b in zip(teacher_params, teachers_before))
    assert any(not torch.equal(a, b) for a, b in zip(trainer.network.parameters(), student_before))
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in trainer.network.parameters()}
    assert not optimised & {id(p) for p in teacher_params}
    assert all(not t.network.training for t in trainer.teachers.teachers)


class _UNetStudentProbe(TeachFormerTrainer_UNetLightR4Student_tiny):
    pass


def test_a_unet_student_distils_inside_nnunets_loop(scratch_results_with_teachers, nnunet_dirs):
    """The plans' U-Net at 1/4 width (tiny: 1/32) learns from the session's three tiny teachers: built from the
    plans, deep supervision on the plans' strides, taps found, and one step moves it on every loss term."""
    trainer = _trainer(_UNetStudentProbe, nnunet_dirs)
    trainer.on_train_start()
    network, architecture = trainer.network, trainer.configuration_manager.network_arch_init_kwargs
    assert list(network.encoder.output_channels) == narrowed(architecture["features_per_stage"], 4 * 8)
    assert network.decoder.deep_supervision
    assert len(trainer._get_deep_supervision_scales()) == architecture["n_stages"] - 1 == \
        len(trainer.loss.weight_factors)
    before = [p.detach().clone() for p in network.parameters()]

    out = trainer.train_step(next(trainer.dataloader_train))

    assert all(math.isfinite(float(out[k])) and float(out[k]) > 0 for k in ("loss",) + LOSS_TERMS), out
    assert any(not torch.equal(a, b) for a, b in zip(network.parameters(), before))
    trainer.set_deep_supervision_enabled(False)  # as nnU-Net's final validation does
    assert not network.decoder.deep_supervision
