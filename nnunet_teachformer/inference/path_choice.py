"""Auto's choice of a CPU path for ``teachformer predict --device cpu`` (``cpu_inference``): each exact path of
``cpu_paths.CPU_PATHS`` run on the model's first fold and timed, its logits compared with nnU-Net's own path, and
the one that finishes the prediction at hand first taken; once per model fold and machine (``path_memory``).
"""
import ctypes
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict

import torch
from torch import nn

from nnunet_teachformer.inference import path_memory
from nnunet_teachformer.inference.cpu_inference import (CpuPredictor, PathNetwork, build_kind, example_patch,
                                                        in_inference_mode, one_core_each, tile_workers, use_path)
from nnunet_teachformer.inference.cpu_paths import CPU_PATHS, DEFAULT_TOLERANCE, CpuPath


@dataclass
class PathChoice:
    path: CpuPath
    seconds_per_tile: Dict[str, float]
    build_seconds: Dict[str, float]  # once per fold
    max_abs_difference: Dict[str, float]  # to nnU-Net's own path, float32 logits of one patch
    forwards: int  # network forwards the prediction at hand needs
    folds: int
    tolerance: float
    left_out: Dict[str, str] = field(default_factory=dict)  # paths that could not run this network, and why
    remembered: str = ""  # where the measurements came from when they were not taken now (path_memory)

    def expected_seconds(self, name: str) -> float:
        return self.build_seconds[name] * self.folds + self.seconds_per_tile[name] * self.forwards

    def fastest_exact(self) -> CpuPath:
        """The path within the tolerance that finishes ``forwards`` over ``folds`` first (nnU-Net's own qualifies)."""
        exact = ["nnunet"] + [name for name in self.seconds_per_tile
                              if name != "nnunet" and self.max_abs_difference[name] <= self.tolerance]
        return CPU_PATHS[min(exact, key=self.expected_seconds)]

    def measurements(self) -> dict:
        """What was measured (``path_memory`` keeps it), not what depends on the prediction at hand."""
        return {"seconds_per_tile": self.seconds_per_tile, "build_seconds": self.build_seconds,
                "max_abs_difference": self.max_abs_difference, "left_out": self.left_out}

    def summary(self) -> str:
        name = self.path.name
        return (f"CPU path: {name} ({self.path.description}): {self.seconds_per_tile[name]:.2f} s per tile against "
                f"{self.seconds_per_tile['nnunet']:.2f} s for nnU-Net's own, about {self.expected_seconds(name):.0f} "
                f"s instead of {self.expected_seconds('nnunet'):.0f} s for {self.forwards} tile forwards; max |logit "
                f"difference| {self.max_abs_difference[name]:.1e} (tolerance {self.tolerance:g})"
                + "".join(f"; {other} left out: {why}" for other, why in self.left_out.items())
                + (f"; {self.remembered}" if self.remembered else ""))


def _forward_tiles(network: nn.Module, patch: torch.Tensor, path: CpuPath) -> torch.Tensor:
    """Runs ``patch`` through ``network`` as ``path`` runs tiles (from one thread per core with ``threaded_tiles``:
    as many copies as threads) and returns the first copy's output."""
    workers = tile_workers(path)
    if workers < 2:
        with torch.inference_mode():
            return network(patch)
    with one_core_each(workers) as pool:
        return list(pool.map(in_inference_mode(network), [patch] * workers))[0]


def choose_cpu_path(predictor: CpuPredictor, forwards: int, tolerance: float = DEFAULT_TOLERANCE,
                    rounds: int = 2) -> PathChoice:
    """Measures every exact path of ``CPU_PATHS`` on a random patch with the predictor's first fold and makes
    ``predictor`` use the one whose logits are within ``tolerance`` of nnU-Net's own path and that finishes
    ``forwards`` tile forwards over the predictor's folds first. nnU-Net's own path always qualifies; a path
    that cannot run this network (a trace that fails) is left out. What is built for measuring is kept for the
    paths of the same engine and layout and for the prediction: fold 0's network is built once per engine."""
    patch = example_patch(predictor)
    seconds, build, outputs, left_out = {}, {}, {}, {}
    built: Dict[tuple, PathNetwork] = {}  # by build_kind
    for name, path in CPU_PATHS.items():
        if not path.exact:
            continue
        try:
            use_path(predictor, path, built.get(build_kind(path)))
            network = predictor.network.eval()
            # warm-up: oneDNN creates its kernels on the first call
            outputs[name] = _forward_tiles(network, patch, path).float()
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                _forward_tiles(network, patch, path)
                times.append(time.perf_counter() - start)
        except Exception as error:  # noqa: BLE001 - a lever this network cannot take is not a candidate
            if name == "nnunet":
                raise
            left_out[name] = str(error).splitlines()[0] if str(error) else type(error).__name__
            continue
        seconds[name] = min(times) / tile_workers(path)
        build[name] = getattr(network, "build_seconds", 0.0)
        if path.built_per_fold:
            built[build_kind(path)] = network
    difference = {name: float((out - outputs["nnunet"]).abs().max()) for name, out in outputs.items()}
    choice = PathChoice(CPU_PATHS["nnunet"], seconds, build, difference, forwards, len(predictor.list_of_parameters),
                        tolerance, left_out)
    choice.path = choice.fastest_exact()
    chosen = built.get(build_kind(choice.path))
    del network
    built.clear()
    use_path(predictor, choice.path, chosen)
    _return_freed_memory()
    return choice


def remembered_or_chosen_cpu_path(predictor: CpuPredictor, forwards: int, checkpoint: Path,
                                  tolerance: float = DEFAULT_TOLERANCE) -> PathChoice:
    """``choose_cpu_path``, measured once per model fold and machine: the measurements that ``path_memory`` kept for
    the same first fold's ``checkpoint``, plans, patch, machine and software are reused (no path measured; only
    the chosen one is built, when the prediction starts); otherwise measured now and kept."""
    patch = example_patch(predictor)
    plans = checkpoint.parent.parent / "plans.json"
    candidates = [name for name, path in CPU_PATHS.items() if path.exact]
    key = path_memory.memory_key(checkpoint, plans, patch.shape[2:], patch.shape[1], tolerance, candidates)
    measured = path_memory.recall(key)
    if measured is None:
        choice = choose_cpu_path(predictor, forwards, tolerance)
        problem = path_memory.remember(key, choice.measurements())
        choice.remembered = (f"not remembered ({problem})" if problem else
                             f"measured now, remembered in {path_memory.memory_file()}")
        return choice
    choice = PathChoice(CPU_PATHS["nnunet"], measured["seconds_per_tile"], measured["build_seconds"],
                        measured["max_abs_difference"], forwards, len(predictor.list_of_parameters), tolerance,
                        measured["left_out"], remembered=f"measured {measured['measured_at']} as remembered in "
                                                         f"{path_memory.memory_file()} (delete it to measure again)")
    choice.path = choice.fastest_exact()
    use_path(predictor, choice.path, load=False)  # built while nnU-Net's workers preprocess the first case
    return choice


def _return_freed_memory() -> None:
    """Hands the free heap back to the system (glibc's malloc_trim). What the paths measured and not taken leave
    freed stays resident otherwise: ~300 MB for the student at 32x128x128, under the prediction's peak."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
