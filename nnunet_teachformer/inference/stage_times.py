"""Where the wall time of ``teachformer predict --device cpu`` goes, stage by stage (``--stage-times PATH``).

The predicting thread spends each second either in one of ``STAGES`` or in between them (the interpreter's start,
the command line's imports, exit). A stage inside another counts only in the inner one, so the stages add up to
no more than the wall time. nnU-Net reads, preprocesses, resamples back and writes in worker processes, alongside
the forwards: here they appear as the time the predicting thread waits for them (``preprocessing_wait``,
``export_wait``); what they cost in CPU time on their own is measured by benchmarks/real_ct_prediction.py.
"""
import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List

STAGES: Dict[str, str] = {
    "imports": "PyTorch, nnU-Net and the CPU paths imported by the predict command",
    "checks": "teachformer's checks of the checkpoints (each loaded once) and input images (each read once)",
    "initialise": "nnU-Net's predictor built: plans, network, every fold's weights loaded",
    "path_choice": "auto: each CPU path run on a random patch and timed (its build is in 'build')",
    "build": "a network traced or converted and compiled for a fold's weights (path choice and prediction), or "
             "imported as compiled by an earlier call",
    "preprocessing_wait": "waiting for nnU-Net's preprocessing workers: their start, reading and preprocessing",
    "fold_switch": "a fold's weights loaded into the network before its sliding window, the folds' sum",
    "aggregation": "sliding window around the forwards: padding, cutting tiles, Gaussian weights, float16 sums",
    "forwards": "the network's forwards on the tiles (mirrored ones included), or waiting for them",
    "export_wait": "nnU-Net's export workers started and waited for (resampling back, writing), beyond the "
                   "forwards they ran alongside; the prediction folder's records",
    "postprocessing": "the connected-component postprocessing chosen by nnUNetv2_find_best_configuration",
}


def peak_resident_bytes() -> int:
    """This process's peak resident memory (Linux's VmHWM), or 0 where /proc does not give it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class StageTimes:
    """Seconds per stage of ``STAGES`` spent by the thread that created it (stages entered on other threads are
    not timed: their work shows as this thread's wait), and the tile forwards of any thread."""

    def __init__(self):
        self.started_at = time.time()
        self.seconds: Dict[str, float] = {name: 0.0 for name in STAGES}
        self.tile_forwards = 0
        self.builds: List[str] = []  # the engine of each build, in order
        self.builds_from_disk = 0  # of them, compiled networks imported from ``build_cache``
        self._thread = threading.get_ident()
        self._open: List[List] = []  # [name, start, seconds spent in inner stages]
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if name not in STAGES:
            raise KeyError(f"unknown stage {name}")
        if threading.get_ident() != self._thread:
            yield
            return
        entry = [name, time.perf_counter(), 0.0]
        self._open.append(entry)
        try:
            yield
        finally:
            self._open.pop()
            elapsed = time.perf_counter() - entry[1]
            self.seconds[name] += elapsed - entry[2]
            if self._open:
                self._open[-1][2] += elapsed

    def count_forwards(self, forwards: int) -> None:
        with self._lock:
            self.tile_forwards += forwards

    def record(self) -> dict:
        return {"started_at": self.started_at, "finished_at": time.time(),
                "seconds": {name: round(s, 4) for name, s in self.seconds.items()},
                "tile_forwards": self.tile_forwards, "builds": list(self.builds),
                "builds_from_disk": self.builds_from_disk,
                "peak_resident_bytes": peak_resident_bytes(), "stages": STAGES}

    def write(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.record(), indent=2))
