"""Finding, checking and running the frozen teachers of a distillation run.

A teacher is an nnU-Net training result of the *same* dataset, plans, configuration and fold as the
student: ``$nnUNet_results/<Dataset>/<Trainer>__<Plans>__<Configuration>/fold_<f>/<checkpoint>``, trained
by this package or by nnU-Net itself (``nnUNetTrainer`` and its variants, ResEnc presets): the models a
user already has teach as they are, nothing is written into their folders.

``load_teachers`` refuses, in one message that lists every problem with the checkpoint it concerns and
the command that fixes it, a teacher that is missing, cannot be loaded, was trained with other plans,
configuration, input channels or labels, cannot run on the student's patch, or whose provenance shows
other input data (re-planned or re-converted since) or training or selection cases among the student's
validation cases (another fold, another split): its knowledge of those cases would leak into the
student's validation Dice. Provenance is the teacher's record (``distillation.provenance``) or, for
a model trained without this package, derived from nnU-Net's rules: fold k trained on
``splits_final.json``'s fold k, ``checkpoint_final.pth`` is the last epoch (nothing selected) and
``checkpoint_best.pth`` was selected on the fold's validation cases. A student on fold ``all`` validates on
its own training cases, so nothing is held out and the overlap rule does not apply to it.

A teacher trained on another patch than the student's (the student's network needed the plans' patch
adapted) teaches if its network runs on the student's patch: checked by a forward pass when it is
loaded, since nnU-Net's U-Nets take any multiple of their strides and fixed-grid transformers do not.

``TeacherEnsemble`` runs the teachers once per batch without autograd and returns only what the
losses need: each teacher's attention maps at the requested taps and the combined class
probabilities at temperature T. Teachers live outside the student's module tree, so they are never
in the optimiser or in the student's checkpoint.
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from nnunet_teachformer.distillation.attention import attention_map
from nnunet_teachformer.distillation.losses import LOGIT_MEAN, combine_teacher_probabilities, teacher_mean
from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.networks.taps import capture_taps, distillation_taps_of
from nnunet_teachformer.distillation.provenance import (PROVENANCE_DERIVED, PROVENANCE_RECORDED, input_fingerprint,
                                                       read_record, seen_cases)
from nnunet_teachformer.nnunet_paths import dataset_id, model_folder, train_command

TEACHERS_ENV = "TEACHFORMER_TEACHERS"
BEST_CHECKPOINT = "checkpoint_best.pth"


@dataclass(frozen=True)
class TeacherRef:
    trainer: str
    checkpoint: str = "checkpoint_final.pth"

    def __str__(self):
        return f"{self.trainer}:{self.checkpoint}"


def parse_teacher_list(value: str, default_checkpoint: str = "checkpoint_final.pth") -> Tuple[TeacherRef, ...]:
    """Parses ``TEACHFORMER_TEACHERS``: comma-separated trainer names, each optionally ``:checkpoint_file``,
    e.g. ``SwinUNETRTrainer,UNETRTrainer:checkpoint_best.pth``."""
    refs = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        trainer, _, checkpoint = item.partition(":")
        refs.append(TeacherRef(trainer.strip(), checkpoint.strip() or default_checkpoint))
    if not refs:
        raise TeachFormerError(f"{TEACHERS_ENV}={value!r} names no teacher. Format: "
                               f"'TrainerA,TrainerB:checkpoint_best.pth' (checkpoint defaults to {default_checkpoint}).")
    return tuple(refs)


@dataclass(frozen=True)
class StudentRun:
    """What a teacher must agree with: the student's dataset, plans, configuration, fold, split, input and patch."""
    dataset_name: str
    plans: dict  # the student's, with its patch (adapted where its network needed it)
    configuration: str
    fold: Union[int, str]
    dataset_json: dict
    validation_cases: Tuple[str, ...]
    splits: List[dict]
    dataset_fingerprint: dict

    @property
    def plans_name(self) -> str:
        return self.plans["plans_name"]

    @property
    def patch_size(self) -> List[int]:
        return [int(p) for p in self.plans["configurations"][self.configuration]["patch_size"]]

    def input_fingerprint(self, patch_size: Sequence[int]) -> str:
        """The fingerprint of the student's input as a model trained with ``patch_size`` records it: the patch
        is part of the record's configuration, but a teacher that runs on the student's patch may differ in it."""
        configurations = dict(self.plans["configurations"])
        configurations[self.configuration] = dict(configurations[self.configuration], patch_size=list(patch_size))
        return input_fingerprint(dict(self.plans, configurations=configurations), self.configuration,
                                 self.dataset_json, self.dataset_fingerprint)

    def teacher_checkpoint(self, ref: TeacherRef) -> Path:
        return model_folder(self.dataset_name, ref.trainer, self.plans_name, self.configuration, self.fold) / \
            ref.checkpoint

    def train_command(self, trainer: str, fold=None) -> str:
        return " ".join(train_command(self.dataset_name, self.configuration, self.fold if fold is None else fold,
                                      self.plans_name, trainer))

    def other_configurations(self, ref: TeacherRef) -> List[str]:
        """The plans' other configurations (2d, 3d_fullres, ...) in which this teacher's fold is trained."""
        return [c for c in self.plans["configurations"] if c != self.configuration and
                (model_folder(self.dataset_name, ref.trainer, self.plans_name, c, self.fold) / ref.checkpoint).is_file()]


@dataclass
class Teacher:
    ref: TeacherRef
    checkpoint_path: Path
    network: nn.Module
    provenance: str = PROVENANCE_RECORDED
    patch_size: Optional[List[int]] = None  # the patch it was trained on, where it differs from the student's
    training_cases: FrozenSet[str] = frozenset()  # as its provenance says

    def describe(self) -> dict:
        """The entry of the student's ``teachers.json``."""
        entry = {"trainer": self.ref.trainer, "checkpoint": str(self.checkpoint_path), "provenance": self.provenance}
        if self.patch_size is not None:
            entry["trained_patch_size"] = self.patch_size
        return entry


def _mismatches(run: StudentRun, checkpoint: dict) -> List[str]:
    args = checkpoint.get("init_args", {})
    plans, dataset_json = args.get("plans", {}), args.get("dataset_json", {})
    problems = []
    if plans.get("plans_name") != run.plans_name:
        problems.append(f"plans '{plans.get('plans_name')}' instead of '{run.plans_name}'")
    if args.get("configuration") != run.configuration:
        problems.append(f"configuration '{args.get('configuration')}' instead of '{run.configuration}'")
    if len(dataset_json.get("channel_names", {})) != len(run.dataset_json["channel_names"]):
        problems.append(f"{len(dataset_json.get('channel_names', {}))} input channels instead of "
                        f"{len(run.dataset_json['channel_names'])}")
    if dataset_json.get("labels") != run.dataset_json["labels"]:
        problems.append(f"labels {dataset_json.get('labels')} instead of {run.dataset_json['labels']}")
    return problems


def _trained_patch(checkpoint: dict) -> List[int]:
    args = checkpoint["init_args"]
    return [int(p) for p in args["plans"]["configurations"][args["configuration"]]["patch_size"]]


def derived_record(checkpoint: dict, splits: List[dict]) -> dict:
    """The provenance of a model trained without this package, by nnU-Net's rules: fold k trains on
    ``splits_final.json``'s fold k (fold ``all`` on every case), and ``checkpoint_final.pth`` is the last epoch,
    so nothing was selected. A fold the split does not have counts as trained on every case (the worst case)."""
    fold = checkpoint["init_args"].get("fold")
    every_case = sorted({c for split in splits[:1] for c in split["train"] + split["val"]})
    try:
        training, validation = sorted(splits[int(fold)]["train"]), sorted(splits[int(fold)]["val"])
    except (IndexError, ValueError, KeyError, TypeError):
        training, validation = every_case, every_case
    return {"trainer": checkpoint.get("trainer_name"), "fold": fold, "training_cases": training,
            "selection_cases": [], "validation_cases": validation}


def _data_signature(plans: dict, configuration: str) -> dict:
    """What of a model's plans shapes its input, the patch and batch size aside."""
    config = {k: v for k, v in plans["configurations"][configuration].items() if k not in ("patch_size", "batch_size")}
    return {"configuration": config, "transpose_forward": plans.get("transpose_forward"),
            "intensity_properties": plans.get("foreground_intensity_properties_per_channel")}


def _provenance_problem(run: StudentRun, ref: TeacherRef, path: Path, checkpoint: dict, record: dict,
                        derived: bool, fix: str) -> Optional[str]:
    """Why the teacher's provenance disqualifies it, or None."""
    if not derived and (record.get("fold") != checkpoint["init_args"].get("fold") or
                        record.get("trainer") != checkpoint.get("trainer_name", record.get("trainer"))):
        return (f"- teacher {ref.trainer}: {path.parent / 'provenance.json'} describes {record.get('trainer')} fold "
                f"{record.get('fold')}, not this checkpoint (trained as {checkpoint.get('trainer_name')} fold "
                f"{checkpoint['init_args'].get('fold')}): files were copied between folders; {fix}")
    other_data = _data_signature(checkpoint["init_args"]["plans"], run.configuration) != \
        _data_signature(run.plans, run.configuration) if derived else \
        record.get("input_fingerprint") != run.input_fingerprint(_trained_patch(checkpoint))
    if other_data:
        what = "its plans' spacing, normalisation or intensity statistics" if derived else \
            "its record's fingerprint of plans configuration, dataset fingerprint, channels and labels"
        return (f"- teacher {ref.trainer}: {path} was trained on other input data than the student's ({what} "
                f"differs: the dataset was re-converted or re-planned since); retrain it on the current data: {fix}")
    if run.fold == "all":
        return None  # fold all validates on its training cases: nothing is held out that a teacher could leak
    validation = set(run.validation_cases)
    leaked = sorted(seen_cases(record) & validation)
    if leaked:
        source = (f"its checkpoint says fold {record.get('fold')}, whose training cases in nnU-Net's "
                  f"splits_final.json include them") if derived else \
            f"its record says fold {record.get('fold')}, another split or fold"
        return (f"- teacher {ref.trainer}: {path} learnt from {len(leaked)} of the student's fold-{run.fold} "
                f"validation cases (e.g. {', '.join(leaked[:3])}; {source}); its knowledge would leak into the "
                f"student's validation Dice. Use the fold-{run.fold} model, trained with: "
                f"{run.train_command(ref.trainer)}")
    if ref.checkpoint == BEST_CHECKPOINT:
        # checkpoint_best was chosen by nnU-Net's pseudo Dice on the cases the model monitored: the inner
        # hold-out where there is one, else (nnU-Net's own trainers, early_stopping_patience = None) the fold's
        # validation cases
        monitored = record.get("selection_cases") or record.get("validation_cases", [])
        selected_on = sorted(set(monitored) & validation)
        if selected_on:
            return (f"- teacher {ref.trainer}: {path} was selected by nnU-Net on its fold's validation cases "
                    f"({len(selected_on)} of the student's, e.g. {', '.join(selected_on[:3])}): the model was trained "
                    f"without an inner hold-out, so its best epoch was picked by the Dice of the very cases the "
                    f"student is validated on. Use its last epoch, which nothing selected: {ref.trainer}:checkpoint_final.pth "
                    f"(teachformer distill -chk checkpoint_final.pth, the default)")
    return None


def _build_network(checkpoint: dict, trainer_name: str) -> nn.Module:
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    args = checkpoint["init_args"]
    plans_manager = PlansManager(args["plans"])
    configuration_manager = plans_manager.get_configuration(args["configuration"])
    trainer_class = recursive_find_trainer_class_by_name(checkpoint.get("trainer_name", trainer_name))
    network = trainer_class.build_network_architecture(
        plans_manager, configuration_manager,
        determine_num_input_channels(plans_manager, configuration_manager, args["dataset_json"]),
        plans_manager.get_label_manager(args["dataset_json"]).num_segmentation_heads,
        enable_deep_supervision=False)
    network.load_state_dict(checkpoint["network_weights"])
    return network


def _runs_on_patch(network: nn.Module, channels: int, patch: Sequence[int]) -> Optional[str]:
    """Why ``network`` cannot segment a ``patch`` (one zero sample), or None if it can."""
    try:
        with torch.no_grad():
            logits = network(torch.zeros(1, channels, *patch))
    except Exception as e:  # a fixed grid (position embeddings, reshapes) fails in many ways
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else 'no message'}"
    if list(logits.shape[2:]) != list(patch):
        return f"its output is {list(logits.shape[2:])}, not {list(patch)}"
    return None


def _patch_fix(run: StudentRun, trainer: str) -> str:
    ds = dataset_id(run.dataset_name)
    return (f"plan patches that every network takes and train teacher and student on them: `teachformer plan -d {ds} "
            f"-c {run.configuration}`, then `nnUNetv2_train {ds} {run.configuration} {run.fold} -p TeachFormerPlans "
            f"-tr {trainer}` and the student with -p TeachFormerPlans")


def load_teachers(refs: Sequence[TeacherRef], run: StudentRun, device: torch.device) -> List[Teacher]:
    """Checks every teacher against the student's run and returns them frozen, in eval mode, on ``device``."""
    teachers, problems = [], []
    for ref in refs:
        path = run.teacher_checkpoint(ref)
        fix = f"train it with: {run.train_command(ref.trainer)}"
        if not path.is_file():
            other = run.other_configurations(ref)
            trained = sorted(p.name for p in path.parent.glob("checkpoint_*.pth")) if path.parent.is_dir() else []
            problems.append(f"- teacher {ref.trainer}: {path} does not exist" +
                            (f" (it is trained for {', '.join(other)} only: a teacher must be trained for the "
                             f"student's configuration, {run.configuration})" if other else "") +
                            (f"; the folder holds {', '.join(trained)}: name one of them "
                             f"({ref.trainer}:{trained[0]})" if trained and ref.checkpoint != "checkpoint_final.pth"
                             else f"; {fix}" + (" --c (it resumes the started training)" if trained else "")))
            continue
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # a truncated or foreign file: report it with the path
            problems.append(f"- teacher {ref.trainer}: cannot load {path} ({type(e).__name__}: {e}); "
                            f"delete it and {fix}")
            continue
        mismatch = _mismatches(run, checkpoint)
        if mismatch:
            problems.append(f"- teacher {ref.trainer}: {path} was trained with {', '.join(mismatch)}; "
                            f"teacher and student must share plans, configuration and data; {fix}")
            continue
        record = read_record(path.parent)
        derived = record is None
        if derived:
            record = derived_record(checkpoint, run.splits)
        problem = _provenance_problem(run, ref, path, checkpoint, record, derived, fix)
        if problem:
            problems.append(problem)
            continue
        try:
            network = _build_network(checkpoint, ref.trainer)
        except Exception as e:
            problems.append(f"- teacher {ref.trainer}: cannot rebuild the network of {path} "
                            f"({type(e).__name__}: {e}); {fix}")
            continue
        try:
            distillation_taps_of(network)
        except TypeError as e:
            problems.append(f"- teacher {ref.trainer}: {e}; a teacher must be one of this package's architecture "
                            f"trainers or an nnU-Net U-Net trainer")
            continue
        trained_patch = _trained_patch(checkpoint)
        if trained_patch != run.patch_size:
            why_not = _runs_on_patch(network.eval(), len(run.dataset_json["channel_names"]), run.patch_size)
            if why_not:
                problems.append(f"- teacher {ref.trainer}: {path} was trained on the patch {trained_patch} and its "
                                f"network cannot run on the student's patch {run.patch_size} ({why_not}; a fixed-grid "
                                f"network takes only its training patch). To distil from it, "
                                f"{_patch_fix(run, ref.trainer)}")
                continue
        network.to(device).eval().requires_grad_(False)
        teachers.append(Teacher(ref, path, network, PROVENANCE_DERIVED if derived else PROVENANCE_RECORDED,
                                trained_patch if trained_patch != run.patch_size else None,
                                frozenset(record.get("training_cases", []))))
    if problems:
        raise TeachFormerError(f"cannot distil fold {run.fold} of {run.dataset_name} ({run.plans_name}, "
                               f"{run.configuration}):\n" + "\n".join(problems))
    return teachers


@dataclass
class TeacherSignals:
    maps: Dict[str, List[torch.Tensor]]  # tap -> one attention map per teacher, (B, *spatial_of_that_teacher)
    probabilities: Optional[torch.Tensor]  # combined softmax(z / T), (B, C, *spatial)
    weights: Optional[List[float]] = None  # of the teachers in ``maps``, summing to 1; None: equal


class TeacherEnsemble:
    """Runs the teachers once per batch, without autograd, keeping only attention maps and probabilities.

    ``channels_last`` converts the teachers' weights (now) and every batch (per call) to the channels-last
    memory format of their ``spatial_dims`` (2: NHWC, 3: NDHWC), which some convolution back ends run faster;
    the results are the same. ``weights`` (one per teacher, default equal) weight the teachers in the combined
    probabilities and in L_AFS's average; a teacher of weight 0 is not run at all.
    """

    def __init__(self, teachers: Sequence[Teacher], taps: Sequence[str], attention_power: float,
                 temperature: float, combination: str, need_probabilities: bool, channels_last: bool = False,
                 spatial_dims: int = 3, weights: Optional[Sequence[float]] = None):
        self.memory_format = {2: torch.channels_last, 3: torch.channels_last_3d}[spatial_dims] if channels_last \
            else torch.contiguous_format
        weights = [1.0] * len(teachers) if weights is None else list(weights)
        if len(weights) != len(teachers) or min(weights, default=0) < 0 or not sum(weights) > 0:
            raise ValueError(f"need one weight >= 0 per teacher, not all 0; got {weights} for {len(teachers)} teachers")
        self.teachers = [t for t, w in zip(teachers, weights) if w > 0]
        kept = [w for w in weights if w > 0]
        # equal weights stay None: the plain mean, exactly as the paper computes it
        self.weights = None if len(set(kept)) == 1 else [w / sum(kept) for w in kept]
        if channels_last:
            for teacher in self.teachers:
                teacher.network.to(memory_format=self.memory_format)
        self.taps = tuple(taps)
        self.attention_power = attention_power
        self.temperature = temperature
        self.combination = combination
        self.need_probabilities = need_probabilities

    @torch.no_grad()
    def __call__(self, data: torch.Tensor, target: Optional[torch.Tensor] = None) -> TeacherSignals:
        data = data.contiguous(memory_format=self.memory_format)
        maps = {tap: [] for tap in self.taps}
        scaled = []  # each teacher's logits / T
        for teacher in self.teachers:
            with capture_taps(teacher.network, self.taps) as features:
                logits = teacher.network(data)
            for tap in self.taps:
                maps[tap].append(attention_map(features[tap], self.attention_power))
            if self.need_probabilities:
                scaled.append(logits.float() / self.temperature)
            del features, logits
        if not scaled:
            combined = None
        elif self.combination == LOGIT_MEAN:  # one softmax of the averaged logits
            combined = torch.softmax(teacher_mean(scaled, self.weights), dim=1)
        else:
            combined = combine_teacher_probabilities([torch.softmax(z, dim=1) for z in scaled], self.combination,
                                                     target, self.weights)
        return TeacherSignals(maps, combined, self.weights)


def teacher_refs_from_environment(default: Sequence[TeacherRef]) -> Tuple[TeacherRef, ...]:
    value = os.environ.get(TEACHERS_ENV)
    return parse_teacher_list(value, default[0].checkpoint if default else "checkpoint_final.pth") \
        if value else tuple(default)
