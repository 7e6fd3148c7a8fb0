"""Shared set-up of the benchmark scripts in this folder (they are not tests and not part of the package).

Every benchmark works in a scratch nnU-Net folder tree (``--workdir``, or a temporary folder removed at the
end) holding the package's synthetic PET/CT phantom (``convert_synthetic``) at the size it needs, planned
with ``TeachFormerPlans`` (the package's planner) and, where needed, nnU-Net's default ``nnUNetPlans``.
Nothing is downloaded. A dataset is named after its size (``Dataset9NN_TeachFormerBench<size>``), so a
reused ``--workdir`` only converts and plans what it does not have yet.

Trainers are built the way ``nnUNetv2_train`` builds them (nnU-Net's ``get_trainer_from_args``: plans and
dataset.json from the preprocessed folder, ``continue_training`` False). The checkpoints a benchmark needs
are written from freshly initialised trainers with nnU-Net's own ``save_checkpoint``: every timing uses
untrained weights, which cost exactly as much to run as trained ones.
"""
import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

DEVICES = ("cpu", "cuda")
BENCH_DATASET_BASE_ID = 900


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", choices=DEVICES, default="cpu")
    parser.add_argument("--tiny", action="store_true",
                        help="smallest sizes (tiny presets, 32^3 phantom, one timed iteration): a smoke run")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    parser.add_argument("--workdir", help="nnU-Net folder tree to create or reuse (default: a temporary folder, "
                                          "removed at the end)")
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch and onnxruntime (default: PyTorch's, "
                                                    "one per core); 1 is faster where other jobs share the cores")
    return parser


def set_threads(threads: Optional[int]) -> None:
    import torch
    if threads:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def workspace(workdir: Optional[str]) -> Iterator[Path]:
    """Points nnUNet_raw/_preprocessed/_results at ``workdir`` (or a temporary folder) for the block.

    ``nnUNet_compile`` defaults to off, so the numbers do not depend on whether torch.compile works for a
    network on the machine at hand.
    """
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="teachformer_bench_"))
    saved = dict(os.environ)
    try:
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            (root / name).mkdir(parents=True, exist_ok=True)
            os.environ[name] = str(root / name)
        os.environ.setdefault("nnUNet_compile", "f")
        yield root
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if not workdir:
            shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Hides what nnU-Net prints (citation banner, plans, progress) unless BENCH_VERBOSE=1."""
    if os.environ.get("BENCH_VERBOSE"):
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _dataset_folder(root_variable: str, dataset_id: int) -> List[Path]:
    return list(Path(os.environ[root_variable]).glob(f"Dataset{dataset_id:03d}_*"))


def _remove_dataset(dataset_id: int) -> None:
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        for folder in _dataset_folder(variable, dataset_id):
            shutil.rmtree(folder)


def _plan_nnunet_default(dataset_id: int, processes: int) -> None:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprint_dataset,
                                                                      plan_experiment_dataset, preprocess_dataset)
    extract_fingerprint_dataset(dataset_id, num_processes=processes, check_dataset_integrity=True, clean=False,
                                verbose=False)
    plan_experiment_dataset(dataset_id)
    preprocess_dataset(dataset_id, "nnUNetPlans", ["3d_fullres"], [processes], verbose=False)


def plan(dataset_id: int, plans: Sequence[str], processes: int = 2) -> str:
    """Plans and preprocesses 3d_fullres of ``dataset_id`` with each of ``plans`` that is not on disk yet
    (nnUNetPlans first, so TeachFormerPlans can reuse its data when the preprocessing is identical)."""
    from nnunet_teachformer.planners.plan import plan_dataset

    name = _dataset_folder("nnUNet_raw", dataset_id)[0].name
    # nnU-Net's planner sets torch's thread count from nnUNet_n_proc_DA, which must therefore be >= 1 here
    with quiet(), environment(nnUNet_n_proc_DA=str(max(1, processes))):
        for plans_name in sorted(plans, key=lambda p: p != "nnUNetPlans"):
            plans_file = Path(os.environ["nnUNet_preprocessed"], name, f"{plans_name}.json")
            if plans_file.is_file():
                continue
            if plans_name == "nnUNetPlans":
                _plan_nnunet_default(dataset_id, processes)
            elif plans_name == "TeachFormerPlans":
                plan_dataset(dataset_id, configuration="3d_fullres", num_processes=processes, progress=False)
            else:
                raise ValueError(f"unknown plans {plans_name}")
    return name


def phantom(size: int, plans: Sequence[str], test_cases: int = 1, processes: int = 2) -> str:
    """``Dataset9NN_TeachFormerBench<size>``: 5 training phantoms of ``size``^3 mm at 1 mm (+ held-out cases),
    planned and preprocessed with ``plans``. Returns the dataset name."""
    from nnunet_teachformer.conversion.synthetic import convert_synthetic

    if size % 16:
        raise SystemExit(f"phantom size {size}: use a multiple of 16")
    dataset_id = BENCH_DATASET_BASE_ID + size // 16
    expected = f"Dataset{dataset_id:03d}_TeachFormerBench{size}"
    existing = _dataset_folder("nnUNet_raw", dataset_id)
    if existing and (existing[0].name != expected or
                     len(list((existing[0] / "imagesTs").glob("*_0000.nii.gz"))) < test_cases):
        _remove_dataset(dataset_id)
        existing = []
    if not existing:
        convert_synthetic(dataset_id, 5, size=size, num_test_cases=test_cases, name=f"TeachFormerBench{size}",
                          progress=False)
    return plan(dataset_id, plans, processes)


def load_plans(dataset_name: str, plans_identifier: str) -> dict:
    from batchgenerators.utilities.file_and_folder_operations import load_json
    return load_json(str(Path(os.environ["nnUNet_preprocessed"], dataset_name, f"{plans_identifier}.json")))


def make_trainer(trainer_name: str, dataset_name: str, plans_identifier: str, device, fold: int = 0,
                 patch_size: Optional[Sequence[int]] = None, batch_size: Optional[int] = None,
                 configuration: str = "3d_fullres"):
    """A trainer as ``nnUNetv2_train`` builds it; ``patch_size``/``batch_size`` override the plans' values."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    with quiet():
        trainer_class = recursive_find_trainer_class_by_name(trainer_name)
    if trainer_class is None:
        raise SystemExit(f"nnU-Net cannot find the trainer {trainer_name}; is nnunet-teachformer installed?")
    plans = load_plans(dataset_name, plans_identifier)
    config = plans["configurations"][configuration]
    if patch_size is not None:
        config["patch_size"] = [int(p) for p in patch_size]
    if batch_size is not None:
        config["batch_size"] = int(batch_size)
    plans["continue_training"] = False
    dataset_json = load_json(str(Path(os.environ["nnUNet_preprocessed"], dataset_name, "dataset.json")))
    with quiet():
        return trainer_class(plans=plans, configuration=configuration, fold=fold, dataset_json=dataset_json,
                             device=device)


def write_untrained_checkpoint(trainer) -> Path:
    """Initialises ``trainer`` and saves ``checkpoint_final.pth`` with nnU-Net's ``save_checkpoint``, plus the
    plans.json/dataset.json that nnU-Net's predictor reads from the model folder (as ``on_train_start`` does)."""
    from batchgenerators.utilities.file_and_folder_operations import save_json

    with quiet():
        trainer.initialize()
        trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()  # records the TTA mirror axes
        save_json(trainer.plans_manager.plans, os.path.join(trainer.output_folder_base, "plans.json"),
                  sort_keys=False)
        save_json(trainer.dataset_json, os.path.join(trainer.output_folder_base, "dataset.json"), sort_keys=False)
        path = Path(trainer.output_folder, "checkpoint_final.pth")
        trainer.save_checkpoint(str(path))
    return path


# timing -----------------------------------------------------------------------------------------------
def synchronize(device) -> None:
    import torch
    if getattr(device, "type", device) == "cuda":
        torch.cuda.synchronize()


def timed(fn, device) -> float:
    """Seconds ``fn()`` takes, with the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


# reporting --------------------------------------------------------------------------------------------
def machine(device: str) -> Dict[str, object]:
    """What the numbers were measured on, including the load from other processes (the timings' noise)."""
    import torch

    from nnunet_teachformer.inference.path_memory import cpu_name
    info = {"device": device, "python": platform.python_version(), "torch": torch.__version__,
            "cpu": cpu_name(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()]}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (numbers as given; None as '-')."""
    cells = [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = lambda values: "| " + " | ".join(str(v).ljust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells])


def write_json(path: Optional[str], payload: dict) -> None:
    payload.setdefault("machine", {})["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2, default=str))
        print(f"\nJSON: {path}")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
