"""Parameters and GFLOPs of a network, and of the network behind an nnU-Net model folder.

GFLOPs are those of one forward pass of one patch (batch 1) in eval mode, counted by
``torch.utils.flop_counter.FlopCounterMode`` (convolutions, matrix products, attention; a multiply-add
counts as 2 FLOPs, so GFLOPs = 2 x GMACs). The network is built on the CPU (some constructors, e.g.
SwinUNETR's, read tensor values), moved to PyTorch's ``meta`` device and run there: shapes only, well
under a second even for the paper-sized networks at 144^3. A network with an operation the meta device
cannot run is counted with a real forward under ``torch.no_grad`` instead (on the CPU unless told otherwise).

A model folder's network is rebuilt the way nnU-Net's predictor does: the trainer class's
``build_network_architecture`` with the folder's ``plans.json``/``dataset.json``, deep supervision off.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Complexity:
    parameters: int
    gflops: float
    input_shape: Tuple[int, ...]  # (1, channels, *patch)
    flop_device: str  # "meta", or where the real forward pass was counted

    @property
    def patch_size(self) -> Tuple[int, ...]:
        return self.input_shape[2:]


def count_parameters(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def _count(network: nn.Module, input_shape: Sequence[int], device: str) -> int:
    network.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(torch.zeros(tuple(input_shape), device=device))
    return counter.get_total_flops()


def measure_complexity(build: Callable[[], nn.Module], input_shape: Sequence[int],
                       fallback_device: str = "cpu") -> Complexity:
    """Parameters and GFLOPs of ``build()`` for one input of ``input_shape`` (batch first)."""
    network = build()
    parameters = count_parameters(network)
    try:
        flops, device = _count(network.to("meta"), input_shape, "meta"), "meta"
    except Exception:  # noqa: BLE001 - any failure on meta is an operation without a meta kernel: count for real
        network = build().to(fallback_device)
        flops, device = _count(network, input_shape, fallback_device), fallback_device
    return Complexity(parameters, flops / 1e9, tuple(int(s) for s in input_shape), device)


def network_builder(model_folder, trainer_class: type, configuration: str) -> Tuple[Callable[[], nn.Module],
                                                                                       Tuple[int, ...]]:
    """``(build, input_shape)`` for the network of an nnU-Net model folder, as the predictor rebuilds it."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    model_folder = Path(model_folder)
    plans_manager = PlansManager(load_json(str(model_folder / "plans.json")))
    dataset_json = load_json(str(model_folder / "dataset.json"))
    configuration_manager = plans_manager.get_configuration(configuration)
    in_channels = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
    out_channels = plans_manager.get_label_manager(dataset_json).num_segmentation_heads

    def build() -> nn.Module:
        return trainer_class.build_network_architecture(plans_manager, configuration_manager, in_channels,
                                                        out_channels, enable_deep_supervision=False)
    return build, (1, in_channels, *configuration_manager.patch_size)


def model_folder_complexity(model_folder, trainer_class: type, configuration: str,
                            fallback_device: str = "cpu") -> Complexity:
    build, input_shape = network_builder(model_folder, trainer_class, configuration)
    return measure_complexity(build, input_shape, fallback_device)
