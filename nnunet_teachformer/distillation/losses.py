"""The paper's three losses.

* ``SegmentationLoss`` (L_SEG): focal loss (MONAI's ``FocalLoss``, gamma 2) + soft Dice (nnU-Net's
  ``MemoryEfficientSoftDiceLoss``), on one output; deep supervision wraps it with nnU-Net's
  ``DeepSupervisionWrapper``. Every trainer of this package uses it, so the baseline students and
  the distilled students are trained with the same segmentation objective.
* L_PWD (``pixelwise_distillation``): pixel-wise KL divergence from the teachers' combined class
  probabilities to the student's, with temperature T and T^2 scaling (Hinton et al.); the teachers are combined
  by ``combine_teacher_probabilities`` or, for ``logit_mean``, by a softmax of their mean logits.
* L_AFS lives in ``attention.py``.

All losses take nnU-Net's targets: (B, 1, *spatial) integer labels; voxels carrying the dataset's
ignore label are left out.
"""
from typing import Optional, Sequence

import torch
from monai.losses import FocalLoss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.helpers import softmax_helper_dim1
from torch import nn

LOGIT_MEAN = "logit_mean"  # the teachers' logits averaged, then one softmax (not a mix of their probabilities)
COMBINATIONS = ("mean", "gt_confidence", "entropy", LOGIT_MEAN)


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


def _prior(teacher_weights: Optional[Sequence[float]], stacked: torch.Tensor) -> Optional[torch.Tensor]:
    return None if teacher_weights is None else \
        torch.as_tensor(teacher_weights, dtype=stacked.dtype, device=stacked.device).view(-1, *[1] * (stacked.ndim - 1))


def teacher_mean(per_teacher: Sequence[torch.Tensor], teacher_weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """The (weighted) mean over teachers of one tensor each: their probabilities, or their logits."""
    stacked = torch.stack(list(per_teacher))
    prior = _prior(teacher_weights, stacked)
    return stacked.mean(0) if prior is None else (prior * stacked).sum(0) / prior.sum()


def combine_teacher_probabilities(teacher_probs: Sequence[torch.Tensor], how: str = "mean",
                                  target: Optional[torch.Tensor] = None,
                                  teacher_weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """One (B, C, *spatial) distribution from several teachers' class probabilities.

    ``mean``: plain average. ``gt_confidence``: per voxel, each teacher weighted by its probability of
    the ground-truth class (needs ``target``). ``entropy``: per voxel, weights proportional to
    exp(-entropy), so confident teachers count more. ``teacher_weights`` (one per teacher, e.g. from their
    inner-hold-out Dice) make ``mean`` a weighted average and multiply the per-voxel weights of the others.
    """
    if how == "mean" or len(teacher_probs) == 1:
        return teacher_mean(teacher_probs, teacher_weights)
    stacked = torch.stack(list(teacher_probs))  # (K, B, C, *spatial)
    prior = _prior(teacher_weights, stacked)
    if how == "gt_confidence":
        if target is None:
            raise ValueError("gt_confidence needs the target")
        labels = target.long().clamp(0, stacked.shape[2] - 1)  # ignore-label voxels: any class, masked later
        index = labels[None].expand(stacked.shape[0], *labels.shape)
        weights = torch.gather(stacked, 2, index)  # (K, B, 1, *spatial)
    elif how == "entropy":
        weights = torch.exp((stacked * torch.log(stacked.clamp_min(1e-8))).sum(2, keepdim=True))
    else:
        raise ValueError(f"unknown teacher combination {how!r}; use mean, gt_confidence or entropy (logit_mean "
                         f"averages logits: distillation.teachers.TeacherEnsemble)")
    if prior is not None:
        weights = weights * prior
    weights = weights / weights.sum(0, keepdim=True).clamp_min(1e-8)
    return (weights * stacked).sum(0)


def pixelwise_distillation(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float,
                           valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """L_PWD = T^2 * mean over voxels of KL(p_teacher || softmax(z_student / T)).

    ``teacher_probs`` must already be softmax(z_teacher / T) (combined over teachers); ``valid`` is the
    (B, 1, *spatial) mask of voxels that count.
    """
    log_ps = torch.log_softmax(student_logits.float() / temperature, dim=1)
    pt = teacher_probs.float()
    kl = (pt * (torch.log(pt.clamp_min(1e-8)) - log_ps)).sum(1, keepdim=True)
    kl = kl.mean() if valid is None else (kl * valid).sum() / valid.sum().clamp_min(1)
    return kl * temperature ** 2
