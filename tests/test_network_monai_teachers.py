"""MONAI's SwinUNETR and UNETR as teachers: the distillation taps sit where the paper puts them (the bottleneck,
E_n, and the second-to-last decoder stage, D_{n-1}) with the documented shapes, and leave the output untouched."""
import pytest
import torch

from nnunet_teachformer.networks.swin_unetr import SWIN_UNETR_SPEC
from nnunet_teachformer.networks.taps import capture_taps
from nnunet_teachformer.networks.unetr import UNETR_SPEC

PATCH = (64, 64, 32)


def _first_inputs(modules):
    """Records the first positional input of each module during a forward pass."""
    seen, handles = {}, []
    for name, module in modules.items():
        handles.append(module.register_forward_pre_hook(lambda _m, inputs, name=name: seen.__setitem__(name, inputs[0])))
    return seen, handles


def _run(net, watch):
    torch.manual_seed(0)
    x = torch.randn(2, 2, *PATCH)
    seen, handles = _first_inputs(watch)
    with torch.no_grad():
        plain = net(x)
        with capture_taps(net) as features:
            tapped = net(x)
    for h in handles:
        h.remove()
    assert torch.equal(plain, tapped)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    return features, seen, x


def test_swin_unetr_taps_bottleneck_and_second_to_last_decoder_stage():
    net = SWIN_UNETR_SPEC.build(2, 3, PATCH, preset="tiny").eval()
    fs = SWIN_UNETR_SPEC.presets["tiny"]["feature_size"]
    features, seen, _ = _run(net, {"decoder5": net.decoder5, "decoder1": net.decoder1})
    assert features["coarse"].shape == (2, 16 * fs, *(p // 32 for p in PATCH))
    assert features["fine"].shape == (2, fs, *(p // 2 for p in PATCH))
    # the bottleneck is what the first decoder stage gets, D_{n-1} what the last one gets
    assert torch.equal(features["coarse"], seen["decoder5"])
    assert torch.equal(features["fine"], seen["decoder1"])


def test_unetr_taps_bottleneck_and_second_to_last_decoder_stage():
    net = UNETR_SPEC.build(2, 3, PATCH, preset="tiny").eval()
    preset = UNETR_SPEC.presets["tiny"]
    features, seen, x = _run(net, {"decoder2": net.decoder2})
    assert features["coarse"].shape == (2, preset["hidden_size"], *(p // 16 for p in PATCH))
    assert features["fine"].shape == (2, 2 * preset["feature_size"], *(p // 2 for p in PATCH))
    with torch.no_grad():  # the coarse tap is the last ViT hidden state, reshaped to the 16-voxel grid
        last_hidden, _ = net.vit(x)
    assert torch.equal(features["coarse"], net.proj_feat(last_hidden))
    assert torch.equal(features["fine"], seen["decoder2"])  # decoder2 is UNETR's last decoder stage


@pytest.mark.parametrize("spec", [SWIN_UNETR_SPEC, UNETR_SPEC], ids=lambda s: s.name)
def test_taps_keep_the_student_graph_under_autograd(spec):
    net = spec.build(2, 3, PATCH, preset="tiny").train()
    with capture_taps(net) as features:
        net(torch.randn(1, 2, *PATCH))
    assert features["coarse"].requires_grad and features["fine"].requires_grad
