"""``NetworkSpec``: what the trainers, planner and summaries need to know about an architecture.

One spec per architecture (in its own module): how to build it from nnU-Net's plans, its width
presets (``paper`` = the size its paper uses, ``tiny`` = CPU tests), which patch sizes it can take,
whether it has deep-supervision heads, and whether the Teach-Former paper uses it as a teacher.

There is no spec per dimensionality: every network is 2D or 3D as the plans' patch is (nnU-Net's ``2d``
configuration has a (y, x) patch, the 3D ones a (z, y, x) patch), and the patch rules apply per axis.
"""
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence, Tuple

from torch import nn

from nnunet_teachformer.errors import TeachFormerError

# spatial dimensionalities every network takes: nnU-Net's `2d` configuration feeds (B, C, Y, X), the 3D ones
# (B, C, Z, Y, X); a network's dimensionality is that of the plans' patch (len(patch_size))
SPATIAL_DIMS = (2, 3)


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    # builder(num_input_channels, num_classes, patch_size, deep_supervision, **preset) -> nn.Module
    builder: Callable[..., nn.Module]
    presets: Mapping[str, Mapping]
    # every spatial axis of a patch must be a multiple of this
    patch_multiple: int
    role: str  # "teacher" or "student"
    # downsampling factor of the bottleneck: a patch that leaves it a single voxel cannot train
    # (instance normalisation needs more than one spatial element)
    bottleneck_stride: int = 1
    # relative output resolutions of the deep-supervision heads, highest first; None: no heads
    deep_supervision_scales: Optional[Tuple[float, ...]] = None
    reference: str = ""
    notes: str = field(default="", compare=False)

    @property
    def has_deep_supervision(self) -> bool:
        return self.deep_supervision_scales is not None

    def patch_problem(self, patch_size: Sequence[int], dataset: str = "<ID>") -> Optional[str]:
        """Why this network cannot take ``patch_size``, or None if it can (``dataset`` goes into the fix)."""
        if len(patch_size) not in SPATIAL_DIMS:
            return (f"{self.name} is a 2D or 3D network; the configuration's patch {list(patch_size)} has "
                    f"{len(patch_size)} axes, not 2 (nnU-Net's 2d: y, x) or 3 (3d_fullres: z, y, x).")
        bad = [int(p) for p in patch_size if int(p) % self.patch_multiple]
        if bad:
            fixed = [max(self.patch_multiple, round(int(p) / self.patch_multiple) * self.patch_multiple)
                     for p in patch_size]
            return (f"{self.name} needs every patch axis to be a multiple of {self.patch_multiple}, "
                    f"but the plans' patch size is {list(patch_size)}. Plan the dataset with "
                    f"`teachformer plan -d {dataset}` (TeachFormerPlans, multiples of 32) and train with "
                    f"`-p TeachFormerPlans`, or edit the configuration's patch_size in the plans to e.g. {fixed}.")
        if all(int(p) // self.bottleneck_stride <= 1 for p in patch_size):
            return (f"{self.name}'s bottleneck (1/{self.bottleneck_stride} of the patch) would be a single voxel for "
                    f"the patch {list(patch_size)}, and instance normalisation cannot train on one voxel; make at "
                    f"least one axis {2 * self.bottleneck_stride} or larger (TeachFormerPlans does).")
        return None

    def build(self, num_input_channels: int, num_classes: int, patch_size: Sequence[int],
              preset: str = "paper", deep_supervision: bool = False) -> nn.Module:
        if preset not in self.presets:
            raise KeyError(f"{self.name} has no preset {preset!r}; presets: {sorted(self.presets)}")
        problem = self.patch_problem(patch_size)
        if problem:
            raise TeachFormerError(problem)
        return self.builder(num_input_channels, num_classes, tuple(int(p) for p in patch_size),
                            deep_supervision and self.has_deep_supervision, **self.presets[preset])
