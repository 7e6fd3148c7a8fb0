"""The patch every trainer adapts on plans our planner did not make: one rule for teachers and students; through
nnUNetv2_train on the phantom, the adapted patch saved with the model and a hand-edited patch refused."""
import json

import pytest
import torch

from conftest import CONFIG, DATASET_ID, DATASET_NAME, TEACHFORMER_PLANS, console_script, model_folder, run_cli
from nnunet_teachformer.networks.registry import NETWORKS
from nnunet_teachformer.trainers.patch_adaptation import ADAPT_MULTIPLE, adapt_plans, adapted_patch


@pytest.mark.parametrize("patch, expected", [
    ([48, 48, 48], [64, 64, 64]),       # ties round up; nnU-Net's plan of the phantom
    ([40, 200, 176], [32, 192, 192]),   # the nearest multiple of 32 on each axis
    ([20, 20], [64, 32]),               # all at 32: one axis grows, SwinUNETR's 1/32 bottleneck needs 2 voxels
    ([56, 320], [64, 320]),             # 2D
])
def test_nearest_multiple_that_every_network_takes(patch, expected):
    assert ADAPT_MULTIPLE == 32
    assert adapted_patch(patch) == expected
    for key, spec in NETWORKS.items():
        assert spec.patch_problem(expected) is None, key


def _plans(patch, **extra):
    return {"plans_name": "nnUNetPlans", "configurations": {"3d_fullres": {"patch_size": patch},
                                                            "3d_cascade_fullres": {"inherits_from": "3d_fullres"}},
            **extra}


def test_only_other_plans_and_only_patches_that_need_it_change():
    plans = _plans([48, 160, 128])
    adapted, note = adapt_plans(plans, "3d_fullres")
    assert adapted["configurations"]["3d_fullres"]["patch_size"] == [64, 160, 128]
    assert plans["configurations"]["3d_fullres"]["patch_size"] == [48, 160, 128]  # the caller's plans untouched
    assert "[48, 160, 128]" in note and "[64, 160, 128]" in note and "teachformer plan" in note
    assert adapt_plans(_plans([64, 160, 128]), "3d_fullres")[1] is None
    assert adapt_plans(_plans([48, 160, 128], teachformer={}), "3d_fullres")[1] is None  # ours: refused, not adapted
    assert adapt_plans(plans, "3d_cascade_fullres")[1] is None and adapt_plans(plans, "2d")[1] is None


def test_a_patch_edited_by_hand_in_teachformer_plans_is_refused(phantom, nnunet_dirs):
    base = nnunet_dirs["nnUNet_preprocessed"] / DATASET_NAME
    plans = json.loads((base / f"{TEACHFORMER_PLANS}.json").read_text())
    plans["plans_name"] = "HandEditedPlans"
    plans["configurations"][CONFIG]["patch_size"] = [48, 48, 48]  # our planner's plans are never adapted
    (base / "HandEditedPlans.json").write_text(json.dumps(plans))
    result = run_cli([console_script("nnUNetv2_train"), DATASET_ID, CONFIG, 0, "-p", "HandEditedPlans", "-tr",
                      "SwinUNETRTrainer_tiny", "-device", "cpu"], check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "multiple of 32" in result.stderr and f"teachformer plan -d {DATASET_ID}" in result.stderr
    assert not model_folder(nnunet_dirs["nnUNet_results"], "SwinUNETRTrainer_tiny", "HandEditedPlans").exists()


def test_nnunets_own_plans_train_a_transformer_on_an_adapted_patch(phantom, nnunet_dirs):
    """What an nnU-Net user types first: nnU-Net's plans (a 48^3 patch here), no -p. The teacher adapts the patch
    to 64^3, says so, and saves the adapted plans with the model, where nnUNetv2_predict reads them."""
    run_cli([console_script("nnUNetv2_train"), DATASET_ID, CONFIG, 0, "-tr", "SwinUNETRTrainer_tiny", "-device",
             "cpu"])
    folder = model_folder(nnunet_dirs["nnUNet_results"], "SwinUNETRTrainer_tiny", "nnUNetPlans")
    assert json.loads((folder / "plans.json").read_text())["configurations"][CONFIG]["patch_size"] == [64, 64, 64]
    checkpoint = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["init_args"]["plans"]["configurations"][CONFIG]["patch_size"] == [64, 64, 64]
    log = next((folder / "fold_0").glob("training_log_*.txt")).read_text()
    assert "patch size [48, 48, 48] of nnUNetPlans 3d_fullres adapted to [64, 64, 64]" in log
    nnunet_plans = nnunet_dirs["nnUNet_preprocessed"] / DATASET_NAME / "nnUNetPlans.json"
    assert json.loads(nnunet_plans.read_text())["configurations"][CONFIG]["patch_size"] == [48, 48, 48]
