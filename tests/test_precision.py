"""No network of the package computes in fp16, even inside the fp16 autocast that nnU-Net's predictor opens on
CUDA: an fp16 region becomes bf16 where the device has it natively (fp32 elsewhere), so prediction computes
exactly what training and its final validation compute. Checked on the CPU with an fp16 autocast region."""
import pytest
import torch
from monai.networks.blocks.selfattention import SABlock
from monai.networks.nets.swin_unetr import WindowAttention

from nnunet_teachformer.networks.hdenseformer import HDENSEFORMER_LIGHT_SPEC, HDENSEFORMER_SPEC, SelfAttention
from nnunet_teachformer.networks.precision import reduced_precision_dtype
from nnunet_teachformer.networks.swin_unetr import SWIN_UNETR_SPEC
from nnunet_teachformer.networks.unetr import UNETR_SPEC
from nnunet_teachformer.networks.uxnet import UXNET_LIGHT_SPEC, UXNET_SPEC

PATCH = (64, 32, 32)
# (network, the layer whose output dtype is the attention's; UX-Net has no attention: its first convolution)
PROBES = [(HDENSEFORMER_SPEC, SelfAttention), (HDENSEFORMER_LIGHT_SPEC, SelfAttention), (SWIN_UNETR_SPEC, WindowAttention),
          (UNETR_SPEC, SABlock), (UXNET_SPEC, torch.nn.Conv3d), (UXNET_LIGHT_SPEC, torch.nn.Conv3d)]


def _probe(net, block):
    first = next(m for m in net.modules() if isinstance(m, block))
    return getattr(first, "qkv", first)


def _compute_dtype(block, net, x, autocast_dtype):
    seen = []
    handle = _probe(net, block).register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    with torch.no_grad(), torch.autocast("cpu", dtype=autocast_dtype):
        out = net(x)
    handle.remove()
    return seen[0], out


@pytest.mark.parametrize("spec,block", PROBES, ids=[f"{s.name}-{s.role}" for s, _ in PROBES])
def test_fp16_autocast_computes_as_training_does(spec, block):
    torch.manual_seed(0)
    net = spec.build(2, 3, PATCH, preset="tiny").eval()
    x = torch.randn(1, 2, *PATCH)
    expected = reduced_precision_dtype("cpu")
    dtype, out_fp16_request = _compute_dtype(block, net, x, torch.float16)
    assert dtype == expected and dtype != torch.float16
    if expected == torch.bfloat16:  # the trainer's own autocast on such a CPU: bit-identical
        _, out_bf16 = _compute_dtype(block, net, x, torch.bfloat16)
        assert torch.equal(out_fp16_request, out_bf16)
    assert torch.isfinite(out_fp16_request.float()).all()


def test_without_the_guard_fp16_would_reach_the_attention():
    net = UNETR_SPEC.build(2, 3, PATCH, preset="tiny").eval()
    seen = []
    _probe(net, SABlock).register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        torch.nn.Module.__call__(net, torch.randn(1, 2, *PATCH))  # bypasses NoFP16.__call__
    assert seen[0] == torch.float16  # so the test above measures the guard, not a CPU that ignores fp16
