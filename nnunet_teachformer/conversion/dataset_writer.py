"""Writing an nnU-Net raw dataset all-or-nothing.

Every converter writes into a hidden temporary folder beside the target and moves it into place only
when the whole dataset, ``dataset.json`` included, is written: an interrupted conversion never leaves
a half dataset that nnU-Net would accept. An existing dataset with the same id is never replaced
unless the caller asks for it (``overwrite=True``); replacing one says what was made from the old data
(preprocessed data, trained models), which is stale from then on.
"""
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

from nnunet_teachformer.errors import TeachFormerError


def resolve_raw_root(out: Optional[Union[str, Path]]) -> Path:
    """The folder datasets are written to: ``out`` if given, else ``$nnUNet_raw``."""
    root = out if out is not None else os.environ.get("nnUNet_raw")
    if not root:
        raise TeachFormerError("No output folder: pass --out DIR or export nnUNet_raw=/path/to/nnUNet_raw "
                               "(the folder nnU-Net reads raw datasets from).")
    return Path(root).expanduser().resolve()


def dataset_folder_name(dataset_id: int, name: str) -> str:
    if not 1 <= int(dataset_id) <= 999:
        raise TeachFormerError(f"Dataset id {dataset_id} is outside 1..999, the range nnU-Net accepts.")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise TeachFormerError(f"Dataset name {name!r} may only use letters, digits, '_' and '-'.")
    return f"Dataset{int(dataset_id):03d}_{name}"


def existing_datasets_with_id(raw_root: Path, dataset_id: int):
    prefix = f"Dataset{int(dataset_id):03d}_"
    if not raw_root.is_dir():
        return []
    return sorted(p for p in raw_root.iterdir() if p.is_dir() and p.name.startswith(prefix))


@contextmanager
def atomic_dataset_folder(raw_root: Path, dataset_id: int, name: str, overwrite: bool = False) -> Iterator[Path]:
    """Yields a temporary folder to fill; on success it becomes ``raw_root/DatasetXXX_name``.

    Refuses (before anything is written) when a dataset with this id exists and ``overwrite`` is False.
    On any exception the temporary folder is removed and the existing dataset is left as it was.
    """
    target = raw_root / dataset_folder_name(dataset_id, name)
    existing = existing_datasets_with_id(raw_root, dataset_id)
    if existing and not overwrite:
        raise TeachFormerError(
            f"{existing[0]} already exists: dataset id {dataset_id} is taken. Pass --overwrite to replace it, "
            f"or choose another --dataset-id.")
    created_root = not raw_root.exists()
    raw_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=raw_root))
    try:
        yield tmp
        _swap_into_place(tmp, target, existing)
    except BaseException:  # Ctrl-C included: nothing half-written stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        if created_root and not any(raw_root.iterdir()):
            raw_root.rmdir()
        raise
    if existing:
        print(invalidation_note(dataset_id, existing))


def _swap_into_place(tmp: Path, target: Path, existing) -> None:
    """Renames ``tmp`` to ``target``, replacing the ``existing`` datasets of its id; if interrupted before the
    last rename, puts them back."""
    moved = []
    try:
        for old in existing:
            trash = old.with_name(f".{old.name}.replaced-{os.getpid()}")
            old.rename(trash)
            moved.append((trash, old))
        tmp.rename(target)
    except BaseException:
        for trash, old in reversed(moved):
            trash.rename(old)
        raise
    for trash, _ in moved:
        shutil.rmtree(trash)


def invalidation_note(dataset_id: int, replaced) -> str:
    """What a replaced dataset invalidates: its preprocessed data and the models trained on it."""
    prefix = f"Dataset{int(dataset_id):03d}_"
    note = f"Replaced {', '.join(str(p) for p in replaced)}."
    for variable, what, fix in (
            ("nnUNet_preprocessed", "The preprocessed data in", f"run `teachformer plan -d {dataset_id}` (it redoes "
                                                                 f"what changed; for nnU-Net's own plans also "
                                                                 f"`nnUNetv2_plan_and_preprocess -d {dataset_id}`)"),
            ("nnUNet_results", "The models in", "retrain them (`teachformer train`) after planning")):
        root = os.environ.get(variable)
        stale = sorted(p for p in Path(root).glob(prefix + "*") if p.is_dir()) if root and Path(root).is_dir() else []
        if stale:
            note += f" {what} {', '.join(map(str, stale))} came from the replaced data and may be stale: {fix}."
    return note
