"""H-DenseFormer teacher and H-DenseFormer Light student, with distillation taps.

H-DenseFormer (Shi et al., "H-DenseFormer: An Efficient Hybrid Densely Connected Transformer for
Multimodal Tumor Segmentation", MICCAI 2023, arXiv:2307.01486) is the Teach-Former paper's main
teacher, and its narrow variant is the student the paper distils into. Written from the paper's
description, with layer counts and widths checked against the authors' public code
(github.com/shijun18/H-DenseFormer, ``models/HDenseFormer.py``):

* Multi-path Parallel Embedding: one path per input modality (2 for PET/CT, 3 for MRI). Each path
  embeds its channel in 16^3 patches (stride-16 convolution to ``embed_dim`` = 4 nf channels), adds
  a learned position embedding and runs ``transformer_depth / dense_layers`` Densely Connected
  Transformer (DCT) blocks. A DCT block has ``dense_layers`` (4) layers; layer i projects the
  concatenation of the block input and all earlier layer outputs to ``growth_rate`` (32) channels,
  then applies pre-norm multi-head self-attention (8 heads) and a pre-norm MLP (2x growth), each
  with a residual; an MLP maps the final concatenation back to ``embed_dim``. "Depth 24" in the
  paper counts dense layers, i.e. 6 DCT blocks.
* The paths' outputs are concatenated and pass four conv + InstanceNorm + ReLU + 2x trilinear
  upsampling steps, giving context maps at 1/8, 1/4, 1/2 and 1 of the input with 8nf, 4nf, 2nf, nf
  channels; each is added to the output of the CNN encoder level of the same size.
* CNN encoder: 4 levels of double 3^3 conv + InstanceNorm + ReLU (widths nf, 2nf, 4nf, 8nf),
  max-pooling between levels; the last level (1/8) is the bottleneck.
* Decoder: per level a 3^3 stride-2 transposed convolution, concatenation with the encoder skip,
  double conv; 1x1 segmentation heads at full resolution and, for deep supervision, on the decoder
  at 1/2 and 1/4 and on the bottleneck at 1/8.

Every axis of the input must be a multiple of 16 (the patch embedding; the encoder needs 8). The
position embedding is learned for the grid of the plans' patch size; other admissible sizes (e.g.
whole-volume inference) use a trilinearly (2D: bilinearly) resized copy of it.

Parameters at 2 input channels, 2 classes: ``paper`` (nf 32, depth 24) 11.56M, as the authors' code
(11,561,288) and the Teach-Former paper. H-DenseFormer Light narrows only the widths tied to nf:
the CNN encoder/decoder and context maps (nf 32 -> 8, i.e. 32..256 -> 8..64 channels) and the
transformer embedding (4 nf: 128 -> 32); transformer depth (24), growth rate (32) and heads (8)
stay. That gives 1.57M, 2.8 % above the Teach-Former paper's 1.53M; 11.56 / 1.57 = 7.4 is the
paper's "7.4x fewer than the teacher" (11.56 / 1.53 would be 7.6). No depth that is a multiple of 4
lands on 1.53M exactly at nf 8 (depth 20 gives 1.46M), so nf 8 / depth 24 is the closest reading.

Deviations from the authors' code, none of which changes the parameter count:

* their dense layer applies its MLP a second time (without residual) to the feature it passes on;
  here, as the paper describes, a layer passes on its output;
* their position embedding starts at zero; here a truncated normal (std 0.02), as in ViT;
* neither the paper nor the code has a channel-attention module in the decoder (the "lightweight"
  part of H-DenseFormer is the DCT block), so there is none here.

Taps: coarse = ``bottleneck_tap`` (encoder level 4 plus its transformer context: 8 nf channels at
1/8, what the decoder and the 1/8 head receive); fine = ``decoder[1]`` (second-to-last decoder
stage: 2 nf channels at 1/2).

2D (nnU-Net's ``2d`` configuration, a (y, x) patch): the same network with 2D layers, chosen by
``len(patch_size)`` from ``LAYERS``. The authors' 2D variant (``models/HDenseFormer_2D.py``, used for
their PI-CAI22 configuration in ``config.py``: ``HDenseFormer_2D_32``, i.e. nf 32, transformer depth
24, 3 input channels, 2 classes, 384x384 slices) differs from the 3D one only in the
dimensionality of its layers: 16x16 patch embedding to 4 nf channels, one path per modality, the same
DCT blocks (depth / 4 blocks of 4 dense layers, growth 32, 8 heads, MLP 2x growth), a 2D learned
position embedding over the (Y/16, X/16) grid, the context path as conv + InstanceNorm + ReLU + 2x
bilinear upsampling to 1/8..1, the 2D encoder/decoder with the same widths, max-pooling and 3x3
stride-2 transposed convolutions, and the same four heads (full resolution, decoder at 1/2 and 1/4,
bottleneck at 1/8). Hence the same presets, taps and deep-supervision scales here; only the
parameters of the convolutions and of the position embedding change with the dimensionality: ``paper``
in 2D at 3 in / 2 classes / 384x384 has 5.20M (5,197,032, equal to a count of the authors' 2D layer
list), the Light preset 1.31M.
"""
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_teachformer.networks.precision import NoFP16
from nnunet_teachformer.networks.spec import NetworkSpec
from nnunet_teachformer.networks.taps import Tap

PATCH = 16  # edge of the transformer's patch embedding, in voxels


class Layers(NamedTuple):
    """The layer types of one spatial dimensionality."""
    conv: type
    norm: type
    pool: type
    conv_transpose: type
    interpolation: str  # F.interpolate / nn.Upsample mode


# by the number of spatial dimensions: nnU-Net's 2d configuration (B, C, Y, X) and 3d ones (B, C, Z, Y, X)
LAYERS = {
    2: Layers(nn.Conv2d, nn.InstanceNorm2d, nn.MaxPool2d, nn.ConvTranspose2d, "bilinear"),
    3: Layers(nn.Conv3d, nn.InstanceNorm3d, nn.MaxPool3d, nn.ConvTranspose3d, "trilinear"),
}


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


def mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, out_dim), nn.Dropout(dropout))


class DenseLayer(nn.Module):
    """Projects the dense concatenation to ``growth`` channels, then attention and MLP with residuals."""

    def __init__(self, in_dim: int, growth: int, heads: int, dropout: float):
        super().__init__()
        self.reduce = nn.Linear(in_dim, growth)
        self.norm1 = nn.LayerNorm(growth)
        self.attn = SelfAttention(growth, heads, dropout)
        self.norm2 = nn.LayerNorm(growth)
        self.mlp = mlp(growth, 2 * growth, growth, dropout)

    def forward(self, x):
        x = self.reduce(x)
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DCTBlock(nn.Module):
    """Densely Connected Transformer block: every layer sees the block input and all earlier outputs."""

    def __init__(self, dim: int, growth: int, layers: int, heads: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(dim + i * growth, growth, heads, dropout) for i in range(layers))
        self.fuse = mlp(dim + layers * growth, 2 * growth, dim, dropout)

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=-1)))
        return self.fuse(torch.cat(features, dim=-1))


class ModalityPath(nn.Module):
    """One path of the Multi-path Parallel Embedding: a single channel -> (B, embed_dim, D/16, H/16, W/16)
    (in 2D: (B, embed_dim, Y/16, X/16))."""

    def __init__(self, embed_dim: int, grid: Tuple[int, ...], blocks: int, growth: int, layers: int,
                 heads: int, dropout: float):
        super().__init__()
        self.interpolation = LAYERS[len(grid)].interpolation
        self.patch_embed = LAYERS[len(grid)].conv(1, embed_dim, kernel_size=PATCH, stride=PATCH)
        self.pos_embed = nn.Parameter(torch.empty(1, embed_dim, *grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*(DCTBlock(embed_dim, growth, layers, heads, dropout) for _ in range(blocks)))

    def forward(self, x):
        x = self.patch_embed(x)
        grid = x.shape[2:]
        pos = self.pos_embed
        if pos.shape[2:] != grid:
            pos = F.interpolate(pos, size=grid, mode=self.interpolation, align_corners=False)
        tokens = self.drop((x + pos).flatten(2).transpose(1, 2))
        return self.blocks(tokens).transpose(1, 2).reshape(x.shape)


class ContextUp(nn.Sequential):
    """Conv + InstanceNorm + ReLU, then 2x tri-/bilinear upsampling: carries transformer context down the levels."""

    def __init__(self, in_ch: int, out_ch: int, dims: int = 3):
        ops = LAYERS[dims]
        super().__init__(ops.conv(in_ch, out_ch, 3, padding=1), ops.norm(out_ch), nn.ReLU(inplace=True),
                         nn.Upsample(scale_factor=2, mode=ops.interpolation, align_corners=False))


class DoubleConv(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, dims: int = 3):
        ops = LAYERS[dims]
        layers = []
        for c_in in (in_ch, out_ch):
            layers += [ops.conv(c_in, out_ch, 3, padding=1, bias=False), ops.norm(out_ch, affine=True),
                       nn.ReLU(inplace=True)]
        super().__init__(*layers)


class DecoderStage(nn.Module):
    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, dims: int = 3):
        super().__init__()
        self.up = LAYERS[dims].conv_transpose(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1)
        self.conv = DoubleConv(out_ch + skip_ch, out_ch, dims)

    def forward(self, x, skip):
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class HDenseFormer(NoFP16):
    def __init__(self, in_channels: int, num_classes: int, patch_size: Sequence[int], deep_supervision: bool = False,
                 base_filters: int = 32, transformer_depth: int = 24, dense_layers: int = 4, growth_rate: int = 32,
                 num_heads: int = 8, embed_dim: Optional[int] = None, dropout: float = 0.5):
        super().__init__()
        if transformer_depth % dense_layers:
            raise ValueError(f"transformer_depth {transformer_depth} must be a multiple of dense_layers {dense_layers}")
        check_size(patch_size)
        self.spatial_dims = dims = len(patch_size)
        ops = LAYERS[dims]
        nf = base_filters
        embed_dim = embed_dim or 4 * nf
        grid = tuple(int(p) // PATCH for p in patch_size)
        self.deep_supervision = deep_supervision
        self.paths = nn.ModuleList(
            ModalityPath(embed_dim, grid, transformer_depth // dense_layers, growth_rate, dense_layers, num_heads,
                         dropout) for _ in range(in_channels))
        # context maps at 1/8, 1/4, 1/2, 1
        self.context = nn.ModuleList([ContextUp(in_channels * embed_dim, 8 * nf, dims), ContextUp(8 * nf, 4 * nf, dims),
                                      ContextUp(4 * nf, 2 * nf, dims), ContextUp(2 * nf, nf, dims)])
        widths = (nf, 2 * nf, 4 * nf, 8 * nf)
        self.encoder = nn.ModuleList(DoubleConv(c_in, c_out, dims)
                                     for c_in, c_out in zip((in_channels,) + widths, widths))
        self.pool = ops.pool(2)
        self.bottleneck_tap = nn.Identity()
        self.decoder = nn.ModuleList([DecoderStage(8 * nf, 4 * nf, 4 * nf, dims),
                                      DecoderStage(4 * nf, 2 * nf, 2 * nf, dims), DecoderStage(2 * nf, nf, nf, dims)])
        self.head = ops.conv(nf, num_classes, 1)
        # deep-supervision heads on the bottleneck (1/8) and the decoder at 1/4 and 1/2
        self.aux_heads = nn.ModuleList(ops.conv(c, num_classes, 1) for c in (8 * nf, 4 * nf, 2 * nf))

    def forward(self, x) -> Union[torch.Tensor, List[torch.Tensor]]:
        check_size(x.shape[2:], self.spatial_dims)
        h = torch.cat([path(x[:, i:i + 1]) for i, path in enumerate(self.paths)], dim=1)
        contexts = []
        for up in self.context:
            h = up(h)
            contexts.append(h)
        skips = []
        h = x
        for level, (stage, context) in enumerate(zip(self.encoder, reversed(contexts))):
            h = stage(self.pool(h) if level else h) + context
            skips.append(h)
        h = self.bottleneck_tap(skips.pop())
        outputs = []
        for stage, aux_head in zip(self.decoder, self.aux_heads):
            if self.deep_supervision:
                outputs.append(aux_head(h))
            h = stage(h, skips.pop())
        logits = self.head(h)
        if not self.deep_supervision:
            return logits
        return [logits] + outputs[::-1]

    def distillation_taps(self):
        return {"coarse": Tap(self.bottleneck_tap), "fine": Tap(self.decoder[1])}


def check_size(spatial: Sequence[int], dims: Optional[int] = None) -> None:
    """``spatial`` must have ``dims`` axes (2 or 3 when None), each a positive multiple of the patch embedding."""
    wanted = (dims,) if dims else tuple(LAYERS)
    if len(spatial) not in wanted or any(int(s) % PATCH or int(s) <= 0 for s in spatial):
        kind = " or ".join(f"{d}D" for d in wanted)
        raise ValueError(f"H-DenseFormer needs a {kind} input whose axes are positive multiples of {PATCH}, "
                         f"got {list(spatial)}")


def build_hdenseformer(num_input_channels, num_classes, patch_size, deep_supervision, **preset):
    return HDenseFormer(num_input_channels, num_classes, patch_size, deep_supervision, **preset)


_REFERENCE = ("Shi et al., H-DenseFormer: An Efficient Hybrid Densely Connected Transformer for Multimodal Tumor "
              "Segmentation, MICCAI 2023 (github.com/shijun18/H-DenseFormer)")

HDENSEFORMER_SPEC = NetworkSpec(
    name="H-DenseFormer",
    builder=build_hdenseformer,
    presets={
        # HECKTOR21 configuration of the H-DenseFormer paper: 11.56M parameters at 2 in / 2 out
        "paper": {"base_filters": 32, "transformer_depth": 24},
        # CPU tests and the demo: narrow but still learns the phantom within ~100 iterations
        "tiny": {"base_filters": 16, "transformer_depth": 4, "growth_rate": 16, "num_heads": 2},
    },
    patch_multiple=PATCH,
    role="teacher",
    bottleneck_stride=8,
    deep_supervision_scales=(1, 0.5, 0.25, 0.125),
    reference=_REFERENCE,
)

HDENSEFORMER_LIGHT_SPEC = NetworkSpec(
    name="H-DenseFormer Light",
    builder=build_hdenseformer,
    presets={
        # the Teach-Former student: nf 32 -> 8 (embedding 128 -> 32), same transformer depth; 1.57M
        "paper": {"base_filters": 8, "transformer_depth": 24},
        # nf 8 is the narrowest that learns the phantom quickly (nf 2-4 stayed at Dice 0 for 150 iterations)
        "tiny": {"base_filters": 8, "transformer_depth": 4, "growth_rate": 8, "num_heads": 2},
    },
    patch_multiple=PATCH,
    role="student",
    bottleneck_stride=8,
    deep_supervision_scales=(1, 0.5, 0.25, 0.125),
    reference=_REFERENCE + "; narrow student of Teach-Former",
)
