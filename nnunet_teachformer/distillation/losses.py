"""The paper's three losses.

* ``SegmentationLoss`` (L_SEG): focal loss (MONAI's ``FocalLoss``, gamma 2) + soft Dice (nnU-Net's
  ``MemoryEfficientSoftDiceLoss``), on one output; deep supervision wraps it with nnU-Net's
  ``DeepSupervisionWrapper``. Every trainer of this package uses it, so the baseline students and
  the distilled students are trained with the same segmentation objective.
* L_AFS and L_PWD: see ``attention_feature_similarity`` and ``pixelwise_distillation`` below.

All losses take nnU-Net's targets: (B, 1, *spatial) integer labels; voxels carrying the dataset's
ignore label are left out.
"""
from typing import Optional

import torch
from monai.losses import FocalLoss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.helpers import softmax_helper_dim1
from torch import nn


class SegmentationLoss(nn.Module):
    """L_SEG = focal_weight * focal + dice_weight * (soft Dice loss), ignoring ``ignore_label`` voxels."""

    def __init__(self, batch_dice: bool, ignore_label: Optional[int] = None, focal_gamma: float = 2.0,
                 focal_weight: float = 1.0, dice_weight: float = 1.0, ddp: bool = False):
        super().__init__()
        self.ignore_label = ignore_label
        self.focal_weight, self.dice_weight = focal_weight, dice_weight
        self.focal = FocalLoss(to_onehot_y=True, use_softmax=True, gamma=focal_gamma, reduction="none")
        self.dice = MemoryEfficientSoftDiceLoss(apply_nonlin=softmax_helper_dim1, batch_dice=batch_dice,
                                                do_bg=False, smooth=1e-5, ddp=ddp)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = valid_mask(target, self.ignore_label)
        labels = target if mask is None else torch.where(mask, target, 0)
        focal = self.focal(logits, labels).sum(1, keepdim=True)  # per voxel
        focal = focal.mean() if mask is None else (focal * mask).sum() / mask.sum().clamp_min(1)
        dice = self.dice(logits, labels, loss_mask=mask)
        return self.focal_weight * focal + self.dice_weight * dice


def valid_mask(target: torch.Tensor, ignore_label: Optional[int]) -> Optional[torch.Tensor]:
    """(B, 1, *spatial) bool mask of the voxels that count, or None when nothing is ignored."""
    if ignore_label is None:
        return None
    return target != ignore_label
