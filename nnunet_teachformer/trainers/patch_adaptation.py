"""A patch every network of the package can take, on plans our planner did not make (e.g. nnU-Net's own).

``nnUNetv2_plan_and_preprocess`` then ``nnUNetv2_train D 3d_fullres 0 -tr SwinUNETRTrainer`` is what an
nnU-Net user tries first, and nnU-Net's patch (a 48^3 phantom, most MRI plans) is often no multiple of 32.
Every trainer of this package therefore adapts such a patch the same way, so that a student and its
teachers of one dataset and configuration keep agreeing on it (the teacher guard compares patches): each
axis goes to the nearest multiple of ``ADAPT_MULTIPLE``, the largest any network needs (SwinUNETR's 32;
ties round up), and if every axis is then ``ADAPT_MULTIPLE`` the axis with the most room grows to twice
that, so SwinUNETR's 1/32 bottleneck is more than one voxel (``TeachFormerPlanner``'s rule too). A multiple
of 32 is still divisible by every pooling stride of nnU-Net's U-Nets that the old patch was.

Only the patch changes (batch size, spacing and data are nnU-Net's). The trainer's plans carry the adapted
patch, so nnU-Net saves them with the model (``plans.json``, the checkpoint's ``init_args``) and
``nnUNetv2_predict`` and the teacher guard see the same patch. Plans made by ``TeachFormerPlanner`` (they
hold a ``"teachformer"`` record) are never changed: a patch edited there by hand is refused with the fix.
"""
import math
from copy import deepcopy
from typing import List, Optional, Sequence, Tuple

from nnunet_teachformer.networks.registry import NETWORKS

ADAPT_MULTIPLE = max(spec.patch_multiple for spec in NETWORKS.values())


def adapted_patch(patch: Sequence[int]) -> List[int]:
    """The rule of the module docstring, for one patch."""
    adapted = [max(ADAPT_MULTIPLE, math.floor(int(p) / ADAPT_MULTIPLE + 0.5) * ADAPT_MULTIPLE) for p in patch]
    if all(a == ADAPT_MULTIPLE for a in adapted):
        roomiest = max(range(len(patch)), key=lambda i: int(patch[i]))
        adapted[roomiest] = 2 * ADAPT_MULTIPLE
    return adapted


def adapt_plans(plans: dict, configuration: str) -> Tuple[dict, Optional[str]]:
    """(plans, None) if the configuration's patch needs no change or the plans are ours; else (a copy with the
    adapted patch, the sentence that says what changed)."""
    config = plans.get("configurations", {}).get(configuration)
    if "teachformer" in plans or config is None or "patch_size" not in config:
        return plans, None
    patch = [int(p) for p in config["patch_size"]]
    if len(patch) not in (2, 3) or all(p % ADAPT_MULTIPLE == 0 for p in patch) and max(patch) > ADAPT_MULTIPLE:
        return plans, None
    new = adapted_patch(patch)
    adapted = deepcopy(plans)
    adapted["configurations"][configuration]["patch_size"] = new
    return adapted, (f"patch size {patch} of {plans.get('plans_name')} {configuration} adapted to {new}: every "
                     f"network of nnunet-teachformer takes multiples of {ADAPT_MULTIPLE} (teachers and students "
                     f"of this dataset adapt it alike; the adapted plans are saved with the model). `teachformer "
                     f"plan` makes TeachFormerPlans, whose patch and batch size are chosen for these networks.")
