"""The ``openvino`` CPU paths' engine: one fold's network converted by OpenVINO and compiled for this CPU.

OpenVINO's CPU plugin picks its own kernels and memory layouts for the whole graph and fuses what follows a
convolution into it; on the student it ran about twice as fast as PyTorch's TorchScript paths
(benchmarks/README.md). What it compiled is kept on disk for the next call (``build_cache``). It is compiled with
float32 inference precision: on CPUs with AMX or AVX512-BF16 OpenVINO would otherwise run in bfloat16, whose
logits are not float32's. bfloat16 is the ``openvino_bf16`` path, an inexact lever (its measured cost:
``cpu_paths.LEVER_COSTS``).
"""
import contextlib
import copy
import ctypes
import queue
import threading
import warnings
from pathlib import Path

import torch
from torch import nn

from nnunet_teachformer.inference import build_cache
from nnunet_teachformer.optional_imports import optional_import

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def _openvino():
    return optional_import("openvino", extra="cpu", purpose="the openvino CPU path", package="OpenVINO")


def cpu_has_bfloat16() -> bool:
    """Whether OpenVINO computes bfloat16 on this CPU (AVX512-BF16 or AMX); elsewhere a bf16 hint runs float32."""
    return "BF16" in _openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class SplitReductionInstanceNorm(nn.Module):
    """An instance normalisation computed as OpenVINO computes accurately: means taken one spatial axis at a time.

    After a convolution, OpenVINO's CPU plugin takes a mean over a whole full-resolution tile (~600,000 voxels
    per channel) less accurately than PyTorch: with its own normalisation kernel (MVN; 3e-4 off even on a plain
    input), as a global average pool, and as reductions over one axis after another (which it merges into one;
    both exact on a plain input), the student's first block came out 7e-3 from PyTorch's result, 3e-2 in the
    logits. Means over one axis at a time that OpenVINO cannot merge (mean, sum, mean) keep the whole student
    within 1.5e-5. (A reshape between the reductions also keeps them apart, but makes OpenVINO reorder the
    convolutions' blocked layouts: 20 % of the forward.) Same statistics as ``norm``: biased variance, its eps,
    its affine weights.

    Args:
        norm: the PyTorch instance norm it replaces (without running statistics).
    """

    def __init__(self, norm: nn.modules.instancenorm._InstanceNorm):
        super().__init__()
        self.eps, self.weight, self.bias = norm.eps, norm.weight, norm.bias

    @staticmethod
    def _mean(x: torch.Tensor) -> torch.Tensor:
        mean = x
        for i, axis in enumerate(range(x.ndim - 1, 1, -1)):  # last axis first
            # OpenVINO merges consecutive reductions of one kind into one; a mean after a sum it leaves apart
            mean = mean.mean(axis, keepdim=True) if i % 2 == 0 else mean.sum(axis, keepdim=True) / x.shape[axis]
        return mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - self._mean(x)
        y = centred * torch.rsqrt(self._mean(centred * centred) + self.eps)
        if self.weight is not None:
            shape = (1, -1) + (1,) * (x.ndim - 2)
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def _accurate_norms(network: nn.Module) -> nn.Module:
    """A copy of ``network`` whose instance norms are ``SplitReductionInstanceNorm``s (the weights are shared)."""
    network = copy.copy(network)
    network._modules = dict(network._modules)
    for name, child in network._modules.items():
        if isinstance(child, nn.modules.instancenorm._InstanceNorm) and not child.track_running_stats:
            network._modules[name] = SplitReductionInstanceNorm(child)
        elif child is not None:
            network._modules[name] = _accurate_norms(child)
    return network


@contextlib.contextmanager
def _freed_blocks_returned():
    """Within: glibc hands every freed block of 128 kB or more straight back to the system. By default it raises
    that size to the largest block it has seen freed (the trace forward's activations, 19 MB) and keeps what is
    freed below it: the student's build then peaked 565 MB above its start instead of 231. After: glibc's
    ceilings for those sizes, fixed (32 MB, and 64 MB of free heap before it trims it), so that PyTorch's paths
    keep reusing their buffers."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        libc = None
    if libc is None:
        yield
        return
    libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)
        libc.mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024)


class OpenVinoNetwork:
    """Callable like the network on tiles of ``example``'s shape (the only shape nnU-Net's sliding window feeds),
    from up to ``threads`` threads at once: one OpenVINO stream of one thread each, so that each caller's tile runs
    on a core of its own. On the two lung CTs of benchmarks/README.md (2 cores) this predicted both in 68 s instead
    of 74 (means of five and four runs) against one stream of both threads taking one tile at a time: alone, a
    tile ran 6 % faster per core, and the work beside the forwards (nnU-Net's workers preprocessing and
    exporting, the float16 sums) holds up one stream instead of both threads of the one. Each stream keeps its
    own activation buffers (peak 1.86 instead of 1.72 GB there). Only one caller at a time is inside OpenVINO's
    Python API: two threads calling ``infer`` on their own requests at once hung both for good once (OpenVINO
    2026.4); the computation runs outside it, in parallel.

    Args:
        network: the fold's network with its weights loaded, in eval mode.
        example: a tile of the shape the compiled network will take (batch 1).
        threads: OpenVINO's threads, one stream each: the tiles computed at once.
        precision: OpenVINO's inference precision, ``"f32"`` (nnU-Net's logits within 1e-3) or ``"bf16"``.
    """

    def __init__(self, network: nn.Module, example: torch.Tensor, threads: int, precision: str = "f32"):
        ov = _openvino()
        self.shape = tuple(example.shape)
        config = {"INFERENCE_PRECISION_HINT": precision, "NUM_STREAMS": threads, "INFERENCE_NUM_THREADS": threads}
        key = build_cache.blob_key(network, self.shape, precision, threads, Path(__file__))
        core = ov.Core()
        self.compiled = build_cache.load(key, core, config)
        self.from_disk = self.kept = self.compiled is not None  # kept: the next build of these weights imports it
        if not self.from_disk:
            self.compiled = self._compiled(ov, core, network, example, config)
            problem = build_cache.store(key, self.compiled)
            self.kept = problem is None
            if problem:
                warnings.warn(f"the compiled network could not be kept in {build_cache.blob_folder()} ({problem}); "
                              f"the next prediction builds it again", RuntimeWarning, stacklevel=2)
        self.threads = threads
        self._requests = queue.Queue()  # the idle ones; a caller takes one for its tile
        for _ in range(threads):
            self._requests.put(self.compiled.create_infer_request())
        self._api = threading.Lock()  # held for each call into OpenVINO's Python API, not while a tile computes

    @staticmethod
    def _compiled(ov, core, network: nn.Module, example: torch.Tensor, config: dict):
        with _freed_blocks_returned():
            with torch.no_grad():  # from a TorchScript trace: OpenVINO's own tracing of the module takes twice as long
                traced = torch.jit.trace(_accurate_norms(network), example, check_trace=False)
                model = ov.convert_model(traced, example_input=example, input=[tuple(example.shape)])
            del traced
            return core.compile_model(model, "CPU", config)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape) != self.shape:
            raise ValueError(f"the openvino path was compiled for tiles of {self.shape}, not {tuple(x.shape)}")
        request = self._requests.get()
        try:
            with self._api:
                request.start_async({0: x.detach().contiguous().numpy()}, share_inputs=True)
            request.wait()
            with self._api:
                out = request.get_output_tensor(0).data.copy()  # the request reuses its output buffer
        finally:
            self._requests.put(request)
        return torch.from_numpy(out)

    def release_memory(self) -> None:
        """Frees the buffers of the tiles' activations until the next call (which allocates them again); waits for
        the tiles in flight."""
        idle = [self._requests.get() for _ in range(self.threads)]
        try:
            with self._api:
                self.compiled.release_memory()
        finally:
            for request in idle:
                self._requests.put(request)
