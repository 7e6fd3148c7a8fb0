"""The model card that travels with a shared model: what the model is, who taught it, how well and how fast
it works, what it expects as input, and what it must not be used for.

``teachformer export --zip`` writes it into the model folder as ``MODEL_CARD.md`` and ``model_card.json``
(the same facts, for people and for programs) and packs both into the zip. model_card.json also records
the SHA-256 of MODEL_CARD.md as written: the next export replaces the card only while that hash still matches
(a card someone wrote or edited is kept, unless ``--overwrite``). The facts:

- model: dataset, trainer, plans, configuration, folds, checkpoint, the versions it was exported with;
- teachers per fold: ``fold_X/teachers.json`` as the distillation run wrote it (trainer, checkpoint, and the
  teacher's provenance record where there is one); a model trained without distillation has none;
- cross-validated Dice: nnU-Net's ``fold_X/validation/summary.json`` (foreground mean and per label), as mean
  and sd over the folds (sd with ddof 1, as ``teachformer report``; none for a single fold);
- parameters and GFLOPs of one forward pass of one patch (``evaluation.complexity``);
- CPU time per case: nnU-Net's predictor with the lowest fold, mirroring on (``nnUNetv2_predict``'s default),
  on the first validation case of that fold (``evaluation.latency``); it needs the raw images, otherwise the
  card says why it is missing;
- input: target spacing, patch size, channels and their normalisation, labels, file ending;
- intended use, and that the model is not for clinical use.
"""
import hashlib
import json
import math
import os
from importlib import metadata
from pathlib import Path
from typing import Optional, Sequence

from nnunet_teachformer.inference.path_memory import cpu_name
from nnunet_teachformer.nnunet_paths import dataset_id, model_identifier

MODEL_CARD_MD = "MODEL_CARD.md"
MODEL_CARD_JSON = "model_card.json"
CARD_FILES = (MODEL_CARD_MD, MODEL_CARD_JSON)
MARKDOWN_HASH = "markdown_sha256"

NOT_FOR_CLINICAL_USE = (
    "NOT FOR CLINICAL USE. This model is a research artefact, not a medical device: it has not been cleared or "
    "approved by any regulator, and its output must not be used for diagnosis, treatment planning or any other "
    "decision about a patient.")

# how nnU-Net normalises each channel, in words: the model card's input section and export's student.json
NORMALIZATION_RECIPES = {
    "CTNormalization": "clip to [percentile_00_5, percentile_99_5], subtract mean, divide by std (numbers below, "
                       "from the training set's foreground)",
    "ZScoreNormalization": "per image: subtract the image's mean, divide by its std (inside the nonzero mask of all "
                           "channels if use_mask_for_norm, voxels outside set to 0)",
    "NoNormalization": "none: intensities as read, as float32",
    "RescaleTo01Normalization": "per image: subtract the minimum, divide by the maximum",
    "RGBTo01Normalization": "divide by 255",
}


def _version(distribution: str) -> Optional[str]:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _mean_sd(values: Sequence[float]) -> dict:
    """``evaluation.statistics.mean_sd`` (NaN folds left out) as JSON: None where undefined, and its fold count."""
    from nnunet_teachformer.evaluation.statistics import mean_sd
    mean, sd = mean_sd(values)
    return {"mean": None if math.isnan(mean) else mean, "sd": None if math.isnan(sd) else sd,
            "folds": sum(not math.isnan(v) for v in values)}


def _network(trainer_class: type) -> Optional[str]:
    spec = getattr(trainer_class, "network_spec", None)
    return f"{spec.name} ({trainer_class.network_preset} preset)" if spec is not None else None


def _label_names(dataset_json: dict) -> dict:
    """summary.json's label keys ("1", or "(1, 2)" for a region) -> the dataset's names."""
    names = {}
    for name, value in dataset_json["labels"].items():
        key = str(value) if isinstance(value, int) else str(tuple(value)) if len(value) > 1 else str(value[0])
        names.setdefault(key, name)
    return names


def _teachers(folder: Path, folds: Sequence) -> Optional[dict]:
    from nnunet_teachformer.trainers.teachformer import TEACHERS_FILE
    records = {}
    for fold in folds:
        record = folder / f"fold_{fold}" / TEACHERS_FILE
        records[str(fold)] = json.loads(record.read_text()) if record.is_file() else None
    return records


def _validation_dice(folder: Path, folds: Sequence, dataset_json: dict) -> dict:
    names = _label_names(dataset_json)
    per_fold = {}
    for fold in folds:
        summary = json.loads((folder / f"fold_{fold}" / "validation" / "summary.json").read_text())
        per_fold[str(fold)] = {
            "foreground_mean": float(summary["foreground_mean"]["Dice"]),
            "labels": {names.get(k, k): float(v["Dice"]) for k, v in summary["mean"].items()},
            "cases": len(summary["metric_per_case"])}
    label_keys = list(next(iter(per_fold.values()))["labels"]) if per_fold else []
    return {
        "source": "nnU-Net's fold_X/validation/summary.json (cross-validation: each fold's held-out cases)",
        "per_fold": per_fold,
        "foreground_mean": _mean_sd([f["foreground_mean"] for f in per_fold.values()]),
        "labels": {k: _mean_sd([f["labels"][k] for f in per_fold.values()]) for k in label_keys},
    }


def _cpu_time(folder: Path, fold, dataset_json: dict, raw_folder: Optional[Path], checkpoint: str) -> dict:
    import torch

    from nnunet_teachformer.evaluation.gallery import case_files
    from nnunet_teachformer.evaluation.latency import time_inference
    from nnunet_teachformer.evaluation.metrics import case_id

    summary = json.loads((folder / f"fold_{fold}" / "validation" / "summary.json").read_text())
    cases = sorted(case_id(c["prediction_file"], dataset_json["file_ending"]) for c in summary["metric_per_case"])
    if not cases:
        return {"seconds": None, "not_measured": f"fold {fold} has no validation case"}
    images = raw_folder / "imagesTr" if raw_folder else None
    files = case_files(images, cases[0], dataset_json) if images else []
    if not files or not all(f.is_file() for f in files):
        return {"seconds": None, "not_measured": f"the raw images of {cases[0]} are not in "
                                                 f"{images or 'nnUNet_raw (not set)'}"}
    latency = time_inference(folder, fold, [str(f) for f in files], cases[0], device="cpu", mirroring=True,
                             checkpoint=checkpoint)
    return {"seconds": latency.seconds, "case": latency.case, "fold": latency.fold, "mirroring": latency.mirroring,
            "torch_threads": torch.get_num_threads(), "cpu": cpu_name(),
            "how": "nnU-Net's nnUNetPredictor, one fold, end to end (preprocessing, sliding window with Gaussian "
                   "weighting and mirroring, resampling), one warm-up patch not timed"}


def build_model_card(folder, trainer_class: type, configuration: str, folds: Sequence, checkpoint: str,
                     raw_folder: Optional[Path] = None, timing: bool = True) -> dict:
    """The card's facts for the model in ``folder`` (an nnU-Net ``<Trainer>__<Plans>__<Configuration>`` folder)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    import nnunet_teachformer
    from nnunet_teachformer.evaluation.complexity import model_folder_complexity
    from nnunet_teachformer.trainers.teachformer import TeachFormerTrainer

    folder = Path(folder)
    plans = json.loads((folder / "plans.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    config = PlansManager(plans).get_configuration(configuration)
    complexity = model_folder_complexity(folder, trainer_class, configuration)
    distilled = issubclass(trainer_class, TeachFormerTrainer)
    intensities = plans.get("foreground_intensity_properties_per_channel", {})
    channels = []
    for (k, name), scheme in zip(sorted(dataset_json["channel_names"].items(), key=lambda kv: int(kv[0])),
                                 config.normalization_schemes):
        channel = {"index": int(k), "name": name, "normalization": scheme,
                   "recipe": NORMALIZATION_RECIPES.get(scheme, "see nnU-Net's normalization scheme of this name")}
        if scheme == "CTNormalization":  # its numbers come from the training set: the receiver cannot recompute them
            channel["intensity_properties"] = {key: float(intensities[k][key]) for key in
                                               ("mean", "std", "percentile_00_5", "percentile_99_5")}
        channels.append(channel)
    labels = {name: value for name, value in dataset_json["labels"].items()}
    foreground = [name for name, value in labels.items() if value != 0]
    dataset = dataset_id(plans["dataset_name"])
    fold_args = " ".join(str(f) for f in folds)
    return {
        "card_format": 1,
        "model": {
            "dataset": plans["dataset_name"], "trainer": trainer_class.__name__, "plans": plans["plans_name"],
            "configuration": configuration, "folds": [f if f == "all" else int(f) for f in folds],
            "checkpoint": checkpoint, "distilled": distilled,
            "network": _network(trainer_class),
            "exported_with": {"nnunet-teachformer": nnunet_teachformer.__version__, "nnunetv2": _version("nnunetv2"),
                              "torch": _version("torch")},
        },
        "intended_use": (
            f"Research on automatic segmentation of {', '.join(foreground)} in {', '.join(c['name'] for c in channels)} "
            f"images like those of {plans['dataset_name']} ({dataset_json.get('numTraining', '?')} training cases): "
            f"the same modalities, channel order, acquisition and preprocessing. Performance on other populations, "
            f"scanners or protocols is unknown and must be measured before any use."),
        "not_for_clinical_use": NOT_FOR_CLINICAL_USE,
        "teachers": _teachers(folder, folds) if distilled else None,
        "validation_dice": _validation_dice(folder, folds, dataset_json),
        "complexity": {"parameters": complexity.parameters, "gflops": complexity.gflops,
                       "input_shape": list(complexity.input_shape),
                       "how": "one forward pass of one patch, torch FlopCounterMode (a multiply-add is 2 FLOPs)"},
        "cpu_time_per_case": _cpu_time(folder, folds[0], dataset_json, raw_folder, checkpoint) if timing
        else {"seconds": None, "not_measured": "timing switched off (--no-timing)"},
        "input": {
            "channels": channels, "file_ending": dataset_json["file_ending"],
            "spacing": [float(s) for s in config.spacing], "patch_size": [int(p) for p in config.patch_size],
            "labels": labels,
        },
        "usage": [
            "nnUNetv2_install_pretrained_model_from_zip <this zip>   # into $nnUNet_results",
            f"pip install nnunet-teachformer                          # makes nnU-Net find {trainer_class.__name__}",
            f"nnUNetv2_predict -i <images> -o <output> -d {dataset} -c {configuration} -p {plans['plans_name']} "
            f"-tr {trainer_class.__name__} -f {fold_args}",
        ],
    }


def _mean_sd_text(value: dict, percent: bool = True) -> str:
    if value["mean"] is None:
        return "n/a"
    scale = 100 if percent else 1
    sd = f" +- {value['sd'] * scale:.1f}" if value["sd"] is not None else " (one fold, no sd)"
    return f"{value['mean'] * scale:.1f}{sd}"


def render_markdown(card: dict) -> str:
    model, dice, inp = card["model"], card["validation_dice"], card["input"]
    folds = ", ".join(str(f) for f in model["folds"])
    lines = [f"# Model card: {model['trainer']} on {model['dataset']}", "",
             f"**{card['not_for_clinical_use']}**", "",
             "## Intended use", "", card["intended_use"], "",
             "## Model", "",
             f"- nnU-Net model `{model_identifier(model['trainer'], model['plans'], model['configuration'])}`, folds {folds} "
             f"(`{model['checkpoint']}`), network {model['network'] or 'see the trainer'}",
             "- exported with " + ", ".join(f"{k} {v}" for k, v in model["exported_with"].items()),
             f"- parameters: {card['complexity']['parameters']:,}; GFLOPs per patch "
             f"{card['complexity']['input_shape']}: {card['complexity']['gflops']:.2f}"]
    timing = card["cpu_time_per_case"]
    if timing["seconds"] is not None:
        lines.append(f"- CPU time per case: {timing['seconds']:.1f} s (case {timing['case']}, fold {timing['fold']}, "
                     f"mirroring {'on' if timing['mirroring'] else 'off'}, {timing['torch_threads']} threads, "
                     f"{timing['cpu']})")
    else:
        lines.append(f"- CPU time per case: not measured ({timing['not_measured']})")
    lines += ["", "## Teachers", ""]
    if card["teachers"] is None:
        lines.append("Trained without distillation: no teachers.")
    for fold, teachers in (card["teachers"] or {}).items():
        if teachers is None:
            lines.append(f"- fold {fold}: not recorded (trained before fold_X/teachers.json existed)")
            continue
        described = []
        for t in teachers:
            text = f"`{t['trainer']}` (`{t['checkpoint']}`)"
            if t.get("provenance"):
                text += " provenance " + json.dumps(t["provenance"], sort_keys=True)
            described.append(text)
        lines.append(f"- fold {fold}: " + "; ".join(described))
    lines += ["", "## Cross-validated Dice (%)", "", f"From {dice['source']}; mean +- sd over folds.", "",
              "| | " + " | ".join(["foreground mean"] + list(dice["labels"])) + " |",
              "|---" * (len(dice["labels"]) + 2) + "|",
              "| all folds | " + " | ".join([_mean_sd_text(dice["foreground_mean"])] +
                                          [_mean_sd_text(v) for v in dice["labels"].values()]) + " |"]
    for fold, values in dice["per_fold"].items():
        lines.append(f"| fold {fold} ({values['cases']} cases) | " + " | ".join(
            [f"{values['foreground_mean'] * 100:.1f}"] + [f"{v * 100:.1f}" for v in values["labels"].values()]) + " |")
    lines += ["", "## Input", "",
              f"- target spacing (mm, nnU-Net's axis order): {inp['spacing']}; patch size {inp['patch_size']}",
              f"- files: one per channel, `CASE_XXXX{inp['file_ending']}`, channels in this order:"]
    for c in inp["channels"]:
        numbers = ", ".join(f"{k} {v:.4g}" for k, v in c.get("intensity_properties", {}).items())
        lines.append(f"  - `{c['index']:04d}` {c['name']}: {c['normalization']} ({c['recipe']})"
                     + (f": {numbers}" if numbers else ""))
    lines += ["- labels: " + ", ".join(f"{v} = {k}" for k, v in inp["labels"].items()), "",
              "## Usage", "", "```"] + card["usage"] + ["```", ""]
    return "\n".join(lines)


def _json_safe(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def foreign_card_files(folder) -> list:
    """The card files in ``folder`` that ``write_model_card`` did not write, or that were edited since: someone's
    own text, which an export must not replace. Ours: a model_card.json with ``card_format`` whose
    ``markdown_sha256`` is the hash of MODEL_CARD.md as it is now."""
    markdown, record_file = Path(folder) / MODEL_CARD_MD, Path(folder) / MODEL_CARD_JSON
    try:
        record = json.loads(record_file.read_text())
    except (OSError, ValueError):
        record = None
    ours = isinstance(record, dict) and "card_format" in record
    foreign = [record_file] if record_file.exists() and not ours else []
    if markdown.exists() and not (ours and markdown.is_file()
                                  and record.get(MARKDOWN_HASH) == _sha256(markdown.read_text(errors="replace"))):
        foreign.insert(0, markdown)
    return foreign


def write_model_card(folder, card: dict) -> list:
    """Writes MODEL_CARD.md and model_card.json (with the Markdown's hash: see ``foreign_card_files``) into
    ``folder``; returns their paths."""
    folder = Path(folder)
    paths = [folder / MODEL_CARD_MD, folder / MODEL_CARD_JSON]
    markdown = render_markdown(card)
    record = {**_json_safe(card), MARKDOWN_HASH: _sha256(markdown)}
    for path, text in zip(paths, (markdown, json.dumps(record, indent=2))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return paths
