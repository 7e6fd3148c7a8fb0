"""Attention maps and L_AFS, the attention-feature similarity between a student and its teachers.

a(F) = mean over channels of |F|^p (p = 2, Zagoruyko & Komodakis 2017): a channel-free spatial map,
so networks of any width and architecture can be compared. Teacher maps are resized (trilinear in 3D,
bilinear in 2D) to the student's grid at the same tap, every map is flattened per sample and normalised
to unit L2 (or L1) norm, and the distance between the student's and a teacher's map is the squared L2
norm (or the L1 norm) of their difference, averaged over the batch. With unit-norm maps the squared L2 distance lies
in [0, 4] whatever the grid size, so one weight fits every patch size.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F


def attention_map(feature: torch.Tensor, power: float = 2.0) -> torch.Tensor:
    """(B, C, *spatial) -> (B, *spatial), computed in fp32."""
    return feature.float().abs().pow(power).mean(1)


INTERPOLATION = {2: "bilinear", 3: "trilinear"}  # by spatial dimensions: nnU-Net's 2d and 3d configurations


def resize_map(amap: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B, *spatial) -> (B, *size), bilinear for 2D maps, trilinear for 3D ones."""
    if tuple(amap.shape[1:]) == tuple(size):
        return amap
    return F.interpolate(amap[:, None], size=tuple(size), mode=INTERPOLATION[len(size)], align_corners=False)[:, 0]


def normalise_map(amap: torch.Tensor, norm: str = "l2", mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Flattens to (B, N) and scales each sample to unit ``norm``; ``mask`` (B, *spatial) zeroes ignored voxels."""
    if mask is not None:
        amap = amap * mask
    flat = amap.flatten(1)
    return F.normalize(flat, p={"l2": 2, "l1": 1}[norm], dim=1)


def map_distance(a: torch.Tensor, b: torch.Tensor, distance: str = "l2") -> torch.Tensor:
    """Mean over the batch of ||a - b||_2^2 (``l2``) or ||a - b||_1 (``l1``) between (B, N) maps."""
    diff = a - b
    if distance == "l2":
        return diff.pow(2).sum(1).mean()
    if distance == "l1":
        return diff.abs().sum(1).mean()
    raise ValueError(f"distance must be 'l2' or 'l1', not {distance!r}")


def mask_at(valid: Optional[torch.Tensor], size: Sequence[int]) -> Optional[torch.Tensor]:
    """Valid-voxel mask (B, 1, *full) -> fraction of valid voxels per cell of a coarser grid, (B, *size)."""
    if valid is None:
        return None
    pool = {2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[len(size)]
    return pool(valid.float(), tuple(size))[:, 0] if valid.shape[2:] != tuple(size) else valid.float()[:, 0]


def attention_feature_similarity(student_feature: torch.Tensor, teacher_maps: Sequence[torch.Tensor],
                                 power: float = 2.0, norm: str = "l2", distance: str = "l2",
                                 valid: Optional[torch.Tensor] = None,
                                 teacher_weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """L_AFS at one tap, averaged over teachers (weighted by ``teacher_weights`` if given).

    ``teacher_maps`` are the teachers' *un-normalised* attention maps (``attention_map`` of their tap
    feature, computed without autograd); ``valid`` is the (B, 1, *full) mask of voxels that count.
    """
    s_map = attention_map(student_feature, power)
    size = s_map.shape[1:]
    mask = mask_at(valid, size)
    s_vec = normalise_map(s_map, norm, mask)
    losses = [map_distance(s_vec, normalise_map(resize_map(t.float(), size), norm, mask), distance)
              for t in teacher_maps]
    if teacher_weights is None:
        return torch.stack(losses).mean()
    weights = torch.as_tensor(teacher_weights, dtype=losses[0].dtype, device=losses[0].device)
    return (weights * torch.stack(losses)).sum() / weights.sum()
