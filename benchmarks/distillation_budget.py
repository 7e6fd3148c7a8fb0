"""Distillation budget: held-out Dice of the distilled student against its teachers and its own baseline, as the
student's training budget grows.

On the synthetic phantom (``teachformer convert synthetic``, planned with ``teachformer plan``), everything
trained by the real ``nnUNetv2_train`` on TeachFormerPlans, fold 0, at the benchmark's width (the networks'
``tiny`` preset):

    teachers           each trained once (``--teachers``, ``--teacher-iterations``, seed 0)
    baseline student   the student's own architecture trainer (HDenseFormerLightTrainer)
    distilled student  TeachFormerTrainer taught by those teachers
    --variants         further trainer classes by name, as extra rows (a TeachFormerTrainer subclass learns
                       from the teachers of its ``teacher_trainers`` among them, e.g. the ablations of
                       ``trainers.teachformer_variants``); ``TRAINER:paper`` trains it at its real width
                       instead of the tiny one (e.g. a U-Net student of about the light student's size)

The students train at every budget (``--budgets`` multiples of ``--base-iterations``) under every seed
(``--seeds``). Budgets and seeds are trainer variants: small subclasses written into ``<workdir>/trainers`` (on
``nnUNet_extTrainer``) that set the schedule, the width and the seed (``StudyProtocol.seed``). Every model keeps
the study's inner hold-out (its pseudo Dice, and the teachers' Dice that ``teacher_weighting`` variants weight by)
but an early-stopping patience longer than its schedule, so a budget is exactly that many iterations and
``checkpoint_final.pth`` the last epoch's weights. Every model predicts the held-out cases (``imagesTs``,
nnU-Net's predictor without mirroring) and is scored against ``labelsTs`` by nnU-Net's own evaluation; a case's
score is its mean Dice over the foreground labels (``evaluation.metrics.case_score``). Per budget: every model's
held-out Dice per seed and its mean over seeds, the students as a fraction of the best teacher, and each student
minus the baseline with a 95 % percentile bootstrap CI over the paired (seed, held-out case) differences
(``evaluation.statistics.bootstrap_effect``).

    python benchmarks/distillation_budget.py [--tiny] [--json PATH] [--plot PATH] [--workdir DIR]
        [--teachers hdenseformer swinunetr unetr] [--base-iterations N] [--budgets 1 3 10] [--seeds 0 1]
        [--variants TRAINER ...]

``--workdir`` keeps phantom, plans, checkpoints and predictions: a rerun trains and predicts only what is
missing (a model is named by its base trainer, iterations and seed), so the teachers are trained once.
"""
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

# nnUNetv2_train runs PyTorch on every core; where other jobs share them, spinning OpenMP threads that wait for
# a descheduled sibling cost 5-10x the CPU time of a step (measured on 2 shared cores), sleeping ones do not
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import common  # noqa: E402

DATASET_ID = 960
CONFIGURATION = "3d_fullres"
PLANS = "TeachFormerPlans"
FOLD = 0
GENERATED_MODULE = "distillation_budget_trainers.py"
GENERATED_VERSION = 2  # of what the generated classes set beyond their names; 1: no inner hold-out
WIDTH_PRESETS = ("tiny", "paper")  # the presets every network of the package has
ROLE_TEACHER, ROLE_BASELINE, ROLE_DISTILLED, ROLE_VARIANT = "teacher", "baseline", "distilled", "variant"


@dataclass(frozen=True)
class Sizes:
    phantom: int
    cases: int
    test_cases: int
    teachers: Sequence[str]
    teacher_iterations: int
    base_iterations: int
    budgets: Sequence[int]
    seeds: Sequence[int]
    epoch_iterations: int


# 40^3: patch 64 x 32 x 32, a quarter of the 48^3 phantom's 64^3; the paper's three teachers, which reached a GTVp
# pseudo Dice of 0.83-0.85 in 300 iterations there (nnU-Net's U-Net at the tiny width stayed at 0)
DEFAULT = Sizes(phantom=40, cases=20, test_cases=12, teachers=("hdenseformer", "swinunetr", "unetr"),
                teacher_iterations=400, base_iterations=40, budgets=(1, 3, 10), seeds=(0, 1), epoch_iterations=20)
TINY = Sizes(phantom=32, cases=6, test_cases=2, teachers=("unetr",), teacher_iterations=2, base_iterations=1,
             budgets=(1,), seeds=(0, 1), epoch_iterations=1)


def parse_args(argv=None):
    from nnunet_teachformer.roster import STUDENTS, TEACHERS

    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--plot", metavar="PATH", help="write the Dice-vs-budget figure (PNG) to PATH (default: next "
                                                       "to --json, same name, .png)")
    parser.add_argument("--size", type=int, help=f"phantom edge in voxels (default {DEFAULT.phantom})")
    parser.add_argument("--cases", type=int, help=f"training cases (default {DEFAULT.cases})")
    parser.add_argument("--test-cases", type=int, help=f"held-out cases (default {DEFAULT.test_cases})")
    parser.add_argument("--teachers", nargs="+", choices=sorted(TEACHERS),
                        help=f"teacher set (default {' '.join(DEFAULT.teachers)})")
    parser.add_argument("--teacher-iterations", type=int,
                        help=f"training iterations of every teacher (default {DEFAULT.teacher_iterations})")
    parser.add_argument("--student", choices=sorted(STUDENTS), default="hdenseformer_light",
                        help="student: its baseline and distilled trainers (default hdenseformer_light)")
    parser.add_argument("--base-iterations", type=int,
                        help=f"iterations of budget 1x (default {DEFAULT.base_iterations})")
    parser.add_argument("--budgets", type=int, nargs="+", metavar="MULTIPLE",
                        help=f"student budgets as multiples of --base-iterations (default "
                             f"{' '.join(map(str, DEFAULT.budgets))})")
    parser.add_argument("--seeds", type=int, nargs="+", help=f"seeds of every student run (default "
                                                              f"{' '.join(map(str, DEFAULT.seeds))})")
    parser.add_argument("--epoch-iterations", type=int,
                        help=f"iterations per nnU-Net epoch; every budget must be a multiple (default "
                             f"{DEFAULT.epoch_iterations})")
    parser.add_argument("--variants", nargs="+", default=[], metavar="TRAINER",
                        help="further trainer classes (base names, e.g. TeachFormerTrainer_noAFS), trained like the "
                             "students; a TeachFormerTrainer subclass learns from this benchmark's teachers")
    args = parser.parse_args(argv)
    preset = TINY if args.tiny else DEFAULT
    for name in ("size", "cases", "test_cases", "teachers", "teacher_iterations", "base_iterations", "budgets",
                 "seeds", "epoch_iterations"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(preset, "phantom" if name == "size" else name))
    args.budgets = sorted(set(args.budgets))
    args.seeds = sorted(set(args.seeds))
    iterations = [args.teacher_iterations] + [m * args.base_iterations for m in args.budgets]
    if args.epoch_iterations < 1 or any(i < 1 or i % args.epoch_iterations for i in iterations):
        parser.error(f"--teacher-iterations and every budget ({iterations[1:]}) must be positive multiples of "
                     f"--epoch-iterations {args.epoch_iterations}")
    if args.cases < 5 or args.test_cases < 1:
        parser.error("--cases must be >= 5 (nnU-Net's five folds) and --test-cases >= 1")
    if any(s < 0 for s in args.seeds):
        parser.error("--seeds must be >= 0")
    if args.plot is None and args.json:
        args.plot = str(Path(args.json).with_suffix(".png"))
    return args


# data -------------------------------------------------------------------------------------------------
def console_script(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def run_command(command: Sequence[str], log_file: Path, env: Optional[dict] = None) -> Dict[str, float]:
    """Runs ``command`` with its output in ``log_file``; its wall and CPU seconds (the CPU time, with its child
    processes', is what it costs where other jobs share the cores). Stops the benchmark if it fails."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    wall, cpu = time.perf_counter(), _children_cpu_s()
    with open(log_file, "w") as out:
        code = subprocess.call([str(c) for c in command], stdout=out, stderr=subprocess.STDOUT,
                               env=env or os.environ.copy())
    if code != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"{' '.join(map(str, command))} exited {code} (log: {log_file}):\n{tail}")
    return {"wall_s": time.perf_counter() - wall, "cpu_s": _children_cpu_s() - cpu}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def phantom(args, root: Path) -> Path:
    """The raw phantom dataset (converted and planned unless the workdir has it at these sizes)."""
    raw = Path(os.environ["nnUNet_raw"])
    existing = list(raw.glob(f"Dataset{DATASET_ID:03d}_*"))
    wanted = {"size": args.size, "test_cases": args.test_cases}
    if existing:
        dataset_json = json.loads((existing[0] / "dataset.json").read_text())
        meta = dataset_json.get("teachformer", {})
        if dataset_json.get("numTraining") == args.cases and all(meta.get(k) == v for k, v in wanted.items()):
            if (Path(os.environ["nnUNet_preprocessed"]) / existing[0].name / f"{PLANS}.json").is_file():
                return existing[0]
        for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            for folder in Path(os.environ[variable]).glob(f"Dataset{DATASET_ID:03d}_*"):
                shutil.rmtree(folder)
    common.log(f"[budget] phantom: {args.cases} training + {args.test_cases} held-out cases of {args.size}^3, "
               f"{PLANS}")
    run_command([console_script("teachformer"), "convert", "synthetic", "--dataset-id", DATASET_ID, "--cases",
                 args.cases, "--test-cases", args.test_cases, "--size", args.size], root / "logs" / "convert.log")
    run_command([console_script("teachformer"), "plan", "-d", DATASET_ID, "-c", CONFIGURATION],
                root / "logs" / "plan.log")
    return next(raw.glob(f"Dataset{DATASET_ID:03d}_*"))


# trainer variants -------------------------------------------------------------------------------------
@dataclass
class Run:
    """One model: a generated subclass of ``base`` with a schedule and a seed."""
    base: str
    role: str
    iterations: int
    seed: int
    multiple: Optional[int] = None  # the budget, for students
    preset: str = "tiny"  # the network's width preset, unless its class sets one of its own
    teachers: Sequence[str] = ()  # generated teacher classes, for distilled runs
    train_cost: Optional[Dict[str, float]] = None  # wall and CPU seconds, if trained by this invocation
    case_dice: Dict[str, float] = field(default_factory=dict)
    parameters: Optional[int] = None  # of the trained network

    @property
    def name(self) -> str:
        width = "" if self.preset == "tiny" else f"_{self.preset}"
        return f"{self.base}{width}_budget{self.iterations}_seed{self.seed}"

    @property
    def label(self) -> str:
        """The model's row: its base trainer, and its width where not the benchmark's tiny one."""
        return self.base if self.preset == "tiny" else f"{self.base}:{self.preset}"


def find_trainer(name: str):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    try:
        with common.quiet():
            return recursive_find_trainer_class_by_name(name)
    except RuntimeError:
        raise SystemExit(f"nnU-Net cannot find the trainer {name}: check the spelling (a base class, without "
                         f"_tiny/_demo: the benchmark sets the schedule and width itself)") from None


def class_source(run: Run, args) -> str:
    """The generated subclass of one run: the benchmark's schedule, width and seed on ``run.base``."""
    base = find_trainer(run.base)
    lines = [f"class {run.name}({run.base}):",
             f"    epochs = {run.iterations // args.epoch_iterations}",
             f"    iterations_per_epoch = {args.epoch_iterations}",
             "    val_iterations_per_epoch = 1",
             "    validation_mirroring = False",
             f"    early_stopping_patience = {run.iterations // args.epoch_iterations + 1}  # never stops",
             f"    seed = {run.seed}"]
    if getattr(base, "network_preset", "paper") == "paper" and run.preset != "paper":  # a class's own preset stays
        lines.append(f'    network_preset = "{run.preset}"')
    if run.teachers:
        lines += [f"    teacher_trainers = {tuple(run.teachers)!r}", '    teacher_variant = ""']
    return "\n".join(lines) + "\n"


def base_import(name: str) -> str:
    base = find_trainer(name)
    if not _importable(base.__module__):  # e.g. a class of a folder on nnUNet_extTrainer, outside any package
        raise SystemExit(f"{name} is defined in {base.__module__}, which cannot be imported by name; put it in an "
                         f"installed package to use it here")
    return f"from {base.__module__} import {name}"


def _importable(module: str) -> bool:
    import importlib.util
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_workdir_settings(args, folder: Path) -> None:
    """Model names carry base trainer, iterations and seed, and ``phantom`` starts afresh on other data; what else
    shapes a model is stamped on the workdir, and a workdir stamped otherwise (or holding models of an unstamped
    run) is refused, not mixed."""
    settings = {"version": GENERATED_VERSION, "epoch_iterations": args.epoch_iterations}
    stamp = folder / "settings.json"
    results = list(Path(os.environ["nnUNet_results"]).glob(f"Dataset{DATASET_ID:03d}_*/*__{PLANS}__*"))
    recorded = json.loads(stamp.read_text()) if stamp.is_file() else ({} if results else settings)
    if recorded != settings:
        raise SystemExit(f"{folder.parent} holds models trained with other settings ({recorded or 'not recorded'}; "
                         f"this run: {settings}); give another --workdir, or remove that one")
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(settings))


def write_trainers(runs: Sequence[Run], args, folder: Path) -> None:
    check_workdir_settings(args, folder)
    imports = sorted({base_import(r.base) for r in runs})
    source = ['"""Trainer variants of benchmarks/distillation_budget.py (generated; rewritten by every run)."""',
              *imports, "", ""] + ["\n\n".join(class_source(r, args) for r in runs)]
    (folder / GENERATED_MODULE).write_text("\n".join(source))


def plan_runs(args) -> List[Run]:
    from nnunet_teachformer.roster import STUDENTS, TEACHERS

    teachers = [Run(TEACHERS[t], ROLE_TEACHER, args.teacher_iterations, 0) for t in args.teachers]
    baseline, distilled = STUDENTS[args.student]
    students = [(baseline, ROLE_BASELINE, "tiny"), (distilled, ROLE_DISTILLED, "tiny")]
    students += [variant(v) for v in args.variants if v not in (baseline, distilled)]
    runs = list(teachers)
    for multiple in args.budgets:
        for seed in args.seeds:
            for base, role, preset in students:
                runs.append(Run(base, role, multiple * args.base_iterations, seed, multiple, preset,
                                taught_by(find_trainer(base), teachers)))
    return runs


def variant(text: str):
    """``--variants`` entry ``TRAINER[:PRESET]``: its base trainer, role and width preset (default the tiny one)."""
    base, _, preset = text.partition(":")
    if preset and preset not in WIDTH_PRESETS:
        raise SystemExit(f"--variants {text}: no width preset {preset!r}; presets: {', '.join(WIDTH_PRESETS)}")
    return base, ROLE_VARIANT, preset or "tiny"


def taught_by(trainer, teachers: Sequence[Run]) -> List[str]:
    """The generated teacher classes a student learns from: none for a baseline; for a distilled trainer, the
    benchmark's teachers that its ``teacher_trainers`` name (a variant of one teacher learns from that one)."""
    from nnunet_teachformer.trainers import TeachFormerTrainer

    if not issubclass(trainer, TeachFormerTrainer):
        return []
    chosen = [t.name for t in teachers if t.base in trainer.teacher_trainers]
    if not chosen:
        raise SystemExit(f"{trainer.__name__} learns from {', '.join(trainer.teacher_trainers)}, none of which this "
                         f"run trains (--teachers): add them to --teachers")
    return chosen


# training and held-out evaluation ---------------------------------------------------------------------
def fold_folder(dataset: str, run: Run) -> Path:
    return Path(os.environ["nnUNet_results"], dataset, f"{run.name}__{PLANS}__{CONFIGURATION}", f"fold_{FOLD}")


def train(run: Run, dataset: str, args, env: dict, logs: Path) -> None:
    """nnUNetv2_train for ``run`` unless its final checkpoint exists (with the same teachers, if distilled)."""
    from nnunet_teachformer.distillation.provenance import recorded_teachers

    folder = fold_folder(dataset, run)
    if (folder / "checkpoint_final.pth").is_file():
        taught_by = [t for t, _ in recorded_teachers(folder) or []]
        if taught_by == list(run.teachers):
            return
        shutil.rmtree(folder)  # another teacher set: that model is not this run's
    common.log(f"[budget] train {run.name} ({run.iterations} iterations)")
    run.train_cost = run_command([console_script("nnUNetv2_train"), DATASET_ID, CONFIGURATION, FOLD, "-p", PLANS,
                               "-tr", run.name, "-device", args.device], logs / f"{run.name}.log", env)


def parameter_count(checkpoint: Path) -> int:
    """Trainable parameters of the network in an nnU-Net checkpoint (its weights, without normalisation statistics)."""
    import torch

    weights = torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"]
    # by storage: nnU-Net's U-Net decoder holds the encoder, so its weights appear twice in the state dict
    return sum({v.data_ptr(): v.numel() for k, v in weights.items()
                if v.is_floating_point() and "running_" not in k}.values())


def held_out_dice(run: Run, dataset: Path, args, out_root: Path) -> Dict[str, float]:
    """Per held-out case, the mean Dice over the foreground labels (predicted unless already scored)."""
    from nnunetv2.evaluation.evaluate_predictions import load_summary_json

    from nnunet_teachformer.evaluation.metrics import case_score, dice_per_case, evaluate_predictions
    from nnunet_teachformer.inference.predict import predict

    out = out_root / run.name
    checkpoint = fold_folder(dataset.name, run) / "checkpoint_final.pth"
    summary = out / "summary.json"
    dataset_json = json.loads((dataset / "dataset.json").read_text())
    if summary.is_file() and summary.stat().st_mtime > checkpoint.stat().st_mtime:
        dice = dice_per_case(load_summary_json(str(summary)), dataset_json["file_ending"])
    else:
        with common.quiet():
            predict(str(dataset / "imagesTs"), str(out), DATASET_ID, [FOLD], trainer=run.name, plans=PLANS,
                    configuration=CONFIGURATION, device=args.device, tta=False, processes=1, cpu_path="nnunet",
                    overwrite=True)
            dice = evaluate_predictions(out, dataset / "labelsTs", dataset_json, num_processes=1).dice
    return {case: case_score(values) for case, values in sorted(dice.items())}


# results ----------------------------------------------------------------------------------------------
def paired_effect(runs: Dict[int, Run], reference: Dict[int, Run]) -> dict:
    """Mean difference of ``runs`` minus ``reference`` over the paired (seed, case) scores, with its 95 % CI."""
    from nnunet_teachformer.evaluation.statistics import bootstrap_effect

    effect = bootstrap_effect([r.case_dice[c] - reference[s].case_dice[c] for s, r in runs.items() for c in r.case_dice])
    return {"mean": effect.mean_difference, "ci_low": effect.ci_low, "ci_high": effect.ci_high, "pairs": effect.n}


def summarise(runs: Sequence[Run], args) -> dict:
    import numpy as np

    teachers = {r.base: r for r in runs if r.role == ROLE_TEACHER}
    teacher_dice = {name: float(np.mean(list(r.case_dice.values()))) for name, r in teachers.items()}
    best = max(teacher_dice, key=teacher_dice.get)
    budgets = []
    for multiple in args.budgets:
        mine = [r for r in runs if r.multiple == multiple]
        baseline = {r.seed: r for r in mine if r.role == ROLE_BASELINE}
        distilled = {r.seed: r for r in mine if r.role == ROLE_DISTILLED}
        models = {}
        for label in dict.fromkeys(r.label for r in mine):
            per_seed = {r.seed: r for r in mine if r.label == label}
            dice = {seed: float(np.mean(list(r.case_dice.values()))) for seed, r in per_seed.items()}
            mean = float(np.mean(list(dice.values())))
            entry = {"role": per_seed[args.seeds[0]].role, "trainers": {s: r.name for s, r in per_seed.items()},
                     "parameters": per_seed[args.seeds[0]].parameters,
                     "dice_per_seed": dice, "dice_mean": mean, "fraction_of_best_teacher": common.ratio(mean, teacher_dice[best]),
                     "case_dice_per_seed": {s: r.case_dice for s, r in per_seed.items()}}
            if entry["role"] != ROLE_BASELINE:
                entry["minus_baseline"] = paired_effect(per_seed, baseline)
            if entry["role"] == ROLE_VARIANT:  # an ablation: against the paper's distilled student
                entry["minus_distilled"] = paired_effect(per_seed, distilled)
            models[label] = entry
        budgets.append({"multiple": multiple, "iterations": multiple * args.base_iterations, "models": models})
    distilled_base = next(r.base for r in runs if r.role == ROLE_DISTILLED)
    largest = budgets[-1]["models"][distilled_base]
    return {
        "teachers": {name: {"trainer": r.name, "iterations": r.iterations, "parameters": r.parameters,
                            "dice": teacher_dice[name],
                            "case_dice": r.case_dice} for name, r in teachers.items()},
        "best_teacher": best, "best_teacher_dice": teacher_dice[best],
        "budgets": budgets,
        "fraction_of_best_teacher_at_largest_budget": largest["fraction_of_best_teacher"],
        "distilled_minus_baseline_ci_above_zero_at_every_budget":
            all(b["models"][distilled_base]["minus_baseline"]["ci_low"] > 0 for b in budgets),
    }


def millions(count: Optional[int]) -> str:
    return f"{count / 1e6:.2f}" if count else ""


def percent(value: float) -> str:
    return f"{100 * value:.1f}"


def effect_text(effect: Optional[dict]) -> str:
    return f"{100 * effect['mean']:+.1f} [{100 * effect['ci_low']:+.1f}, {100 * effect['ci_high']:+.1f}]" \
        if effect else ""


def results_table(results: dict, args) -> str:
    rows = [[f"teacher ({t['iterations']} it)", name, "teacher", millions(t["parameters"]), percent(t["dice"]), "", "",
             "", ""] for name, t in results["teachers"].items()]
    for budget in results["budgets"]:
        for base, m in budget["models"].items():
            rows.append([f"{budget['multiple']}x ({budget['iterations']} it)", base, m["role"], millions(m["parameters"]),
                         percent(m["dice_mean"]),
                         " / ".join(percent(m["dice_per_seed"][s]) for s in args.seeds),
                         f"{m['fraction_of_best_teacher']:.2f}", effect_text(m.get("minus_baseline")),
                         effect_text(m.get("minus_distilled"))])
    headers = ["budget", "model", "role", "parameters (M)", "held-out Dice %",
               f"per seed ({' / '.join(map(str, args.seeds))})", "x best teacher", "- baseline, 95 % CI (points)",
               "- distilled, 95 % CI"]
    return common.table(headers, rows)


def plot(results: dict, args, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {ROLE_BASELINE: ("tab:orange", "o"), ROLE_DISTILLED: ("tab:red", "*"), ROLE_VARIANT: ("tab:purple", "^")}
    fig, ax = plt.subplots(figsize=(8, 5))
    x = [b["iterations"] for b in results["budgets"]]
    for base in results["budgets"][0]["models"]:
        entries = [b["models"][base] for b in results["budgets"]]
        colour, marker = styles[entries[0]["role"]]
        ax.plot(x, [100 * e["dice_mean"] for e in entries], color=colour, marker=marker, label=base)
        for xi, e in zip(x, entries):
            ax.scatter([xi] * len(e["dice_per_seed"]), [100 * v for v in e["dice_per_seed"].values()], color=colour,
                       alpha=0.35, s=14)
    for i, (name, t) in enumerate(results["teachers"].items()):
        ax.axhline(100 * t["dice"], color="tab:blue", linestyle=("--", ":", "-.")[i % 3],
                   label=f"{name} ({t['iterations']} it)")
    ax.set_ylim(0, 100)
    ax.set_xscale("log")
    ax.set_xticks(x, [f"{b['multiple']}x\n{b['iterations']}" for b in results["budgets"]])
    ax.minorticks_off()
    ax.set_xlabel("student training iterations")
    ax.set_ylabel("held-out Dice % (mean over seeds; dots: seeds)")
    ax.set_title(f"Distillation budget, phantom {args.size}^3, {len(args.seeds)} seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    common.set_threads(args.threads)
    info = common.machine(args.device)
    with common.workspace(args.workdir) as root:
        root = root.resolve()
        runs = plan_runs(args)  # a variant without its teachers is refused before any work
        dataset = phantom(args, root)
        trainers = root / "trainers"
        write_trainers(runs, args, trainers)
        env = {k: v for k, v in os.environ.items() if k != "TEACHFORMER_TEACHERS"}  # the classes name the teachers
        # augmentation in the trainer (seeded batches), and one process for nnU-Net's final validation export
        env.update(nnUNet_extTrainer=os.pathsep.join(p for p in [str(trainers), env.get("nnUNet_extTrainer")] if p),
                   nnUNet_n_proc_DA="0", nnUNet_def_n_proc="1", nnUNet_compile="f")
        with common.environment(nnUNet_extTrainer=env["nnUNet_extTrainer"]):
            for run in runs:
                train(run, dataset.name, args, env, root / "logs")
            common.log(f"[budget] predicting and scoring {args.test_cases} held-out cases with {len(runs)} models")
            for run in runs:
                run.case_dice = held_out_dice(run, dataset, args, root / "held_out")
                run.parameters = parameter_count(fold_folder(dataset.name, run) / "checkpoint_final.pth")
    results = summarise(runs, args)
    distilled = next(r.base for r in runs if r.role == ROLE_DISTILLED)
    table = results_table(results, args)
    print(f"\nHeld-out Dice on {args.test_cases} phantom cases ({args.size}^3; {args.cases} training cases, fold "
          f"{FOLD}); students: mean over seeds {args.seeds}; '- baseline' ('- distilled', for a variant): the student minus the "
          f"baseline (the paper's distilled) student "
          f"over the paired (seed, case) scores, 95 % percentile bootstrap CI\n")
    print(table)
    figure = plot(results, args, Path(args.plot)) if args.plot else None
    wall = time.perf_counter() - started
    trained = {r.name: r.train_cost for r in runs if r.train_cost is not None}
    common.write_json(args.json, {
        "benchmark": "distillation_budget", "machine": info,
        "settings": {"device": args.device, "tiny": args.tiny, "phantom_size": args.size, "training_cases": args.cases,
                     "held_out_cases": args.test_cases, "fold": FOLD, "plans": PLANS, "student": args.student,
                     "teachers": [r.base for r in runs if r.role == ROLE_TEACHER],
                     "teacher_iterations": args.teacher_iterations, "base_iterations": args.base_iterations,
                     "budgets": args.budgets, "seeds": args.seeds, "epoch_iterations": args.epoch_iterations,
                     "variants": args.variants, "width": "tiny preset, unless a variant names its own",
                     "schedule": "fixed: early stopping never fires; inner hold-out of the fold's training cases kept",
                     "prediction": "nnU-Net's predictor, no mirroring", "case_score": "mean foreground Dice",
                     "confidence_interval": "95 % percentile bootstrap over (seed, case) pairs"},
        **results, "table_markdown": table, "plot": str(figure) if figure else None,
        "training_cost_this_run": trained, "wall_s": wall,
    })
    best = results["best_teacher"]
    diffs = ", ".join(f"{b['multiple']}x {100 * b['models'][distilled]['minus_baseline']['mean']:+.1f} "
                      f"[{100 * b['models'][distilled]['minus_baseline']['ci_low']:+.1f}, "
                      f"{100 * b['models'][distilled]['minus_baseline']['ci_high']:+.1f}]" for b in results["budgets"])
    print(f"\nSUMMARY distillation_budget ({args.device}, phantom {args.size}^3, {len(args.seeds)} seeds, "
          f"{wall / 60:.1f} min): distilled student at {args.budgets[-1]}x = "
          f"{results['fraction_of_best_teacher_at_largest_budget']:.2f} of the best teacher ({best}, "
          f"{percent(results['best_teacher_dice'])} %); distilled - baseline (points, 95 % CI): {diffs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
