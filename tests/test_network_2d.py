"""The 2D arm: every network is built from its one spec and preset with a 2D (y, x) patch (nnU-Net's ``2d``
configuration) and then takes (B, C, Y, X) tensors; shapes, taps, deep supervision, gradients, patch rules.

``python tests/test_network_2d.py`` prints the paper presets' parameters and GFLOPs in 2D (384x384, the
H-DenseFormer authors' PI-CAI slices) next to 3D (128^3, 64^3): 3 input channels, 2 classes, batch 1.
"""
import pytest
import torch
from torch import nn

from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.networks.registry import NETWORKS
from nnunet_teachformer.networks.taps import capture_taps

CHANNELS, CLASSES = 3, 2
PATCH = (64, 64)  # a multiple of 32 (SwinUNETR) that leaves every bottleneck more than one pixel
PATCH_3D = (64, 32, 32)

# documented tap channels per network, from its preset: (coarse = bottleneck E_n, fine = decoder D_{n-1})
TAP_CHANNELS = {
    "hdenseformer": lambda p: (8 * p["base_filters"], 2 * p["base_filters"]),
    "hdenseformer_light": lambda p: (8 * p["base_filters"], 2 * p["base_filters"]),
    "swinunetr": lambda p: (16 * p["feature_size"], p["feature_size"]),
    "unetr": lambda p: (p["hidden_size"], 2 * p["feature_size"]),
    "uxnet": lambda p: (p["hidden_size"], p["widths"][1]),
    "uxnet_light": lambda p: (p["hidden_size"], p["widths"][1]),
}
# MONAI's ViT blocks create a cross-attention norm even without cross-attention (3D alike): it gets no gradient
UNUSED = ("norm_cross_attn",)


def tiny_2d(key, patch=PATCH, deep_supervision=False, seed=0):
    torch.manual_seed(seed)
    return NETWORKS[key].build(CHANNELS, CLASSES, patch, preset="tiny", deep_supervision=deep_supervision)


def conv_dims(net):
    return {m.weight.ndim - 2 for m in net.modules() if isinstance(m, nn.modules.conv._ConvNd)}


def test_every_network_has_a_tap_table_entry():
    assert set(TAP_CHANNELS) == set(NETWORKS)


@pytest.mark.parametrize("key", NETWORKS)
def test_2d_forward_taps_deep_supervision_and_gradients(key):
    spec = NETWORKS[key]
    net = tiny_2d(key, deep_supervision=True).train()
    assert conv_dims(net) == {2}
    x = torch.randn(2, CHANNELS, *PATCH)
    with capture_taps(net) as feats:
        out = net(x)
    outs = out if isinstance(out, list) else [out]
    assert outs[0].shape == (2, CLASSES, *PATCH)
    if spec.has_deep_supervision:
        assert len(outs) == len(spec.deep_supervision_scales)
        for o, scale in zip(outs, spec.deep_supervision_scales):
            assert o.shape == (2, CLASSES, *(int(p * scale) for p in PATCH))
    else:
        assert isinstance(out, torch.Tensor)

    coarse_c, fine_c = TAP_CHANNELS[key](spec.presets["tiny"])
    assert feats["coarse"].shape == (2, coarse_c, *(p // spec.bottleneck_stride for p in PATCH))
    assert feats["fine"].shape == (2, fine_c, *(p // 2 for p in PATCH))
    assert feats["coarse"].requires_grad and feats["fine"].requires_grad

    (sum(o.square().mean() for o in outs) + feats["coarse"].square().mean()).backward()
    params = dict(net.named_parameters())
    missing = [n for n, p in params.items() if p.grad is None and not any(u in n for u in UNUSED)]
    not_finite = [n for n, p in params.items() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not missing and not not_finite, (missing, not_finite)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


@pytest.mark.parametrize("key", NETWORKS)
def test_2d_eval_output_is_untouched_by_taps_and_keeps_the_3d_module_names(key):
    net = tiny_2d(key).eval()
    x = torch.randn(1, CHANNELS, *PATCH)
    with torch.inference_mode():
        plain = net(x)
        with capture_taps(net) as feats:
            tapped = net(x)
    assert torch.equal(plain, tapped) and feats["coarse"].ndim == feats["fine"].ndim == 4
    # same spec, same structure: only the kernels' (and position embeddings') dimensionality differs
    net_3d = NETWORKS[key].build(CHANNELS, CLASSES, PATCH_3D, preset="tiny")
    assert conv_dims(net_3d) == {3}
    assert set(net.state_dict()) == set(net_3d.state_dict())


@pytest.mark.parametrize("key", ["hdenseformer", "hdenseformer_light"])
def test_hdenseformer_2d_non_square_patch_and_other_input_sizes(key):
    spec = NETWORKS[key]
    net = tiny_2d(key, patch=(32, 64), deep_supervision=True)
    assert net.paths[0].pos_embed.shape[2:] == (2, 4)
    outs = net(torch.randn(1, CHANNELS, 32, 64))
    assert [o.shape[2:] for o in outs] == [(int(32 * s), int(64 * s)) for s in spec.deep_supervision_scales]
    # another admissible size uses a bilinearly resized position embedding
    outs = net(torch.randn(1, CHANNELS, 48, 32))
    assert outs[0].shape == (1, CLASSES, 48, 32)
    outs[0].mean().backward()
    assert net.paths[0].pos_embed.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="2D input whose axes are positive multiples of 16"):
        net(torch.randn(1, CHANNELS, 16, 32, 32))
    with pytest.raises(ValueError, match="multiples of 16"):
        net(torch.randn(1, CHANNELS, 32, 40))


def test_a_3d_spec_still_builds_3d():
    for key, spec in NETWORKS.items():
        net = spec.build(2, 2, PATCH_3D, preset="tiny")
        assert conv_dims(net) == {3}, key
    net = NETWORKS["uxnet_light"].build(2, 2, PATCH_3D, preset="tiny")
    with capture_taps(net) as feats:
        assert net(torch.randn(1, 2, *PATCH_3D)).shape == (1, 2, *PATCH_3D)
    assert feats["coarse"].ndim == feats["fine"].ndim == 5


@pytest.mark.parametrize("key", NETWORKS)
def test_2d_patch_rules(key):
    spec = NETWORKS[key]
    m, s = spec.patch_multiple, spec.bottleneck_stride
    assert spec.patch_problem(PATCH) is None
    off = (PATCH[0], PATCH[1] + m // 2)
    problem = spec.patch_problem(off, dataset="7")
    assert problem and f"multiple of {m}" in problem and str(list(off)) in problem
    with pytest.raises(TeachFormerError):
        spec.build(CHANNELS, CLASSES, off, preset="tiny")
    # the bottleneck rule, in 2D as in 3D: refused when every axis leaves one pixel, fine when one axis leaves two
    if s >= m:  # (H-DenseFormer's 1/8 bottleneck is never one pixel: its axes are multiples of 16)
        problem = spec.patch_problem((s, s))
        assert problem and "single voxel" in problem
    assert spec.patch_problem((max(s, m), 2 * max(s, m))) is None
    for patch in [(64,), (32, 32, 32, 32)]:
        problem = spec.patch_problem(patch)
        assert problem and "2D or 3D network" in problem and f"{len(patch)} axes" in problem
        with pytest.raises(TeachFormerError, match="2D or 3D"):
            spec.build(CHANNELS, CLASSES, patch, preset="tiny")


def paper_summary(patches=((384, 384), (128, 128, 128), (64, 64, 64)), channels=CHANNELS, classes=CLASSES):
    """Markdown table: parameters (M) and GFLOPs of every network's paper preset, per patch (n/a: refused)."""
    from nnunet_teachformer.evaluation.complexity import measure_complexity

    def name(patch):
        return f"{patch[0]}^3" if len(patch) == 3 and len(set(patch)) == 1 else "x".join(map(str, patch))
    header = ["network", "role"] + [f"{h} @ {name(p)}" for p in patches for h in ("params (M)", "GFLOPs")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, spec in NETWORKS.items():
        row = [spec.name, spec.role]
        for patch in patches:
            if spec.patch_problem(patch):
                row += ["n/a", "n/a"]
                continue
            c = measure_complexity(lambda: spec.build(channels, classes, patch, preset="paper"),
                                   (1, channels, *patch))
            row += [f"{c.parameters / 1e6:.2f}", f"{c.gflops:.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(f"paper presets, {CHANNELS} input channels, {CLASSES} classes, batch 1, 1 multiply-add = 2 FLOPs\n")
    print(paper_summary())
