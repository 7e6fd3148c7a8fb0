"""3D UX-Net (Lee et al., "3D UX-Net: A Large Kernel Volumetric ConvNet Modernizing Hierarchical
Transformer for Medical Image Segmentation", ICLR 2023) with distillation taps.

The Teach-Former paper trains a light 3D UX-Net as a student; the full-width network is teacher-sized
and is kept as a teacher-role architecture (and as the undistilled reference for the light student).
MONAI has no 3D UX-Net, so this module implements it from the paper's description:

* Encoder (a volumetric ConvNeXt): a 7^3 stride-2 stem conv + LayerNorm, then four stages of
  ``depths[i]`` UX blocks at 1/2, 1/4, 1/8 and 1/16 resolution with ``widths[i]`` channels, separated
  by LayerNorm + 2^3 stride-2 convs. A UX block is a depthwise 7^3 conv, LayerNorm, the paper's
  "depthwise convolution scaling" (a 4x-expansion pointwise MLP whose 1^3 convs are grouped per input
  channel instead of fully connected), GELU, layer scale and a residual connection. Every stage
  output is LayerNormed before it leaves the encoder.
* Decoder (UNETR-style, built on MONAI's ``UnetrBasicBlock``/``UnetrUpBlock`` with residual units and
  instance norm): a residual block lifts each stage output (and the raw input, at full resolution)
  to the width of the skip connection; the 1/16 stage is lifted to ``hidden_size`` channels (the
  bottleneck); four up blocks return to full resolution, then one more residual block and a 1^3
  conv give the logits. No deep supervision.

The bottleneck sits at 1/16, so every patch axis must be a multiple of 16.

2D (nnU-Net's ``2d`` configuration, a (y, x) patch): the same network as a 2D UX-Net, chosen by
``len(patch_size)``: depthwise 7x7 convs, 7x7 stride-2 stem, 2x2 stride-2 downsampling, the same widths,
depths and hidden size, and MONAI's blocks with ``spatial_dims=2``; same taps (at 1/16 and 1/2).

Taps: coarse = ``bottleneck`` (``hidden_size`` channels at 1/16), fine = ``up_blocks[2]``, the
decoder stage at 1/2 resolution (``widths[1]`` channels) just before the one that restores full
resolution.

Presets (parameters at 2 input channels / 3 classes, measured with this code):

* ``UXNET_SPEC`` "paper": the paper's widths 48-96-192-384, depth 2 per stage, hidden 768 (53.0M).
* ``UXNET_LIGHT_SPEC`` "paper": the same structure with every width divided by 4: widths 12-24-48-96,
  hidden 192, depths kept at 2 (3.4M: 15.5x fewer parameters and 15x fewer FLOPs than the full model).
  The Teach-Former authors released no code, and we know no width for their light UX-Net; their
  students are several times smaller than the teachers (H-DenseFormer Light 1.53M vs SwinUNETR 62M,
  UNETR 96M, H-DenseFormer 11.6M), and this width puts the light UX-Net in that range. 97% of the
  full model's parameters are in the dense convs of the UNETR-style blocks, which scale with width
  squared, so slimming the widths is what makes the network light; the depthwise encoder blocks are
  cheap, and keeping two per stage keeps the large-kernel receptive field that defines the architecture.
"""
from typing import Sequence

import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrUpBlock
from torch import nn

from nnunet_teachformer.networks.precision import NoFP16
from nnunet_teachformer.networks.spec import NetworkSpec
from nnunet_teachformer.networks.taps import Tap

LAYER_NORM_EPS = 1e-6
CONV = {2: nn.Conv2d, 3: nn.Conv3d}  # by the number of spatial dimensions (len(patch_size))


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of a (B, C, D, H, W) or (B, C, Y, X) tensor."""

    def __init__(self, channels: int):
        super().__init__(channels, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class UXBlock(nn.Module):
    """Depthwise large-kernel conv, LayerNorm, per-channel pointwise MLP, layer scale, residual."""

    def __init__(self, channels: int, kernel_size: int = 7, expansion: int = 4, layer_scale_init: float = 1e-6,
                 spatial_dims: int = 3):
        super().__init__()
        conv = CONV[spatial_dims]
        self.depthwise = conv(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.norm = ChannelLayerNorm(channels)
        # "depthwise convolution scaling": groups=channels, so each channel is expanded to `expansion`
        # features and reduced back on its own, instead of a fully connected MLP mixing all channels
        self.expand = conv(channels, expansion * channels, 1, groups=channels)
        self.act = nn.GELU()
        self.reduce = conv(expansion * channels, channels, 1, groups=channels)
        self.layer_scale = nn.Parameter(torch.full((channels,), float(layer_scale_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.reduce(self.act(self.expand(self.norm(self.depthwise(x)))))
        return x + self.layer_scale.view(1, -1, *(1,) * (x.ndim - 2)) * y


class UXNetEncoder(nn.Module):
    """Stem + four UX stages; returns the LayerNormed output of every stage (1/2, 1/4, 1/8, 1/16)."""

    def __init__(self, in_channels: int, widths: Sequence[int], depths: Sequence[int], kernel_size: int,
                 spatial_dims: int = 3):
        super().__init__()
        conv = CONV[spatial_dims]
        stem = nn.Sequential(conv(in_channels, widths[0], 7, stride=2, padding=3), ChannelLayerNorm(widths[0]))
        self.downsample = nn.ModuleList(
            [stem] + [nn.Sequential(ChannelLayerNorm(c_in), conv(c_in, c_out, 2, stride=2))
                      for c_in, c_out in zip(widths[:-1], widths[1:])])
        self.stages = nn.ModuleList(
            nn.Sequential(*(UXBlock(c, kernel_size, spatial_dims=spatial_dims) for _ in range(d)))
            for c, d in zip(widths, depths))
        self.out_norms = nn.ModuleList(ChannelLayerNorm(c) for c in widths)

    def forward(self, x: torch.Tensor):
        outputs = []
        for down, stage, norm in zip(self.downsample, self.stages, self.out_norms):
            x = stage(down(x))
            outputs.append(norm(x))
        return outputs


class UXNet(NoFP16):
    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int] = (48, 96, 192, 384),
                 hidden_size: int = 768, depths: Sequence[int] = (2, 2, 2, 2), kernel_size: int = 7,
                 norm_name: str = "instance", spatial_dims: int = 3):
        super().__init__()
        if len(widths) != 4 or len(depths) != 4:
            raise ValueError(f"3D UX-Net has four stages; got widths {list(widths)} and depths {list(depths)}")
        if spatial_dims not in CONV:
            raise ValueError(f"UX-Net is 2D or 3D, not {spatial_dims}D")
        self.deep_supervision = False  # interface uniformity with the deep-supervised networks; unused
        self.spatial_dims = spatial_dims

        def basic(c_in, c_out):
            return UnetrBasicBlock(spatial_dims, c_in, c_out, kernel_size=3, stride=1, norm_name=norm_name,
                                   res_block=True)

        def up(c_in, c_out):
            return UnetrUpBlock(spatial_dims, c_in, c_out, kernel_size=3, upsample_kernel_size=2, norm_name=norm_name,
                                res_block=True)

        self.encoder = UXNetEncoder(in_channels, widths, depths, kernel_size, spatial_dims)
        # skip connections at 1, 1/2, 1/4, 1/8: the raw input, then the first three stage outputs
        self.skip_blocks = nn.ModuleList(
            [basic(in_channels, widths[0])] + [basic(c_in, c_out) for c_in, c_out in zip(widths[:-1], widths[1:])])
        self.bottleneck = basic(widths[3], hidden_size)
        # up to 1/8, 1/4, 1/2, 1
        self.up_blocks = nn.ModuleList(
            [up(hidden_size, widths[3])] + [up(c_in, c_out) for c_in, c_out in zip(widths[:0:-1], widths[-2::-1])])
        self.final_block = basic(widths[0], widths[0])
        self.out = UnetOutBlock(spatial_dims, widths[0], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stages = self.encoder(x)
        skips = [self.skip_blocks[0](x)] + [block(s) for block, s in zip(self.skip_blocks[1:], stages[:3])]
        y = self.bottleneck(stages[3])
        for block, skip in zip(self.up_blocks, reversed(skips)):
            y = block(y, skip)
        return self.out(self.final_block(y))

    def distillation_taps(self):
        return {"coarse": Tap(self.bottleneck), "fine": Tap(self.up_blocks[2])}


def build_uxnet(num_input_channels, num_classes, patch_size, deep_supervision, **preset):
    return UXNet(num_input_channels, num_classes, **preset, spatial_dims=len(patch_size))


_REFERENCE = ("Lee et al., 3D UX-Net: A Large Kernel Volumetric ConvNet Modernizing Hierarchical Transformer "
              "for Medical Image Segmentation, ICLR 2023 (own implementation)")

UXNET_SPEC = NetworkSpec(
    name="3D UX-Net",
    builder=build_uxnet,
    presets={
        # the paper's model: widths 48-96-192-384, depth 2 per stage, hidden 768 (53.0M at 2 in / 3 out)
        "paper": {"widths": (48, 96, 192, 384), "hidden_size": 768},
        "tiny": {"widths": (4, 8, 16, 32), "hidden_size": 32, "depths": (1, 1, 1, 1)},
    },
    patch_multiple=16,
    role="teacher",
    bottleneck_stride=16,
    reference=_REFERENCE,
)

UXNET_LIGHT_SPEC = NetworkSpec(
    name="3D UX-Net Light",
    builder=build_uxnet,
    presets={
        # every width of the paper's model / 4, depths kept (3.4M at 2 in / 3 out); see the module docstring
        "paper": {"widths": (12, 24, 48, 96), "hidden_size": 192},
        # depths kept, as in the paper preset
        "tiny": {"widths": (4, 8, 16, 32), "hidden_size": 32},
    },
    patch_multiple=16,
    role="student",
    bottleneck_stride=16,
    reference=_REFERENCE,
)
