"""Keeps every network of this package out of fp16, whoever calls it.

Transformer attention overflows in fp16 (NaN losses and empty predictions in nnU-Net, its issues 2197
and 2629). Our trainers set bf16 autocast for their own process, but ``nnUNetv2_predict`` runs
nnU-Net's predictor, whose CUDA autocast default is fp16, and it only builds the network: so the
network itself turns an fp16 autocast region into bf16 where the device computes bf16 natively, and
into fp32 elsewhere. Prediction and the validation at the end of training therefore compute alike.
"""
from contextlib import ExitStack

import torch

AUTOCAST_DEVICES = ("cuda", "cpu")


def native_bf16(device_type: str) -> bool:
    """Whether ``device_type`` computes bf16 in hardware (not emulated)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device_type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def reduced_precision_dtype(device_type: str) -> torch.dtype:
    """The autocast dtype our networks use on ``device_type``: bf16 where native, else fp32."""
    return torch.bfloat16 if native_bf16(device_type) else torch.float32


def _without_fp16() -> ExitStack:
    stack = ExitStack()
    for device_type in AUTOCAST_DEVICES:
        if torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.float16:
            dtype = reduced_precision_dtype(device_type)
            stack.enter_context(torch.autocast(device_type, dtype=dtype) if dtype != torch.float32
                                else torch.autocast(device_type, enabled=False))
    return stack


class NoFP16(torch.nn.Module):
    """Mix-in for a network class (put it first): its forward never runs under fp16 autocast."""

    def __call__(self, *args, **kwargs):
        with _without_fp16():
            return super().__call__(*args, **kwargs)
