"""Finding, checking and running the frozen teachers of a distillation run.

A teacher is an nnU-Net training result of the *same* dataset, plans, configuration and fold as the
student: ``$nnUNet_results/<Dataset>/<Trainer>__<Plans>__<Configuration>/fold_<f>/<checkpoint>``.
``load_teachers`` refuses, in one message that lists every problem with the checkpoint it concerns and
the command that fixes it, a teacher that is missing, cannot be loaded, was trained with other plans,
configuration, patch size, input channels or labels, or whose provenance record
(``nnunet_teachformer.provenance``) shows other input data (re-planned or re-converted since) or
training or selection cases among the student's validation cases (another fold, another split): its
knowledge of those cases would leak into the student's validation Dice. A teacher without a record
(trained by another program) is refused unless ``TEACHFORMER_ALLOW_UNRECORDED_TEACHERS=1``; it is then
checked by its fold number against the current split only, and marked ``unrecorded``.

``TeacherEnsemble`` runs the teachers once per batch without autograd and returns only what the
losses need: each teacher's attention maps at the requested taps and the combined class
probabilities at temperature T. Teachers live outside the student's module tree, so they are never
in the optimiser or in the student's checkpoint.
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from nnunet_teachformer.distillation.attention import attention_map
from nnunet_teachformer.distillation.losses import combine_teacher_probabilities
from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.networks.taps import capture_taps, distillation_taps_of
from nnunet_teachformer.nnunet_paths import model_folder, train_command
from nnunet_teachformer.distillation.provenance import read_record, seen_cases

TEACHERS_ENV = "TEACHFORMER_TEACHERS"
ALLOW_UNRECORDED_ENV = "TEACHFORMER_ALLOW_UNRECORDED_TEACHERS"


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
    """What a teacher must agree with: the student's dataset, plans, configuration, fold, split and input."""
    dataset_name: str
    plans: dict
    configuration: str
    fold: int
    dataset_json: dict
    validation_cases: Tuple[str, ...]
    splits: List[dict]
    input_fingerprint: str

    @property
    def plans_name(self) -> str:
        return self.plans["plans_name"]

    def teacher_checkpoint(self, ref: TeacherRef) -> Path:
        return model_folder(self.dataset_name, ref.trainer, self.plans_name, self.configuration, self.fold) / \
            ref.checkpoint

    def train_command(self, trainer: str) -> str:
        return " ".join(train_command(self.dataset_name, self.configuration, self.fold, self.plans_name, trainer))

    def other_configurations(self, ref: TeacherRef) -> List[str]:
        """The plans' other configurations (2d, 3d_fullres, ...) in which this teacher's fold is trained."""
        return [c for c in self.plans["configurations"] if c != self.configuration and
                (model_folder(self.dataset_name, ref.trainer, self.plans_name, c, self.fold) / ref.checkpoint).is_file()]


@dataclass
class Teacher:
    ref: TeacherRef
    checkpoint_path: Path
    network: nn.Module
    recorded: bool = True  # False: no provenance record, accepted through ALLOW_UNRECORDED_ENV

    def describe(self) -> dict:
        """The entry of the student's ``teachers.json``."""
        return {"trainer": self.ref.trainer, "checkpoint": str(self.checkpoint_path),
                "provenance": "recorded" if self.recorded else "unrecorded"}


def _mismatches(run: StudentRun, checkpoint: dict) -> List[str]:
    args = checkpoint.get("init_args", {})
    plans, dataset_json = args.get("plans", {}), args.get("dataset_json", {})
    problems = []
    if plans.get("plans_name") != run.plans_name:
        problems.append(f"plans '{plans.get('plans_name')}' instead of '{run.plans_name}'")
    if args.get("configuration") != run.configuration:
        problems.append(f"configuration '{args.get('configuration')}' instead of '{run.configuration}'")
    else:
        theirs = plans.get("configurations", {}).get(run.configuration, {}).get("patch_size")
        ours = run.plans["configurations"][run.configuration]["patch_size"]
        if theirs is not None and list(theirs) != list(ours):
            problems.append(f"patch size {list(theirs)} instead of {list(ours)}")
    if len(dataset_json.get("channel_names", {})) != len(run.dataset_json["channel_names"]):
        problems.append(f"{len(dataset_json.get('channel_names', {}))} input channels instead of "
                        f"{len(run.dataset_json['channel_names'])}")
    if dataset_json.get("labels") != run.dataset_json["labels"]:
        problems.append(f"labels {dataset_json.get('labels')} instead of {run.dataset_json['labels']}")
    return problems


def _leaked_by_fold_number(run: StudentRun, teacher_fold) -> List[str]:
    """For a teacher without a record: the student's validation cases its fold of the *current* split trains on."""
    if teacher_fold == run.fold:
        return []
    if teacher_fold == "all":
        return sorted(run.validation_cases)
    try:
        teacher_training = set(run.splits[int(teacher_fold)]["train"])
    except (IndexError, ValueError, KeyError):
        return sorted(run.validation_cases)  # unknown split: assume the worst
    return sorted(teacher_training & set(run.validation_cases))


def _provenance_problem(run: StudentRun, ref: TeacherRef, path: Path, checkpoint: dict, record: dict,
                        fix: str) -> Optional[str]:
    """Why the teacher's provenance record disqualifies it, or None."""
    if record.get("fold") != checkpoint["init_args"].get("fold") or \
            record.get("trainer") != checkpoint.get("trainer_name", record.get("trainer")):
        return (f"- teacher {ref.trainer}: {path.parent / 'provenance.json'} describes {record.get('trainer')} fold "
                f"{record.get('fold')}, not this checkpoint (trained as {checkpoint.get('trainer_name')} fold "
                f"{checkpoint['init_args'].get('fold')}): files were copied between folders; {fix}")
    if record.get("input_fingerprint") != run.input_fingerprint:
        return (f"- teacher {ref.trainer}: {path} was trained on other input data than the student's (its record's "
                f"fingerprint of plans configuration, dataset fingerprint, channels and labels differs: the dataset was "
                f"re-converted or re-planned since); retrain it on the current data: {fix}")
    leaked = sorted(seen_cases(record) & set(run.validation_cases))
    if leaked:
        return (f"- teacher {ref.trainer}: {path} learnt from or was selected on {len(leaked)} of the student's fold-"
                f"{run.fold} validation cases (e.g. {', '.join(leaked[:3])}; its record says fold {record.get('fold')}, "
                f"another split or fold); its knowledge would leak into the student's validation Dice. Use a teacher "
                f"trained on this fold's split: {fix}")
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


def load_teachers(refs: Sequence[TeacherRef], run: StudentRun, device: torch.device) -> List[Teacher]:
    """Checks every teacher against the student's run and returns them frozen, in eval mode, on ``device``."""
    teachers, problems = [], []
    for ref in refs:
        path = run.teacher_checkpoint(ref)
        fix = f"train it with: {run.train_command(ref.trainer)}"
        if not path.is_file():
            other = run.other_configurations(ref)
            problems.append(f"- teacher {ref.trainer}: {path} does not exist" +
                            (f" (it is trained for {', '.join(other)} only: a teacher must be trained for the "
                             f"student's configuration, {run.configuration})" if other else "") + f"; {fix}")
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
        if record is not None:
            problem = _provenance_problem(run, ref, path, checkpoint, record, fix)
            if problem:
                problems.append(problem)
                continue
        elif os.environ.get(ALLOW_UNRECORDED_ENV) != "1":
            problems.append(
                f"- teacher {ref.trainer}: {path.parent} has no provenance record (provenance.json: the cases it "
                f"trained on and a fingerprint of its data), so nothing shows that it never saw the student's "
                f"validation cases; it was trained by another program or an older nnunet-teachformer. Retrain it: "
                f"{fix}; or accept it knowingly with {ALLOW_UNRECORDED_ENV}=1 (the report marks such students)")
            continue
        else:
            leaked = _leaked_by_fold_number(run, checkpoint["init_args"].get("fold"))
            if leaked:
                problems.append(
                    f"- teacher {ref.trainer}: {path} was trained on fold {checkpoint['init_args'].get('fold')}, whose "
                    f"training cases include {len(leaked)} of the student's fold-{run.fold} validation cases (e.g. "
                    f"{', '.join(leaked[:3])}); its knowledge would leak into the student's validation Dice. Use the "
                    f"fold-{run.fold} teacher: {fix}")
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
        network.to(device).eval().requires_grad_(False)
        teachers.append(Teacher(ref, path, network, recorded=record is not None))
    if problems:
        raise TeachFormerError(f"cannot distil fold {run.fold} of {run.dataset_name} ({run.plans_name}, "
                               f"{run.configuration}):\n" + "\n".join(problems))
    return teachers


@dataclass
class TeacherSignals:
    maps: Dict[str, List[torch.Tensor]]  # tap -> one attention map per teacher, (B, *spatial_of_that_teacher)
    probabilities: Optional[torch.Tensor]  # combined softmax(z / T), (B, C, *spatial)


class TeacherEnsemble:
    """Runs the teachers once per batch, without autograd, keeping only attention maps and probabilities.

    ``channels_last`` converts the teachers' weights (now) and every batch (per call) to the channels-last
    memory format of their ``spatial_dims`` (2: NHWC, 3: NDHWC), which some convolution back ends run faster;
    the results are the same.
    """

    def __init__(self, teachers: Sequence[Teacher], taps: Sequence[str], attention_power: float,
                 temperature: float, combination: str, need_probabilities: bool, channels_last: bool = False,
                 spatial_dims: int = 3):
        self.memory_format = {2: torch.channels_last, 3: torch.channels_last_3d}[spatial_dims] if channels_last \
            else torch.contiguous_format
        if channels_last:
            for teacher in teachers:
                teacher.network.to(memory_format=self.memory_format)
        self.teachers = list(teachers)
        self.taps = tuple(taps)
        self.attention_power = attention_power
        self.temperature = temperature
        self.combination = combination
        self.need_probabilities = need_probabilities

    @torch.no_grad()
    def __call__(self, data: torch.Tensor, target: Optional[torch.Tensor] = None) -> TeacherSignals:
        data = data.contiguous(memory_format=self.memory_format)
        maps = {tap: [] for tap in self.taps}
        probabilities = []
        for teacher in self.teachers:
            with capture_taps(teacher.network, self.taps) as features:
                logits = teacher.network(data)
            for tap in self.taps:
                maps[tap].append(attention_map(features[tap], self.attention_power))
            if self.need_probabilities:
                probabilities.append(torch.softmax(logits.float() / self.temperature, dim=1))
            del features, logits
        combined = combine_teacher_probabilities(probabilities, self.combination, target) if probabilities else None
        return TeacherSignals(maps, combined)


def teacher_refs_from_environment(default: Sequence[TeacherRef]) -> Tuple[TeacherRef, ...]:
    value = os.environ.get(TEACHERS_ENV)
    return parse_teacher_list(value, default[0].checkpoint if default else "checkpoint_final.pth") \
        if value else tuple(default)
