"""nnU-Net's own U-Net narrowed: the plans' architecture at a fraction of the plans' widths (the U-Net students).

This package's networks are built from the patch alone (``NetworkSpec``); nnU-Net's U-Net is built from the
plans' architecture entry (class, stages, kernels, strides, ``features_per_stage``). ``PlansUNetSpec`` builds
it from a configuration of the plans, keeping class and topology and dividing every stage's width by
``width_divisor`` (by ``TINY_WIDTH_DIVISOR`` more in the ``tiny`` preset), never below ``MIN_FEATURES``. For the
trainers, the report and the model card it stands where a ``NetworkSpec`` stands for the other networks (name,
role, patch rule, deep supervision). Its distillation taps are found automatically
(``networks.taps.distillation_taps_of``).
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence

from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn

TINY_WIDTH_DIVISOR = 8  # the "tiny" preset (CPU tests) of nnU-Net's U-Nets: every stage 1/8 as wide
MIN_FEATURES = 4  # channels per stage, at least
PRESET_DIVISORS = {"paper": 1, "tiny": TINY_WIDTH_DIVISOR}


def narrowed(features_per_stage: Sequence[int], divisor: int) -> List[int]:
    """Every stage's width divided by ``divisor`` (rounded down), at least ``MIN_FEATURES``."""
    return [max(MIN_FEATURES, int(f) // divisor) for f in features_per_stage]


@dataclass(frozen=True)
class PlansUNetSpec:
    width_divisor: int
    role: str = "student"
    patch_multiple: int = 1  # no rule of its own: the plans derive the U-Net's strides from their patch
    has_deep_supervision: bool = True  # a head per decoder stage, as nnU-Net trains it
    reference: str = "Isensee et al., Nature Methods 2021 (nnU-Net), at reduced width"

    @property
    def name(self) -> str:
        return f"nnU-Net U-Net, 1/{self.width_divisor} of the plans' widths"

    def patch_problem(self, patch_size: Sequence[int], dataset: str = "<ID>") -> Optional[str]:
        """None: the plans' U-Net takes the patch the plans were made for."""
        return None

    def features_per_stage(self, planned: Sequence[int], preset: str = "paper") -> List[int]:
        if preset not in PRESET_DIVISORS:
            raise KeyError(f"{self.name} has no preset {preset!r}; presets: {sorted(PRESET_DIVISORS)}")
        return narrowed(planned, self.width_divisor * PRESET_DIVISORS[preset])

    def build(self, configuration_manager, num_input_channels: int, num_classes: int, preset: str = "paper",
              deep_supervision: bool = False) -> nn.Module:
        """The configuration's network (nnU-Net's ``ConfigurationManager``) at this spec's widths."""
        kwargs = dict(configuration_manager.network_arch_init_kwargs)
        kwargs["features_per_stage"] = self.features_per_stage(kwargs["features_per_stage"], preset)
        return get_network_from_plans(configuration_manager.network_arch_class_name, kwargs,
                                      configuration_manager.network_arch_init_kwargs_req_import, num_input_channels,
                                      num_classes, allow_init=True, deep_supervision=deep_supervision)


UNET_R2_SPEC = PlansUNetSpec(2)
UNET_R4_SPEC = PlansUNetSpec(4)
UNET_R8_SPEC = PlansUNetSpec(8)
