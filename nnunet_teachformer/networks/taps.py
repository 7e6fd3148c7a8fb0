"""Distillation taps: the two feature maps every network exposes, and the hook helper that reads them.

Every network in this package implements ``distillation_taps() -> {"coarse": Tap, "fine": Tap}``:
*coarse* is the output of the last encoder stage (E_n, the bottleneck), *fine* the output of the
second-to-last decoder stage (D_{n-1}). A ``Tap`` names a submodule and whether its output or its
first positional input is the feature map (UNETR's bottleneck is only visible as the input of its
first decoder block). nnU-Net's own U-Nets (``dynamic_network_architectures``: ``PlainConvUNet``,
``ResidualEncoderUNet``, ...) get the same two taps without a method: ``encoder.stages[-1]`` and
``decoder.stages[-2]`` (``distillation_taps_of``).

``capture_taps`` registers forward hooks for the duration of a ``with`` block only, so a network
keeps no extra activations when nobody asks, and the forward result is untouched (hooks only read).
It works under ``torch.inference_mode()`` (teachers) and under autograd (the student: the captured
tensors stay in the graph).
"""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, Sequence

import torch
from torch import nn

TAP_NAMES = ("coarse", "fine")


@dataclass(frozen=True)
class Tap:
    module: nn.Module
    read: str = "output"  # "output" or "input" (the first positional input)

    def __post_init__(self):
        if self.read not in ("output", "input"):
            raise ValueError(f"Tap.read must be 'output' or 'input', not {self.read!r}")


def unwrap_network(network: nn.Module) -> nn.Module:
    """Strips DDP and torch.compile wrappers, as nnU-Net does before touching network attributes."""
    if isinstance(network, nn.parallel.DistributedDataParallel):
        network = network.module
    return getattr(network, "_orig_mod", network)


def distillation_taps_of(network: nn.Module) -> Dict[str, Tap]:
    """The coarse and fine taps of ``network``; a ``TypeError`` says why a network has none."""
    network = unwrap_network(network)
    if hasattr(network, "distillation_taps"):
        return network.distillation_taps()
    encoder, decoder = getattr(network, "encoder", None), getattr(network, "decoder", None)
    encoder_stages, decoder_stages = getattr(encoder, "stages", None), getattr(decoder, "stages", None)
    if isinstance(encoder_stages, nn.Sequential) and isinstance(decoder_stages, nn.ModuleList) and \
            len(decoder_stages) >= 2:  # nnU-Net's encoder-decoder U-Nets, decoder stages lowest resolution first
        return {"coarse": Tap(encoder_stages[-1]), "fine": Tap(decoder_stages[-2])}
    raise TypeError(f"{type(network).__name__} exposes no distillation taps: it is neither a network of this package "
                    f"nor an nnU-Net encoder-decoder U-Net (encoder.stages, decoder.stages)")


def _first_tensor(value):
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise TypeError(f"tap produced {type(value).__name__}, expected a tensor")


@contextmanager
def capture_taps(network: nn.Module, names: Sequence[str] = TAP_NAMES) -> Iterator[Dict[str, torch.Tensor]]:
    """Within the block, every forward of ``network`` stores the named tap features in the yielded dict.

    A second forward inside the same block overwrites the first one's features.
    """
    taps = distillation_taps_of(network)
    unknown = [n for n in names if n not in taps]
    if unknown:
        raise KeyError(f"{type(unwrap_network(network)).__name__} has no tap(s) {unknown}; it has {sorted(taps)}")
    features: Dict[str, torch.Tensor] = {}
    handles = []
    for name in names:
        tap = taps[name]
        if tap.read == "output":
            def hook(_module, _inputs, output, name=name):
                features[name] = _first_tensor(output)
            handles.append(tap.module.register_forward_hook(hook))
        else:
            def pre_hook(_module, inputs, name=name):
                features[name] = _first_tensor(inputs)
            handles.append(tap.module.register_forward_pre_hook(pre_hook))
    try:
        yield features
    finally:
        for h in handles:
            h.remove()
