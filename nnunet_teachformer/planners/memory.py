"""How much GPU memory one training sample of a network takes, measured, and the batch size that follows.

nnU-Net sizes batch and patch from a formula for its own U-Net (``UNet_reference_val_3d``: a count of
feature-map elements that it equates with 8 GB at batch 2); the transformers of this package have
other memory profiles, so the planner measures them instead.

Measurement: the network is built with the given preset and then moved to PyTorch's ``meta`` device,
where tensors have shapes and dtypes but no data, so one training-mode forward pass plus the loss
(``SegmentationLoss`` on every deep-supervision output, as the trainers compute it) at the real patch
costs about a second on a CPU and no memory. Every tensor autograd saves for the backward pass is
recorded with ``torch.autograd.graph.saved_tensors_hooks`` and counted once per storage (views share
one), parameters excluded. This is the memory a training step holds at its peak, before backward starts
freeing it. It is measured at the planned patch itself, with a batch of one, so nothing is
extrapolated: activation memory is linear in the batch, but not in the voxels for the networks with
global attention (UNETR's and H-DenseFormer's token grids are (D/16)(H/16)(W/16) long and their
attention matrices grow with its square), which a fit from small probe patches would miss.

Rule (``MemoryEstimate.max_batch_size``)::

    batch = floor((G - 4 P) / S)

    G = GPU memory (GB read as GiB, as GPUs are sold), P = parameter bytes (fp32 weights, gradients
    and Adam's two moments: 4 P), S = saved bytes of one sample, counted in fp32.

Calibration: applied to nnU-Net's own PlainConvUNet (3D, 2 input channels, 32..320 features) this rule
reproduces nnU-Net's own batch-size heuristic: at a 128^3 patch S = 3.34 GiB and P = 0.12 GiB, so 8 GB
holds (8 - 0.47) / 3.34 = 2.3 samples, where nnU-Net's reference gives 2.5; at 64^3, 0.42 GiB per
sample: 18 vs nnU-Net's 20. Both count fp32 activations while training runs with half-precision
autocast (nnU-Net: fp16, our trainers: bf16 on CUDA), which keeps roughly half of them in 16 bits; the
difference is the headroom for the CUDA context, cuDNN workspaces, backward transients and allocator
fragmentation that nnU-Net's 8 GB default relies on. On a GPU without bf16 our trainers run in fp32
and that headroom is gone: plan with a smaller ``--gpu-memory`` there.
"""
from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import torch

from nnunet_teachformer.distillation.losses import SegmentationLoss
from nnunet_teachformer.networks.spec import NetworkSpec

GIB = 2 ** 30
# parameters, their gradients and Adam's exp_avg and exp_avg_sq, all fp32
TRAINING_STATE_COPIES = 4


@dataclass(frozen=True)
class MemoryEstimate:
    network: str
    preset: str
    patch_size: Tuple[int, ...]
    activation_bytes: int  # tensors saved for backward by one sample (fp32), loss included
    parameter_bytes: int

    @property
    def training_state_bytes(self) -> int:
        return TRAINING_STATE_COPIES * self.parameter_bytes

    def max_batch_size(self, gpu_memory_gb: float) -> int:
        """Samples that fit in ``gpu_memory_gb`` by the rule in the module docstring (0 if not even one)."""
        free = gpu_memory_gb * GIB - self.training_state_bytes
        return max(0, int(free // self.activation_bytes))

    def as_dict(self, gpu_memory_gb: float) -> dict:
        return {"activation_bytes_per_sample": self.activation_bytes, "parameter_bytes": self.parameter_bytes,
                "max_batch_size": self.max_batch_size(gpu_memory_gb)}


_CACHE: Dict[tuple, MemoryEstimate] = {}


def measure_training_memory(spec: NetworkSpec, num_input_channels: int, num_classes: int,
                            patch_size: Sequence[int], preset: str = "paper") -> MemoryEstimate:
    """Measures ``spec`` (built with ``preset``) for one training sample at ``patch_size``; cached per process."""
    patch = tuple(int(p) for p in patch_size)
    key = (spec.name, preset, int(num_input_channels), int(num_classes), patch)
    if key not in _CACHE:
        _CACHE[key] = _measure(spec, preset, int(num_input_channels), int(num_classes), patch)
    return _CACHE[key]


def _measure(spec: NetworkSpec, preset: str, num_input_channels: int, num_classes: int,
             patch: Tuple[int, ...]) -> MemoryEstimate:
    # built on the CPU (some builders call .item() while initialising), then stripped of its data
    network = spec.build(num_input_channels, num_classes, patch, preset=preset,
                         deep_supervision=spec.has_deep_supervision).to("meta").train()
    parameter_storages = {p.untyped_storage()._cdata for p in network.parameters()}
    saved: Dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage._cdata not in parameter_storages:
            saved.setdefault(storage._cdata, storage.nbytes())
        return tensor

    loss = SegmentationLoss(batch_dice=True)
    image = torch.zeros((1, num_input_channels) + patch, device="meta")
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        outputs = network(image)
        for logits in outputs if isinstance(outputs, (list, tuple)) else [outputs]:
            target = torch.zeros((1, 1) + tuple(logits.shape[2:]), device="meta")
            loss(logits, target)
    return MemoryEstimate(network=spec.name, preset=preset, patch_size=patch, activation_bytes=sum(saved.values()),
                          parameter_bytes=sum(p.numel() * p.element_size() for p in network.parameters()))
