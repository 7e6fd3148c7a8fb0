"""CPU inference near the machine's limit for ``teachformer predict --device cpu``.

nnU-Net's predictor runs the network tile by tile as it was built for training. For a thin 3D network like the
student that leaves much of a CPU's speed unused: PyTorch sends small batch-1 convolutions to a slow native
kernel, every normalisation and activation is a separate pass over memory, and the many small operations of the
transformer paths gain little from a second core (benchmarks/README.md has the profile). The levers here, named
in ``cpu_paths.CPU_PATHS``, change how the network runs, never what it computes, and leave nnU-Net's Gaussian
weighting and accumulation as they are:

* ``channels_last``: weights and tiles in channels-last 3D layout, which sends every convolution to oneDNN;
* ``frozen``: that, traced with TorchScript, frozen and optimised for inference (oneDNN fuses convolutions
  with what follows them); the trace is built once per fold (seconds) and kept for every case;
* ``tile_per_core``: the frozen trace, with the sliding window's tiles run side by side, one core each
  (``CpuPredictor``); the tiles are still summed in nnU-Net's order;
* ``openvino``: the network converted by OpenVINO and compiled for this CPU in float32 (``openvino_engine``;
  built once per fold, seconds, and kept on disk for later calls by ``build_cache``); it runs one tile per core,
  an OpenVINO stream each, as ``tile_per_core`` does. OpenVINO is the ``cpu`` extra: where it is not installed,
  auto leaves this path out and says so.

``path_choice`` measures each exact path on the model's own weights and patch, keeps those whose logits stay
within ``tolerance`` of nnU-Net's own path, and takes the one that finishes the prediction at hand first (the
once-per-fold build included). ``openvino_bf16`` (OpenVINO in bfloat16) is not exact: it runs only when asked
for, as do the inexact tile step and mirror axes of ``predict_on_cpu``. onnxruntime is measured by
benchmarks/inference.py but is not a path: it is slower than ``openvino``.
"""
import copy
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from torch import nn

from nnunet_teachformer.inference.cpu_paths import CPU_PATHS, CpuPath
from nnunet_teachformer.inference.stage_times import StageTimes


CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}  # by tensor rank: nnU-Net's 2d and 3d


class PathNetwork(nn.Module):
    """Stands in for the network in nnU-Net's predictor and runs it along ``path``. nnU-Net loads each fold's
    weights with ``load_state_dict`` before every case; along a path whose engine builds the network (a frozen
    trace, an OpenVINO model), each fold's is built the first time its weights arrive and reused after (OpenVINO:
    imported again from ``build_cache``); the builds are timed into ``times``."""

    def __init__(self, network: nn.Module, path: CpuPath, example: torch.Tensor, times: Optional[StageTimes] = None):
        super().__init__()
        self.network, self.path, self.example = network, path, example
        self.times = times or StageTimes()
        self.memory_format = CHANNELS_LAST[example.ndim] if path.channels_last else torch.contiguous_format
        self.network.to(memory_format=self.memory_format)  # load_state_dict keeps this layout
        self._built: Dict[int, Callable[[torch.Tensor], torch.Tensor]] = {}
        self._weights: Optional[int] = None
        self.build_seconds = 0.0

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if self.path.engine == "openvino" and self._weights in self._built and self._weights != id(state_dict):
            # only the fold at work stays compiled (~80 MB each): the others are imported again from build_cache
            # when their turn comes (~0.2 s); where it could not keep them, they only give up activation buffers
            if self._built[self._weights].kept:
                del self._built[self._weights]
            else:
                self._built[self._weights].release_memory()
        self._weights = id(state_dict)  # nnU-Net passes the same dict of each fold for every case
        if not self.path.built_per_fold or self._weights not in self._built:
            result = self.network.load_state_dict(state_dict, strict=strict, assign=assign)
            if self.path.built_per_fold:
                start = time.perf_counter()
                with self.times.stage("build"):
                    self._built[self._weights] = self._build()
                self.build_seconds += time.perf_counter() - start
                self.times.builds.append(self.path.engine)
                self.times.builds_from_disk += getattr(self._built[self._weights], "from_disk", False)
            return result

    def needs_build(self, state_dict) -> bool:
        """Whether loading ``state_dict`` (one fold's weights, as nnU-Net passes them) builds the network first."""
        return self.path.built_per_fold and id(state_dict) not in self._built

    def take_builds(self, other: "PathNetwork") -> None:
        """Takes over what ``other`` built for each fold's weights instead of building it again: the same function
        (a path of the same engine and layout, e.g. ``frozen``'s traces for ``tile_per_core``)."""
        if build_kind(other.path) != build_kind(self.path):
            raise ValueError(f"the {self.path.name} path cannot run what the {other.path.name} path built")
        self._built, self.build_seconds = dict(other._built), other.build_seconds

    def _build(self) -> Callable[[torch.Tensor], torch.Tensor]:
        network, example = self.network.eval(), self._layout(self.example)
        # both engines start from a trace, which records one patch shape, the only one nnU-Net's sliding window
        # feeds: its warnings about shape checks turned into constants do not concern this use. PyTorch 2.14
        # deprecates TorchScript (FutureWarning); should it go, these paths fail to build and auto leaves them out.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)
            if self.path.engine == "openvino":
                from nnunet_teachformer.inference.openvino_engine import OpenVinoNetwork
                return OpenVinoNetwork(network, example, tile_workers(self.path), self.path.precision)
            # a trace shares the network's parameter tensors, and freezing keeps some of them (not every constant
            # is copied): without its own copy, the next fold's load_state_dict would change this fold's trace
            own = copy.deepcopy(network)
            return torch.jit.optimize_for_inference(torch.jit.trace(own, example, check_trace=False))

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=self.memory_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._layout(x)
        out = self._built[self._weights](x) if self.path.built_per_fold else self.network(x)
        return out.contiguous()


class CpuPredictor(nnUNetPredictor):
    """nnU-Net's predictor for ``--device cpu``; along a path with ``threaded_tiles`` its sliding window hands the
    network as many tiles at a time as it has threads, from one thread each (``tile_workers``). nnU-Net's loop runs
    one tile after another, so this is its CPU branch again with only the forwards in threads: the same Gaussian,
    the same float16 sums, in the slicers' order. The time of the thread that predicts is summed per stage in
    ``stage_times`` (``stage_times.STAGES``)."""
    cpu_path: CpuPath = CPU_PATHS["nnunet"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stage_times = StageTimes()

    def _internal_get_data_iterator_from_lists_of_filenames(self, *args, **kwargs):
        return self._waited_for(super()._internal_get_data_iterator_from_lists_of_filenames(*args, **kwargs))

    def _waited_for(self, cases):
        """nnU-Net's preprocessed cases, the wait for each timed. Its workers start on the first case; while they
        start and preprocess it, the first fold's network is built here where its path builds one and nothing has
        built it yet (a path asked for, or remembered by ``path_memory``), instead of before them."""
        first_fold = self.list_of_parameters[0]
        if isinstance(self.network, PathNetwork) and self.network.needs_build(first_fold):
            with ThreadPoolExecutor(1) as pool:
                first = pool.submit(next, cases, None)
                self.network.load_state_dict(first_fold)  # timed as "build"
                with self.stage_times.stage("preprocessing_wait"):
                    case = first.result()
            if case is None:
                return
            yield case
        while True:
            with self.stage_times.stage("preprocessing_wait"):
                case = next(cases, None)
            if case is None:
                return
            yield case

    def predict_logits_from_preprocessed_data(self, data: torch.Tensor) -> torch.Tensor:
        with self.stage_times.stage("fold_switch"):  # what the sliding windows inside leave: loading each fold
            return super().predict_logits_from_preprocessed_data(data)

    def predict_sliding_window_return_logits(self, input_image: torch.Tensor):
        with self.stage_times.stage("aggregation"):  # what the forwards inside leave
            return super().predict_sliding_window_return_logits(input_image)

    def _internal_maybe_mirror_and_predict(self, x: torch.Tensor) -> torch.Tensor:
        mirror_axes = self.allowed_mirroring_axes if self.use_mirroring else ()
        self.stage_times.count_forwards(2 ** len(mirror_axes))
        with self.stage_times.stage("forwards"):  # timed on the predicting thread only: see the tile threads below
            return super()._internal_maybe_mirror_and_predict(x)

    @torch.inference_mode()
    def _internal_predict_sliding_window_return_logits(self, data: torch.Tensor, slicers, do_on_device: bool = True):
        workers = min(tile_workers(self.cpu_path), len(slicers))
        if workers < 2 or self.device.type != "cpu":
            return super()._internal_predict_sliding_window_return_logits(data, slicers, do_on_device)
        predicted_logits = torch.zeros((self.label_manager.num_segmentation_heads, *data.shape[1:]), dtype=torch.half)
        n_predictions = torch.zeros(data.shape[1:], dtype=torch.half)
        gaussian = compute_gaussian(tuple(self.configuration_manager.patch_size), sigma_scale=1. / 8,
                                    value_scaling_factor=10, device=torch.device("cpu")) if self.use_gaussian else 1

        def predict_tile(slicer):
            return self._internal_maybe_mirror_and_predict(data[slicer][None].contiguous())[0]

        pool = one_core_each(workers)
        try:
            predictions = pool.map(in_inference_mode(predict_tile), slicers)
            for slicer in slicers:
                with self.stage_times.stage("forwards"):  # the tile threads' forwards, as far as they are waited for
                    prediction = next(predictions)
                if self.use_gaussian:
                    prediction *= gaussian
                predicted_logits[slicer] += prediction
                n_predictions[slicer[1:]] += gaussian
        finally:  # a failure or Ctrl-C waits for the tiles in flight only, not for the whole case
            pool.shutdown(cancel_futures=True)
        torch.div(predicted_logits, n_predictions, out=predicted_logits)
        if torch.any(torch.isinf(predicted_logits)):
            raise RuntimeError("Encountered inf in predicted array (nnU-Net's float16 sums of the tiles overflowed)")
        return predicted_logits


def build_kind(path: CpuPath) -> tuple:
    """Paths of one kind run the same built function (``PathNetwork.take_builds``)."""
    return path.engine, path.channels_last, path.precision


def tile_workers(path: CpuPath) -> int:
    """Tiles that ``path`` predicts at a time: one per thread of PyTorch's (nnU-Net sets them) or one."""
    return torch.get_num_threads() if path.threaded_tiles else 1


def one_core_each(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,))


def in_inference_mode(function):
    """``function`` under inference mode, which is per thread: the pool's threads need their own."""
    def run(*args):
        with torch.inference_mode():
            return function(*args)
    return run


def use_path(predictor: CpuPredictor, path: CpuPath, built: Optional[PathNetwork] = None, load: bool = True) -> None:
    """Makes ``predictor`` (an initialised ``CpuPredictor``) run its network along ``path``, with what ``built`` (a
    ``PathNetwork`` of the same engine and layout) has built for its folds already (``PathNetwork.take_builds``).
    ``load``: the first fold's weights loaded now (and the network built for them); else when nnU-Net loads them,
    or while its workers preprocess the first case (``CpuPredictor``)."""
    if path.threaded_tiles and not isinstance(predictor, CpuPredictor):
        raise TypeError(f"the {path.name} path needs a CpuPredictor, not {type(predictor).__name__}")
    network = predictor.network.network if isinstance(predictor.network, PathNetwork) else predictor.network
    if path.name == "nnunet":
        predictor.network = network.to(memory_format=torch.contiguous_format)
    else:
        times = getattr(predictor, "stage_times", None)  # a plain nnUNetPredictor has none
        predictor.network = PathNetwork(network, path, example_patch(predictor), times)
        if built is not None:
            predictor.network.take_builds(built)
    predictor.cpu_path = path
    if load:
        predictor.network.load_state_dict(predictor.list_of_parameters[0])  # the first fold's, as nnU-Net passes it


def example_patch(predictor) -> torch.Tensor:
    channels = determine_num_input_channels(predictor.plans_manager, predictor.configuration_manager,
                                            predictor.dataset_json)
    patch = [int(p) for p in predictor.configuration_manager.patch_size]
    return torch.randn((1, channels, *patch), generator=torch.Generator().manual_seed(0))


def sliding_window_weights(predictor: nnUNetPredictor, spatial_shape: Sequence[int]):
    """What nnU-Net's sliding window adds per voxel for a case of this (preprocessed) shape: the float16 sum of
    the Gaussian weights and the number of tiles, both as float32 tensors of that shape (for
    ``cpu_paths.float16_sums_bound``). Built from nnU-Net's own padding, tiles and Gaussian."""
    patch = predictor.configuration_manager.patch_size
    padded, unpad = pad_nd_image(torch.zeros((1, *spatial_shape), dtype=torch.bool), patch, "constant", {"value": 0},
                                 True, None)
    gaussian = compute_gaussian(tuple(patch), sigma_scale=1. / 8, value_scaling_factor=10, device=torch.device("cpu"))
    weights = torch.zeros(padded.shape[1:], dtype=torch.half)
    tiles = torch.zeros(padded.shape[1:])
    for tile in predictor._internal_get_sliding_window_slicers(padded.shape[1:]):
        weights[tile[1:]] += gaussian
        tiles[tile[1:]] += 1
    return weights[unpad[1:]].float(), tiles[unpad[1:]]


def tile_forwards(predictor, cases: Sequence[Sequence[str]]) -> int:
    """Network forwards that predicting ``cases`` (lists of channel files) needs with one fold: each case's tiles
    at the plans' spacing (its size read from the first channel's header; in 2D, per slice), times the
    mirrorings of TTA."""
    import SimpleITK as sitk

    configuration = predictor.configuration_manager
    patch = [int(p) for p in configuration.patch_size]
    target = list(configuration.spacing)
    tiles = 0
    for files in cases:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(files[0]))
        reader.ReadImageInformation()
        size, spacing = reader.GetSize()[::-1], reader.GetSpacing()[::-1]  # SimpleITK is x, y, z; nnU-Net z, y, x
        shape = [max(p, int(round(n * s / t))) for n, s, t, p in zip(size[-len(patch):], spacing[-len(patch):],
                                                                    target, patch)]
        slices = int(np.prod(size[:-len(patch)]))  # 2d configuration: every slice is predicted on its own
        steps = compute_steps_for_sliding_window(shape, patch, predictor.tile_step_size)
        tiles += slices * int(np.prod([len(axis_steps) for axis_steps in steps]))
    mirror_axes = predictor.allowed_mirroring_axes if predictor.use_mirroring else None
    return tiles * 2 ** len(mirror_axes or ())
