"""H-DenseFormer and its Light student: shapes, deep supervision, taps, sizes, checkpoints, odd inputs."""
import pytest
import torch

from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.networks.hdenseformer import HDENSEFORMER_LIGHT_SPEC, HDENSEFORMER_SPEC
from nnunet_teachformer.networks.taps import capture_taps

SPECS = [HDENSEFORMER_SPEC, HDENSEFORMER_LIGHT_SPEC]
PATCH = (32, 32, 32)


def tiny(spec, channels=2, classes=2, deep_supervision=False, seed=0):
    torch.manual_seed(seed)
    return spec.build(channels, classes, PATCH, preset="tiny", deep_supervision=deep_supervision)


def nf(spec, preset="tiny"):
    return spec.presets[preset]["base_filters"]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_forward_backward_reaches_every_parameter(spec):
    net = tiny(spec, classes=3, deep_supervision=True)
    net.deep_supervision = False
    x = torch.randn(2, 2, *PATCH)
    out = net(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, *PATCH)
    net.deep_supervision = True
    outs = net(x)
    sum(o.square().mean() for o in outs).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_deep_supervision_outputs_follow_the_spec_scales(spec):
    net = tiny(spec, deep_supervision=True)
    outs = net(torch.randn(1, 2, 32, 64, 48))
    assert isinstance(outs, list) and len(outs) == len(spec.deep_supervision_scales) == 4
    for out, scale in zip(outs, spec.deep_supervision_scales):
        assert out.shape == (1, 2, int(32 * scale), int(64 * scale), int(48 * scale))
    assert isinstance(tiny(spec, deep_supervision=False)(torch.randn(1, 2, *PATCH)), torch.Tensor)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_taps_have_documented_shapes_and_leave_output_unchanged(spec):
    net = tiny(spec).eval()
    torch.manual_seed(1)
    x = torch.randn(2, 2, *PATCH)
    with torch.no_grad():
        plain = net(x)
        with capture_taps(net) as feats:
            tapped = net(x)
    assert torch.equal(plain, tapped)
    c = nf(spec)
    assert feats["coarse"].shape == (2, 8 * c, 4, 4, 4)  # bottleneck E_n at 1/8
    assert feats["fine"].shape == (2, 2 * c, 16, 16, 16)  # D_{n-1} at 1/2
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_taps_under_inference_mode_and_autograd(spec):
    net = tiny(spec, deep_supervision=True)
    x = torch.randn(1, 2, *PATCH)
    with torch.inference_mode(), capture_taps(net.eval()) as feats:
        net(x)
    assert feats["coarse"].is_inference() and feats["fine"].shape[1] == 2 * nf(spec)

    net.train()
    with capture_taps(net) as feats:
        net(x)
    feats["coarse"].square().mean().backward()
    assert net.paths[0].patch_embed.weight.grad.abs().sum() > 0  # through the transformer context
    assert net.encoder[0][0].weight.grad.abs().sum() > 0
    assert net.decoder[0].up.weight.grad is None  # the decoder comes after the coarse tap
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def _params(spec):
    net = spec.build(2, 2, (144, 144, 144), preset="paper")
    return sum(p.numel() for p in net.parameters()), net


def test_paper_sizes_match_the_papers():
    teacher, net = _params(HDENSEFORMER_SPEC)
    light, _ = _params(HDENSEFORMER_LIGHT_SPEC)
    assert abs(teacher / 11.56e6 - 1) < 0.05, teacher
    assert abs(light / 1.53e6 - 1) < 0.20, light
    assert 7.0 < teacher / light < 7.8  # "7.4x fewer parameters than the teacher"
    # H-DenseFormer's published configuration: depth 24 = 6 DCT blocks of 4 dense layers, growth 32, 8 heads
    path = net.paths[0]
    assert len(net.paths) == 2 and len(path.blocks) == 6
    assert path.pos_embed.shape == (1, 128, 9, 9, 9)
    layers = path.blocks[0].layers
    assert [layer.reduce.in_features for layer in layers] == [128, 160, 192, 224]
    assert all(layer.reduce.out_features == 32 and layer.attn.heads == 8 for layer in layers)
    assert [stage[0].out_channels for stage in net.encoder] == [32, 64, 128, 256]


def test_state_dict_round_trip_gives_identical_outputs():
    net = tiny(HDENSEFORMER_LIGHT_SPEC, seed=0).eval()
    fresh = tiny(HDENSEFORMER_LIGHT_SPEC, seed=1).eval()
    x = torch.randn(1, 2, *PATCH)
    with torch.no_grad():
        assert not torch.equal(net(x), fresh(x))
        fresh.load_state_dict(net.state_dict())
        assert torch.equal(net(x), fresh(x))


def test_three_modalities_get_three_paths():
    net = tiny(HDENSEFORMER_SPEC, channels=3, classes=4, deep_supervision=True)
    assert len(net.paths) == 3
    outs = net(torch.randn(1, 3, *PATCH))
    assert [o.shape[1] for o in outs] == [4] * 4 and outs[0].shape[2:] == PATCH


def test_other_input_sizes_resize_the_position_embedding():
    net = tiny(HDENSEFORMER_SPEC)
    out = net(torch.randn(1, 2, 64, 32, 48))
    assert out.shape == (1, 2, 64, 32, 48)
    out.mean().backward()
    assert net.paths[1].pos_embed.grad.abs().sum() > 0
    assert net.paths[1].pos_embed.shape[2:] == (2, 2, 2)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_patches_that_are_not_multiples_of_16_are_refused(spec):
    assert spec.patch_multiple == 16
    assert spec.patch_problem((32, 64, 48)) is None
    problem = spec.patch_problem((24, 64, 48))
    assert problem and "multiple of 16" in problem
    with pytest.raises(TeachFormerError):
        spec.build(2, 2, (24, 64, 48), preset="tiny")
    with pytest.raises(ValueError, match="multiples of 16"):
        tiny(spec)(torch.randn(1, 2, 32, 40, 32))


def test_roles_and_deep_supervision_scales():
    assert HDENSEFORMER_SPEC.role == "teacher" and HDENSEFORMER_LIGHT_SPEC.role == "student"
    for spec in SPECS:
        assert spec.deep_supervision_scales == (1, 0.5, 0.25, 0.125)
        assert set(spec.presets) >= {"paper", "tiny"}
        assert spec.build(2, 2, PATCH, preset="tiny", deep_supervision=True).deep_supervision
