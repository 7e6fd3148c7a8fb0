"""3D UX-Net and its light variant: shapes, distillation taps, parameter counts, patch rules, state dicts."""
import pytest
import torch

from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.networks.taps import capture_taps
from nnunet_teachformer.networks.uxnet import UXNET_LIGHT_SPEC, UXNET_SPEC, UXNet

SPECS = [UXNET_SPEC, UXNET_LIGHT_SPEC]
TINY = UXNET_SPEC.presets["tiny"]


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def tiny(in_channels=2, num_classes=3, patch=(32, 32, 32), seed=0, spec=UXNET_SPEC):
    torch.manual_seed(seed)
    return spec.build(in_channels, num_classes, patch, preset="tiny")


def all_hooks(net):
    return [h for m in net.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_forward_backward_reaches_every_parameter(spec):
    net = tiny(spec=spec)
    x = torch.randn(2, 2, 32, 32, 32)
    y = net(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 3, 32, 32, 32)
    y.square().mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no (finite) gradient for {missing}"


def test_deep_supervision_is_ignored():
    net = UXNET_SPEC.build(2, 3, (32, 32, 32), preset="tiny", deep_supervision=True)
    assert net.deep_supervision is False
    assert isinstance(net(torch.randn(1, 2, 32, 32, 32)), torch.Tensor)


@pytest.mark.parametrize("patch", [(32, 32, 32), (32, 64, 48)])
def test_taps_have_documented_shapes(patch):
    net = tiny(patch=patch).eval()
    widths, hidden = TINY["widths"], TINY["hidden_size"]
    with torch.no_grad(), capture_taps(net) as feats:
        y = net(torch.randn(2, 2, *patch))
    assert y.shape == (2, 3, *patch)
    assert feats["coarse"].shape == (2, hidden, *(p // 16 for p in patch))
    assert feats["fine"].shape == (2, widths[1], *(p // 2 for p in patch))


def test_capturing_taps_leaves_output_unchanged_and_no_hooks_behind():
    net = tiny().eval()
    x = torch.randn(2, 2, 32, 32, 32)
    with torch.no_grad():
        plain = net(x)
        with capture_taps(net) as feats:
            tapped = net(x)
        after = net(x)
    assert set(feats) == {"coarse", "fine"}
    assert torch.equal(plain, tapped) and torch.equal(plain, after)
    assert not all_hooks(net)


def test_taps_under_inference_mode():
    net = tiny().eval()
    with torch.inference_mode(), capture_taps(net) as feats:
        net(torch.randn(1, 2, 32, 32, 32))
    assert feats["coarse"].is_inference() and feats["fine"].is_inference()
    assert not all_hooks(net)


def test_gradient_flows_through_captured_coarse_feature():
    net = tiny().train()
    with capture_taps(net, ("coarse",)) as feats:
        net(torch.randn(2, 2, 32, 32, 32))
    feats["coarse"].square().mean().backward()
    stem_conv = net.encoder.downsample[0][0]
    assert stem_conv.weight.grad is not None and stem_conv.weight.grad.abs().sum() > 0
    # the bottleneck feature does not depend on the decoder
    assert all(p.grad is None for p in net.up_blocks.parameters())
    assert not all_hooks(net)


@pytest.mark.parametrize("spec, millions", [(UXNET_SPEC, 53.02), (UXNET_LIGHT_SPEC, 3.42)], ids=["full", "light"])
def test_paper_preset_parameter_counts_at_2_in_3_out(spec, millions):
    assert n_params(spec.build(2, 3, (144, 144, 144))) / 1e6 == pytest.approx(millions, rel=0.01)


@pytest.mark.parametrize("widths, hidden, millions", [
    ((48, 96, 192, 384), 768, 53.0),  # the 3D UX-Net paper's figure
    ((24, 48, 96, 192), 384, 13.4),
    ((16, 32, 64, 128), 256, 6.0),
    ((12, 24, 48, 96), 192, 3.4),
])
def test_parameter_counts_match_measured_reference_widths_at_1_in(widths, hidden, millions):
    assert n_params(UXNet(1, 13, widths, hidden)) / 1e6 == pytest.approx(millions, rel=0.01)


def test_light_is_a_student_several_times_smaller():
    assert UXNET_SPEC.role == "teacher" and UXNET_LIGHT_SPEC.role == "student"
    for spec in SPECS:
        assert spec.deep_supervision_scales is None and not spec.has_deep_supervision
    full = n_params(UXNET_SPEC.build(2, 3, (128,) * 3))
    light = n_params(UXNET_LIGHT_SPEC.build(2, 3, (128,) * 3))
    assert 1.5e6 <= light <= 3.5e6 and full / light > 10


def test_state_dict_round_trip_gives_identical_outputs():
    source = tiny(seed=1).eval()
    # change every parameter so that a silent partial load would show
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.01 * torch.randn_like(p))
    target = tiny(seed=2).eval()
    target.load_state_dict(source.state_dict())
    x = torch.randn(1, 2, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


def test_three_input_modalities():
    net = tiny(in_channels=3, num_classes=4)
    y = net(torch.randn(1, 3, 32, 32, 32))
    assert y.shape == (1, 4, 32, 32, 32)


def test_patch_rules():
    for spec in SPECS:
        assert spec.patch_multiple == 16
        assert spec.patch_problem((32, 64, 48)) is None
        problem = spec.patch_problem((32, 40, 48), dataset="7")
        assert problem and "multiple of 16" in problem and "[32, 40, 48]" in problem
        with pytest.raises(TeachFormerError):
            spec.build(2, 3, (32, 40, 48), preset="tiny")
