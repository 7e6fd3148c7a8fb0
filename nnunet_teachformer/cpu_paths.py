"""The ways ``teachformer predict --device cpu`` can run a network (``cpu_inference``), as a light table that the
command line reads without importing nnU-Net."""
from dataclasses import dataclass
from typing import Dict

DEFAULT_TOLERANCE = 1e-3  # largest accepted |logit difference| to nnU-Net's own path, as for the ONNX export


@dataclass(frozen=True)
class CpuPath:
    name: str
    channels_last: bool
    frozen: bool  # TorchScript trace, frozen and optimised for inference (built once per fold)
    description: str


CPU_PATHS: Dict[str, CpuPath] = {p.name: p for p in (
    CpuPath("nnunet", False, False, "nnU-Net's own: the network as built, default memory layout"),
    CpuPath("channels_last", True, False, "weights and tiles in channels-last 3D layout"),
    CpuPath("frozen", True, True, "channels-last, traced, frozen and optimised for inference by TorchScript"),
)}
