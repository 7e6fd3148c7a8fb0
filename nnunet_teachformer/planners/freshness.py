"""Ties preprocessed data to the raw data it came from, so that nothing is trained on stale data.

``teachformer plan`` records, in ``nnUNet_preprocessed/<Dataset>/raw_signature.json``, the SHA-1 of every
raw training case's files (its images and its label, hashed together) from which it extracted the
fingerprint and wrote each data folder. A re-converted dataset, even one with the same file sizes, then
differs case by case: ``plan`` re-does the fingerprint and the data, and a trainer refuses to start.

What was made without a record (by ``nnUNetv2_plan_and_preprocess``, or before this file existed) is judged
by modification time in ``plan`` only (a raw file newer than it means it is stale) and is never refused at
training: its freshness is unknown. Without ``nnUNet_raw`` (a training machine with only the preprocessed
data) nothing can be compared, and nothing is refused.
"""
import hashlib
import json
import os
from pathlib import Path
from typing import Dict, List, Optional

from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.nnunet_paths import dataset_id

SIGNATURE_FILE = "raw_signature.json"
FINGERPRINT = "dataset_fingerprint.json"
DATASET_JSON_KEYS = ("channel_names", "labels", "file_ending", "regions_class_order")
DATASET_JSON_ENTRY = "dataset.json"  # the keys above, which change what preprocessing writes


def _sha1(paths) -> str:
    digest = hashlib.sha1()
    for path in paths:
        digest.update(os.path.basename(path).encode() + b"\0")
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        except FileNotFoundError:
            digest.update(b"<missing>")
    return digest.hexdigest()


def raw_case_signatures(raw_dataset_folder) -> Dict[str, str]:
    """{case id: SHA-1 of its image and label files} for the training cases, plus the preprocessing-relevant
    keys of dataset.json under ``dataset.json``."""
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    folder = str(raw_dataset_folder)
    dataset_json = json.loads(Path(folder, "dataset.json").read_text())
    cases = get_filenames_of_train_images_and_targets(folder, dataset_json)
    signatures = {case: _sha1(list(files["images"]) + [files["label"]]) for case, files in sorted(cases.items())}
    relevant = {k: dataset_json.get(k) for k in DATASET_JSON_KEYS}
    signatures[DATASET_JSON_ENTRY] = hashlib.sha1(json.dumps(relevant, sort_keys=True).encode()).hexdigest()
    return signatures


def changed_cases(recorded: Dict[str, str], current: Dict[str, str]) -> List[str]:
    """'PHANTOM_003 changed', 'PHANTOM_009 added', 'PHANTOM_010 removed', in case order."""
    changes = []
    for case in sorted(set(recorded) | set(current)):
        if case not in recorded:
            changes.append(f"{case} added")
        elif case not in current:
            changes.append(f"{case} removed")
        elif recorded[case] != current[case]:
            changes.append(f"{case} changed")
    return changes


def summarize_changes(changes: List[str], shown: int = 3) -> str:
    more = f" and {len(changes) - shown} more" if len(changes) > shown else ""
    return f"{', '.join(changes[:shown])}{more} ({len(changes)} of the raw cases differ)"


def load_record(preprocessed_dataset_folder) -> dict:
    """{artifact (fingerprint file or data folder name): {"cases": signatures, ...}} recorded by ``plan``."""
    path = Path(preprocessed_dataset_folder, SIGNATURE_FILE)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text()).get("artifacts", {})
    except (ValueError, AttributeError):
        return {}  # an unreadable record proves nothing: treated as absent


def save_record(preprocessed_dataset_folder, artifact: str, signatures: Optional[Dict[str, str]], **extra) -> None:
    """Records (or, with ``signatures`` None, forgets) the raw state ``artifact`` was made from."""
    folder = Path(preprocessed_dataset_folder)
    artifacts = load_record(folder)
    if signatures is None:
        artifacts.pop(artifact, None)
    else:
        artifacts[artifact] = {"cases": signatures, **extra}
    content = {"about": "SHA-1 of each raw training case (images + label) that each artifact was made from; "
                        "written by `teachformer plan`, checked by `teachformer plan` and the trainers",
               "artifacts": artifacts}
    tmp = folder / (SIGNATURE_FILE + ".tmp")
    tmp.write_text(json.dumps(content, indent=1))
    tmp.replace(folder / SIGNATURE_FILE)


def _newest_mtime(paths) -> float:
    return max((os.stat(p).st_mtime for p in paths if os.path.exists(p)), default=0.0)


def stale_changes(preprocessed_dataset_folder, artifact: str, current: Dict[str, str], raw_dataset_folder) -> \
        Optional[List[str]]:
    """The raw changes since ``artifact`` was made ([] if current); None if it does not exist.

    Without a record the artifact is stale when a raw file is newer than the oldest file it consists of."""
    path = Path(preprocessed_dataset_folder, artifact)
    if not path.exists():
        return None
    record = load_record(preprocessed_dataset_folder).get(artifact)
    if record is not None:
        return changed_cases(record["cases"], current)
    made = [path] if path.is_file() else [p for p in path.iterdir() if p.is_file()]
    if not made:
        return None
    oldest = min(p.stat().st_mtime for p in made)
    raw = Path(raw_dataset_folder)
    newer = [p.name for sub in ("imagesTr", "labelsTr") if (raw / sub).is_dir()
             for p in sorted((raw / sub).iterdir()) if p.stat().st_mtime > oldest]
    return [f"{name} is newer than {artifact}" for name in newer]


def check_preprocessed_is_current(dataset_name: str, data_identifier: str, configuration: str = "3d_fullres") -> None:
    """TeachFormerError naming the changed cases and ``teachformer plan`` when the data folder ``data_identifier``
    was recorded from raw data that has changed since. Silent when nothing can be compared."""
    raw_root, preprocessed_root = os.environ.get("nnUNet_raw"), os.environ.get("nnUNet_preprocessed")
    if not raw_root or not preprocessed_root:
        return
    raw, base = Path(raw_root, dataset_name), Path(preprocessed_root, dataset_name)
    record = load_record(base).get(data_identifier)
    if record is None or not (raw / "dataset.json").is_file():
        return
    changes = changed_cases(record["cases"], raw_case_signatures(raw))
    if changes:
        raise TeachFormerError(
            f"The preprocessed data {base / data_identifier} is stale: the raw data in {raw} changed after it was "
            f"preprocessed: {summarize_changes(changes)}. Training on it would train on the old images and labels. "
            f"Run `teachformer plan -d {dataset_id(dataset_name)} -c {record.get('configuration', configuration)}` to redo the "
            f"fingerprint and preprocessing, then start training again.")
