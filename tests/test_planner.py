"""TeachFormerPlanner and `teachformer plan` on the phantom: patches, batch size, normalisation, data reuse, errors.

Two 5-case phantoms in a private nnU-Net folder tree: an isotropic CT + PET one (nnU-Net plans it first,
so our plans must refuse its data: PET is normalised differently), and an anisotropic (2, 1, 1) mm one
whose second channel is renamed to an MRI sequence (CT + z-score, as nnU-Net does), preprocessed by
nnU-Net first, so our plans must point at nnU-Net's folder instead of writing a copy.
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_teachformer.errors import TeachFormerError

ISO_ID, ANISO_ID, GHOST_ID, UNKNOWN_ID = 971, 972, 973, 974


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("planner")
    folders = {k: root / k for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in folders.items():
            v.mkdir()
            mp.setenv(k, str(v))
        for k, v in {"nnUNet_def_n_proc": "2", "nnUNet_n_proc_DA": "1", "nnUNet_compile": "f"}.items():
            mp.setenv(k, v)
        yield folders


def _phantom(dataset_id, spacing=(1.0, 1.0, 1.0), channel_names=None):
    from nnunet_teachformer.conversion.synthetic import convert_synthetic
    folder = convert_synthetic(dataset_id, 5, size=48, spacing=spacing, progress=False)
    if channel_names:
        dataset_json = json.loads((folder / "dataset.json").read_text())
        dataset_json["channel_names"] = channel_names
        (folder / "dataset.json").write_text(json.dumps(dataset_json))
    return folder


def _nnunet_plans(dataset_id, preprocess):
    """What `nnUNetv2_plan_and_preprocess -d ID -c 3d_fullres` does, through nnU-Net's API."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprint_dataset,
                                                                      plan_experiment_dataset, preprocess_dataset)
    extract_fingerprint_dataset(dataset_id, num_processes=2, verbose=False, show_progress_bar=False)
    plan_experiment_dataset(dataset_id)
    if preprocess:
        preprocess_dataset(dataset_id, "nnUNetPlans", ["3d_fullres"], [2], show_progress_bar=False)


def _load(dirs, dataset_id, name):
    folder = next(Path(dirs["nnUNet_preprocessed"]).glob(f"Dataset{dataset_id}_*"))
    return json.loads((folder / f"{name}.json").read_text()), json.loads((folder / "dataset.json").read_text())


@pytest.fixture(scope="module")
def iso(dirs):
    from nnunet_teachformer.planners.plan import plan_dataset
    _phantom(ISO_ID)
    _nnunet_plans(ISO_ID, preprocess=False)
    return plan_dataset(ISO_ID, num_processes=2, progress=False)


@pytest.fixture(scope="module")
def aniso(dirs):
    from nnunet_teachformer.planners.plan import plan_dataset
    _phantom(ANISO_ID, spacing=(2.0, 1.0, 1.0), channel_names={"0": "CT", "1": "T2W"})
    _nnunet_plans(ANISO_ID, preprocess=True)
    return plan_dataset(ANISO_ID, num_processes=2, progress=False)


def _multiples_of_32(patch):
    return len(patch) == 3 and all(p % 32 == 0 and p >= 32 for p in patch)


# pure rules -------------------------------------------------------------------------------------------

def test_patch_axis_rounding():
    from nnunet_teachformer.planners.planner import round_patch_axis
    assert round_patch_axis(48, 48) == 64  # up: 64 <= 48 + 16
    assert round_patch_axis(24, 24) == 32
    assert round_patch_axis(112, 100) == 96  # 128 > max(116, 125): down
    assert round_patch_axis(160, 144) == 160
    assert round_patch_axis(8, 8) == 32  # never below 32


def test_pet_channel_names():
    from nnunet_teachformer.planners.planner import is_pet_channel
    assert all(is_pet_channel(n) for n in ("PET", "pt", "SUV", "FDG_PET", "pet-suv"))
    assert not any(is_pet_channel(n) for n in ("CT", "T2W", "ADC", "HBV", "petra", "noNorm"))


def test_unet_topology_never_pads_the_patch():
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props
    from nnunet_teachformer.planners.planner import unet_topology
    patch = (288, 288, 64)
    assert tuple(get_pool_and_conv_props((1, 1, 1), patch, 4, 999999)[3]) != patch  # nnU-Net would pad 288
    strides, kernels = unet_topology((1, 1, 1), patch, 4)
    assert len(strides) == len(kernels)
    assert all(p % math.prod(s[a] for s in strides) == 0 for a, p in enumerate(patch))
    n = len(strides)
    net = PlainConvUNet(1, n, [min(320, 32 * 2 ** i) for i in range(n)], torch.nn.Conv3d, kernels, strides,
                        [2] * n, 2, [2] * (n - 1), True, torch.nn.InstanceNorm3d, {"affine": True},
                        nonlin=torch.nn.LeakyReLU).to("meta")
    assert net(torch.zeros((1, 1) + patch, device="meta")).shape[2:] == patch


def test_memory_grows_with_patch_and_memory_gives_batch():
    from nnunet_teachformer.networks.registry import NETWORKS
    from nnunet_teachformer.planners.memory import measure_training_memory
    from nnunet_teachformer.roster import PAPER_TEACHERS
    for key in PAPER_TEACHERS:
        small, large = (measure_training_memory(NETWORKS[key], 2, 3, p) for p in ((32, 64, 64), (64, 64, 128)))
        assert 0 < small.activation_bytes < large.activation_bytes, key
        assert small.parameter_bytes == pytest.approx(large.parameter_bytes, rel=0.05)
        assert large.max_batch_size(8) <= large.max_batch_size(24) <= large.max_batch_size(80)
        assert measure_training_memory(NETWORKS[key], 2, 3, (32, 64, 64)) is small  # cached


# planning the phantom ---------------------------------------------------------------------------------

def test_isotropic_plans(iso, dirs):
    assert iso["patch_size"] == [64, 64, 64]
    assert iso["nnunet_patch_size"] == [48, 48, 48]
    assert iso["batch_size"] >= 2 and iso["spacing"] == pytest.approx([1, 1, 1])
    plans, _ = _load(dirs, ISO_ID, "TeachFormerPlans")
    assert plans["plans_name"] == "TeachFormerPlans"
    assert plans["experiment_planner_used"] == "TeachFormerPlanner"
    assert plans["teachformer"]["planner"] == "nnunet_teachformer.planners.planner.TeachFormerPlanner"
    config = plans["configurations"]["3d_fullres"]
    assert _multiples_of_32(config["patch_size"])
    # CT and PET both get nnU-Net's dataset-global CT normalisation (SUV keeps one meaning across patients)
    assert config["normalization_schemes"] == ["CTNormalization", "CTNormalization"]
    assert config["use_mask_for_norm"] == [False, False]
    assert [c["pet"] for c in plans["teachformer"]["channel_normalization"]] == [False, True]
    record = plans["teachformer"]["configurations"]["3d_fullres"]
    assert record["heaviest_teacher"] in record["teachers"] and len(record["teachers"]) == 3


def test_pet_differs_from_nnunet_so_data_is_not_shared(iso, dirs):
    nnunet_plans, _ = _load(dirs, ISO_ID, "nnUNetPlans")
    assert nnunet_plans["configurations"]["3d_fullres"]["normalization_schemes"] == ["CTNormalization",
                                                                                     "ZScoreNormalization"]
    assert iso["data_identifier"] == "TeachFormerPlans_3d_fullres"
    assert iso["data_reused_from"] is None and iso["preprocessed_now"]
    folder = Path(dirs["nnUNet_preprocessed"]) / iso["dataset"] / "TeachFormerPlans_3d_fullres"
    assert len(list(folder.glob("*.pkl"))) == 5


def test_anisotropic_plans_reuse_nnunet_data(aniso, dirs):
    assert _multiples_of_32(aniso["patch_size"])
    assert aniso["patch_size"] == [32, 64, 64]
    assert aniso["spacing"] == pytest.approx([2, 1, 1])
    assert aniso["normalization"] == {"CT": "CTNormalization", "T2W": "ZScoreNormalization"}
    assert aniso["data_identifier"] == "nnUNetPlans_3d_fullres"
    assert aniso["data_reused_from"] == "nnUNetPlans" and not aniso["preprocessed_now"]
    assert not (Path(dirs["nnUNet_preprocessed"]) / aniso["dataset"] / "TeachFormerPlans_3d_fullres").exists()


def test_batch_size_follows_gpu_memory(iso, dirs, monkeypatch):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # nnU-Net's planner alone fails with 0; ours must not
    from nnunet_teachformer.planners.planner import TeachFormerPlanner
    records = {}
    for gb in (2, 8, 80):
        planner = TeachFormerPlanner(ISO_ID, gpu_memory_target_in_gb=gb, plans_name=f"TeachFormerPlansTest{gb}")
        planner.show_progress_bar = False
        plans = planner.plan_experiment()
        records[gb] = plans["teachformer"]["configurations"]["3d_fullres"]
        assert _multiples_of_32(plans["configurations"]["3d_fullres"]["patch_size"])
        assert plans["configurations"]["3d_fullres"]["batch_size"] >= 2  # nnU-Net's minimum; 5 % cap is 0 here
    assert records[8]["batch_size_by_memory"] < records[80]["batch_size_by_memory"]
    # 2 GB: SwinUNETR cannot train two 64^3 samples, so the patch shrinks until it can
    assert math.prod(records[2]["patch_size"]) < math.prod(records[8]["patch_size"])
    assert records[2]["fits_gpu_memory"] and records[2]["batch_size_by_memory"] >= 2


# the trainers on these plans --------------------------------------------------------------------------

def test_teacher_trainers_accept_the_plans_and_adapt_nnunets_48(iso, aniso, dirs):
    from nnunet_teachformer.trainers.architectures import (HDenseFormerLightTrainer, HDenseFormerTrainer,
                                                           SwinUNETRTrainer, UNETRTrainer, UXNetLightTrainer)
    from nnunet_teachformer.trainers.patch_adaptation import adapt_plans
    for dataset_id in (ISO_ID, ANISO_ID):
        plans, dataset_json = _load(dirs, dataset_id, "TeachFormerPlans")
        for trainer in (HDenseFormerTrainer, SwinUNETRTrainer, UNETRTrainer):
            trainer._check_before_start(plans, "3d_fullres", dataset_json)
    nnunet_plans, dataset_json = _load(dirs, ISO_ID, "nnUNetPlans")
    assert nnunet_plans["configurations"]["3d_fullres"]["patch_size"] == [48, 48, 48]
    with pytest.raises(TeachFormerError, match="multiple of 32"):
        SwinUNETRTrainer._check_before_start(nnunet_plans, "3d_fullres", dataset_json)
    adapted, note = adapt_plans(nnunet_plans, "3d_fullres")  # what every trainer does first on nnU-Net's plans
    assert adapted["configurations"]["3d_fullres"]["patch_size"] == [64, 64, 64] and "[48, 48, 48]" in note
    assert nnunet_plans["configurations"]["3d_fullres"]["patch_size"] == [48, 48, 48]  # a copy was adapted
    for trainer in (SwinUNETRTrainer, HDenseFormerLightTrainer, UXNetLightTrainer):
        trainer._check_before_start(adapted, "3d_fullres", dataset_json)
    assert adapt_plans(plans, "3d_fullres") == (plans, None)  # TeachFormerPlans are never changed


def test_teachers_train_a_step_on_reused_data(aniso, dirs, monkeypatch):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # augment in this process
    from nnunet_teachformer.trainers.architectures import (HDenseFormerTrainer_tiny, SwinUNETRTrainer_tiny,
                                                           UNETRTrainer_tiny)
    plans, dataset_json = _load(dirs, ANISO_ID, "TeachFormerPlans")
    for trainer_class in (HDenseFormerTrainer_tiny, SwinUNETRTrainer_tiny, UNETRTrainer_tiny):
        trainer = trainer_class(dict(plans, continue_training=False), "3d_fullres", 0, dataset_json,
                                device=torch.device("cpu"))
        assert trainer.preprocessed_dataset_folder.endswith("nnUNetPlans_3d_fullres")
        trainer.initialize()
        batch = next(trainer.get_dataloaders()[0])
        assert tuple(batch["data"].shape[2:]) == (32, 64, 64)
        assert np.isfinite(trainer.train_step(batch)["loss"])


def test_nnunet_unet_builds_from_our_topology(iso, aniso, dirs):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    for dataset_id in (ISO_ID, ANISO_ID):
        plans, _ = _load(dirs, dataset_id, "TeachFormerPlans")
        plans_manager = PlansManager(plans)
        configuration = plans_manager.get_configuration("3d_fullres")
        net = nnUNetTrainer.build_network_architecture(plans_manager, configuration, 2, 3).to("meta")
        patch = tuple(configuration.patch_size)
        assert net(torch.zeros((2, 2) + patch, device="meta"))[0].shape == (2, 3) + patch


# command line and bad input ---------------------------------------------------------------------------

def test_cli_prints_patch_batch_spacing_and_skips_done_preprocessing(iso, capsys):
    from nnunet_teachformer.cli import main
    assert main(["plan", "-d", str(ISO_ID), "--gpu-memory", "24", "-np", "2"]) == 0
    out = capsys.readouterr().out
    assert "patch size     64 x 64 x 64" in out and "batch size     2" in out and "spacing        1 x 1 x 1" in out
    assert "24 GB target" in out and "already preprocessed" in out


def test_unknown_dataset_and_missing_raw_data(dirs, capsys):
    from nnunet_teachformer.cli import main
    from nnunet_teachformer.planners.plan import plan_dataset
    with pytest.raises(TeachFormerError, match=f"Unknown dataset id {UNKNOWN_ID}.*teachformer convert"):
        plan_dataset(UNKNOWN_ID)
    assert main(["plan", "-d", str(UNKNOWN_ID)]) == 2
    assert "Unknown dataset id" in capsys.readouterr().err
    (Path(dirs["nnUNet_preprocessed"]) / f"Dataset{GHOST_ID}_Ghost").mkdir()
    with pytest.raises(TeachFormerError, match="has no raw data"):
        plan_dataset(GHOST_ID)
    with pytest.raises(TeachFormerError, match="dataset id"):
        plan_dataset("nine")


def test_missing_preprocessing_names_the_fix(iso, dirs, monkeypatch):
    from nnunet_teachformer.planners.plan import check_preprocessed
    folder = Path(check_preprocessed(ISO_ID))
    assert folder.name == "TeachFormerPlans_3d_fullres"
    with pytest.raises(TeachFormerError, match="not been preprocessed.*nnUNetv2_plan_and_preprocess -d 971"):
        check_preprocessed(ISO_ID, "nnUNetPlans")  # planned, never preprocessed
    with pytest.raises(TeachFormerError, match="not been planned.*-pl nnUNetPlannerResEncM"):
        check_preprocessed(ISO_ID, "nnUNetResEncUNetMPlans")
    with pytest.raises(TeachFormerError, match="no configuration '3d_lowres'"):
        check_preprocessed(ISO_ID, "TeachFormerPlans", "3d_lowres")
    case, aside = folder / "PHANTOM_003.pkl", folder.parent / "PHANTOM_003.pkl"
    case.rename(aside)
    try:
        with pytest.raises(TeachFormerError, match="incomplete.*PHANTOM_003.*teachformer plan -d 971 -c 3d_fullres"):
            check_preprocessed(ISO_ID)
    finally:
        aside.rename(case)
    monkeypatch.delenv("nnUNet_raw")  # training needs only the preprocessed data
    assert Path(check_preprocessed(ISO_ID)) == folder
