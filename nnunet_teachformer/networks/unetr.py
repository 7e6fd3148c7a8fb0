"""UNETR teacher: MONAI's ``UNETR`` with distillation taps (Hatamizadeh et al., WACV 2022).

UNETR's ViT has a fixed grid of 16-voxel patches, so the network is built for exactly the plans'
patch size (nnU-Net's sliding-window inference always feeds that size). Taps: coarse = the last ViT
hidden state reshaped to (hidden_size, D/16, H/16, W/16), read as the input of ``decoder5``;
fine = ``decoder3`` (second-to-last decoder stage, 2*feature_size channels at 1/2).

2D or 3D as the plans' patch is: ``spatial_dims = len(patch_size)`` and ``img_size`` the (y, x) or
(z, y, x) patch; in 2D the ViT sees 16x16 patches and the coarse tap is (hidden_size, Y/16, X/16).
"""
from monai.networks.nets import UNETR

from nnunet_teachformer.networks.precision import NoFP16
from nnunet_teachformer.networks.spec import NetworkSpec
from nnunet_teachformer.networks.taps import Tap


class UNETRNet(NoFP16, UNETR):
    def distillation_taps(self):
        return {"coarse": Tap(self.decoder5, read="input"), "fine": Tap(self.decoder3)}


def build_unetr(num_input_channels, num_classes, patch_size, deep_supervision, **preset):
    return UNETRNet(in_channels=num_input_channels, out_channels=num_classes, img_size=patch_size,
                    spatial_dims=len(patch_size), proj_type="conv", norm_name="instance", **preset)


UNETR_SPEC = NetworkSpec(
    name="UNETR",
    builder=build_unetr,
    presets={
        # the UNETR paper's ViT-B/16: hidden 768, MLP 3072, 12 heads, 12 layers, feature_size 16
        "paper": {"feature_size": 16, "hidden_size": 768, "mlp_dim": 3072, "num_heads": 12},
        "tiny": {"feature_size": 8, "hidden_size": 96, "mlp_dim": 192, "num_heads": 4},
    },
    patch_multiple=16,
    role="teacher",
    bottleneck_stride=16,
    reference="Hatamizadeh et al., UNETR, WACV 2022 (MONAI implementation)",
)
