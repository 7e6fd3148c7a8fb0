"""Where a trained model came from: the record every trainer of this package keeps in its fold folder.

``fold_X/provenance.json`` lists the cases the model learnt from (``training_cases``), the cases that
chose its weights (``selection_cases``: the inner hold-out of early stopping), the fold's validation
cases, and ``input_fingerprint``: a hash of everything that shapes the network's input (the plans'
configuration, the dataset fingerprint, channels and labels). A distilled student compares its
teachers' records with its own fold and input, so a teacher trained under another split, or on data
re-planned or re-converted since, is refused even when its folder name and fold number fit.
"""
import hashlib
import json
from pathlib import Path
from typing import List, Optional, Tuple

from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

PROVENANCE_FILE = "provenance.json"
TEACHERS_FILE = "teachers.json"  # in a distilled student's fold_X: the teachers that taught it
# how a student's teachers.json says it knows what a teacher trained on
PROVENANCE_RECORDED = "recorded"  # the teacher's own provenance.json
PROVENANCE_DERIVED = "derived from nnU-Net's split"  # trained without this package: splits_final.json's fold


def input_fingerprint(plans: dict, configuration: str, dataset_json: dict, dataset_fingerprint: dict) -> str:
    """SHA-256 of what shapes a network's input: two models with equal fingerprints saw the same data."""
    parts = {
        "configuration": PlansManager(plans).get_configuration(configuration).configuration,
        "transpose_forward": plans.get("transpose_forward"),
        "intensity_properties": plans.get("foreground_intensity_properties_per_channel"),
        "dataset_fingerprint": dataset_fingerprint,
        "channels": dataset_json.get("channel_names", dataset_json.get("modality")),
        "labels": dataset_json.get("labels"),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def write_record(fold_folder: str, record: dict) -> None:
    save_json(record, str(Path(fold_folder) / PROVENANCE_FILE), sort_keys=False)


def read_record(fold_folder) -> Optional[dict]:
    """The record of a fold folder, or None if it has none (a model trained elsewhere)."""
    path = Path(fold_folder) / PROVENANCE_FILE
    return load_json(str(path)) if path.is_file() else None


def seen_cases(record: dict) -> set:
    """Every case whose labels influenced the model: it trained on them or chose its weights with them."""
    return set(record.get("training_cases", [])) | set(record.get("selection_cases", []))


def recorded_teachers(fold_folder) -> Optional[List[Tuple[str, str]]]:
    """(trainer, checkpoint file name) of each teacher in a distilled student's ``teachers.json``; None without one."""
    path = Path(fold_folder) / TEACHERS_FILE
    return [(t["trainer"], Path(t["checkpoint"]).name) for t in load_json(str(path))] if path.is_file() else None
