"""SwinUNETR teacher: MONAI's ``SwinUNETR`` with distillation taps (Hatamizadeh et al., 2022).

Taps: coarse = ``encoder10`` (bottleneck, 16*feature_size channels at 1/32), fine = ``decoder2``
(second-to-last decoder stage, feature_size channels at 1/2). MONAI >= 1.5 infers the grid from the
input, which must be a multiple of 32 on every axis.

2D or 3D as the plans' patch is (``spatial_dims = len(patch_size)``): MONAI's SwinUNETR builds 2D windows,
patch merging and relative position tables from the same arguments, and an int ``window_size`` (the
presets') is repeated per axis, so the presets serve both; ``depths``/``num_heads`` are per stage, not per axis.
"""
from monai.networks.nets import SwinUNETR

from nnunet_teachformer.networks.precision import NoFP16
from nnunet_teachformer.networks.spec import NetworkSpec
from nnunet_teachformer.networks.taps import Tap


class SwinUNETRNet(NoFP16, SwinUNETR):
    def distillation_taps(self):
        return {"coarse": Tap(self.encoder10), "fine": Tap(self.decoder2)}


def build_swin_unetr(num_input_channels, num_classes, patch_size, deep_supervision, **preset):
    return SwinUNETRNet(in_channels=num_input_channels, out_channels=num_classes,
                        spatial_dims=len(patch_size), **preset)


SWIN_UNETR_SPEC = NetworkSpec(
    name="SwinUNETR",
    builder=build_swin_unetr,
    presets={
        # feature_size 48 is the SwinUNETR paper's BTCV/BraTS model (62.2M parameters at 2 in / 3 out)
        "paper": {"feature_size": 48},
        # MONAI's default width (15.7M)
        "small": {"feature_size": 24},
        # window 4 instead of 7: at 32-voxel token grids a 7-window pads to 35 and costs twice the time
        "tiny": {"feature_size": 12, "depths": (1, 1, 1, 1), "window_size": 4},
    },
    patch_multiple=32,
    role="teacher",
    bottleneck_stride=32,
    reference="Hatamizadeh et al., Swin UNETR, BrainLes 2021 (MONAI implementation)",
)
