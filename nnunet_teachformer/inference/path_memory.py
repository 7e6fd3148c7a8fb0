"""What ``teachformer predict --device cpu`` measured to choose its CPU path, remembered per model and machine.

Auto's choice (``path_choice.choose_cpu_path``) runs each exact path on the model's first fold and builds each
engine: 10-30 s on a real-size model, every call. What it measured (seconds per tile, build seconds, each path's
logit difference to nnU-Net's own) depends only on the fold's weights, the patch, the machine and the software,
so it is kept in a small JSON file (``memory_file``) under a key of exactly those facts, and the next call with
the same facts reuses it: it recomputes the fastest exact path for its own number of forwards and folds and
builds only that one. A changed checkpoint, plans file, CPU, thread count or PyTorch/OpenVINO version is another
key, measured anew. Deleting the file forgets everything.
"""
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Optional

MEMORY_ENV = "TEACHFORMER_CACHE_DIR"  # where the file lives; default ~/.cache/nnunet_teachformer
KEPT = 64  # newest entries kept


def cache_folder() -> Path:
    """Where teachformer keeps what it measured or built on this machine (also ``build_cache``'s networks)."""
    return Path(os.environ.get(MEMORY_ENV) or Path.home() / ".cache" / "nnunet_teachformer")


def memory_file() -> Path:
    return cache_folder() / "cpu_path_choices.json"


def cpu_name() -> str:
    """The CPU's model name (Linux), else what Python's platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_key(checkpoint: Path, plans: Path, patch, channels: int, tolerance: float, paths) -> str:
    """The facts a measurement depends on, as one string: the first fold's checkpoint and the plans (path, size,
    modification time), the patch and input channels, the tolerance, the candidate paths, the CPU, PyTorch's
    threads and the versions of PyTorch and OpenVINO."""
    import torch
    try:
        from importlib.metadata import version
        openvino = version("openvino")
    except Exception:  # noqa: BLE001 - not installed: its path is left out, which is part of the key
        openvino = None
    files = {name: [str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns]
             for name, p in (("checkpoint", checkpoint), ("plans", plans))}
    return json.dumps({**files, "patch": [int(p) for p in patch], "channels": channels, "tolerance": tolerance,
                       "paths": sorted(paths), "cpu": cpu_name(), "threads": torch.get_num_threads(),
                       "torch": torch.__version__, "openvino": openvino}, sort_keys=True)


def _read() -> dict:
    try:
        entries = json.loads(memory_file().read_text())
        return entries if isinstance(entries, dict) else {}
    except (OSError, ValueError):  # none yet, unreadable or damaged: measured anew, and rewritten
        return {}


def recall(key: str) -> Optional[dict]:
    """The measurements remembered under ``key``, or None."""
    return _read().get(key)


def remember(key: str, measurements: dict) -> Optional[str]:
    """Keeps ``measurements`` (JSON-able) under ``key``, with the time; the file is replaced whole, never left half
    written. Returns why it could not be written (e.g. a read-only home), or None."""
    path = memory_file()
    entries = _read()
    entries.pop(key, None)
    entries[key] = dict(measurements, measured_at=time.strftime("%Y-%m-%d %H:%M"))
    entries = dict(list(entries.items())[-KEPT:])
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as tmp:
            json.dump(entries, tmp, indent=1)
        os.replace(tmp.name, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)
        return f"{type(e).__name__}: {e}"
    return None
