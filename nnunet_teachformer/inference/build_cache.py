"""The ``openvino`` paths' compiled networks kept on disk, one per fold's weights and machine.

Building a fold for OpenVINO (a TorchScript trace, OpenVINO's conversion, the compilation) took the real-width
student 5-11 s per fold, every call; importing what was compiled takes ~0.2 s and gives the same logits
(benchmarks/README.md). So each compiled network is exported to ``<cache folder>/openvino/<key>.blob`` (the
folder of ``path_memory``), under a key of everything it depends on (``blob_key``): the weights' bytes and the
architecture, the tile shape, precision and threads, the CPU, the versions of PyTorch and OpenVINO, and this
package's conversion code. A blob is written whole (temporary file, then renamed) with a checksum in front; one
that does not match it, or that OpenVINO refuses, is deleted and built anew. The newest ``KEPT`` are kept.
"""
import hashlib
import io
import json
import os
import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Optional

from torch import nn

from nnunet_teachformer.inference import path_memory

KEPT = 32  # compiled networks kept (the student's are ~5 MB each)
CHECKSUM = hashlib.sha256


def blob_folder() -> Path:
    return path_memory.cache_folder() / "openvino"


def blob_key(network: nn.Module, shape, precision: str, threads: int, conversion: Path) -> str:
    """A name for what OpenVINO compiles from ``network`` (with its weights) for tiles of ``shape``; ``conversion``
    is the source file of the code that converts it."""
    import torch

    digest = CHECKSUM()
    for name, tensor in network.state_dict().items():
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    facts = {"architecture": f"{type(network).__module__}.{type(network).__qualname__} {network!r}",
             "shape": [int(n) for n in shape], "precision": precision, "threads": threads,
             "cpu": path_memory.cpu_name(), "torch": torch.__version__, "openvino": version("openvino"),
             "conversion": CHECKSUM(conversion.read_bytes()).hexdigest()}
    digest.update(json.dumps(facts, sort_keys=True).encode())
    return digest.hexdigest()


def load(key: str, core, config: dict):
    """The compiled network kept under ``key``, imported by ``core`` with ``config``, or None (none kept, or a
    damaged one, which is deleted)."""
    path = blob_folder() / f"{key}.blob"
    try:
        data = path.read_bytes()
    except OSError:
        return None
    checksum, blob = data[:CHECKSUM().digest_size], data[CHECKSUM().digest_size:]
    try:
        if CHECKSUM(blob).digest() != checksum:
            raise ValueError("checksum mismatch")
        compiled = core.import_model(io.BytesIO(blob), "CPU", config)
    except Exception as error:  # noqa: BLE001 - a blob OpenVINO cannot read is built anew, whatever it says
        warnings.warn(f"the compiled network {path} is damaged ({type(error).__name__}: {error}); it is deleted "
                      f"and built anew", RuntimeWarning, stacklevel=2)
        path.unlink(missing_ok=True)
        return None
    try:
        os.utime(path)  # the newest are kept
    except OSError:
        pass
    return compiled


def store(key: str, compiled) -> Optional[str]:
    """Keeps ``compiled`` under ``key`` and deletes the oldest beyond ``KEPT``. Returns why it could not be kept
    (e.g. a read-only home), or None."""
    folder = blob_folder()
    buffer = io.BytesIO()
    compiled.export_model(buffer)
    blob = buffer.getvalue()
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("wb", dir=folder, prefix=key, suffix=".tmp", delete=False) as tmp:
            tmp.write(CHECKSUM(blob).digest() + blob)
        os.replace(tmp.name, folder / f"{key}.blob")
    except OSError as error:
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)
        return f"{type(error).__name__}: {error}"
    _keep_newest(folder)
    return None


def _keep_newest(folder: Path) -> None:
    def modified(path: Path) -> int:
        try:
            return path.stat().st_mtime_ns
        except OSError:  # deleted meanwhile by another prediction
            return 0
    for old in sorted(folder.glob("*.blob"), key=modified, reverse=True)[KEPT:]:
        try:
            old.unlink(missing_ok=True)
        except OSError:  # not ours to delete: kept
            pass
