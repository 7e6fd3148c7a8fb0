"""The patch every trainer adapts on plans our planner did not make: one rule for teachers and students."""
import pytest

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
