"""``teachformer demo``: a toy-scale Teach-Former study on the synthetic PET/CT phantom, on this machine.

Stages: convert the phantom (training cases + held-out cases), plan it with TeachFormerPlans, train
fold 0 of the teachers, the baseline student and the distilled student (``teachformer train``),
predict the held-out cases with every model (``teachformer predict``), evaluate them, and write the
study report. Everything lives under ``--workdir`` (its own nnUNet_raw/_preprocessed/_results), so the
user's nnU-Net folders are not touched; re-running resumes and skips what is done.

Two sizes, each in a dataset of its own: the default (tiny SwinUNETR and H-DenseFormer teachers, ``_demo``
schedule of 60 iterations, 16 + 4 cases of 48^3, Dataset990; ~15-20 min on 2 CPU cores) and ``--quick`` (the tiny
SwinUNETR teacher, the same schedule on 10 + 2 smaller cases of 40^3, whose patch has a quarter of the voxels,
Dataset991; 4-7 min). The teachers are those that learnt within the schedule (2026-12-06, one run each, 48^3,
fold-0 validation Dice after 60 iterations: SwinUNETR 0.27, H-DenseFormer 0.24, UNETR 0.00; nnU-Net's U-Net at
the tiny width stayed at 0 for 300 iterations): a teacher at chance only blurs the distillation target.
``teachformer train`` trains all three of the paper's. The ``_tiny`` schedule's 10 iterations teach no network
here anything (pseudo Dice <= 0.03), hence the ``_demo`` schedule for ``--quick`` too.
``--configuration 2d`` runs the same study on nnU-Net's 2d configuration (slices, as the paper's PI-CAI arm); the
report then shows every model the work folder holds, 2D and 3D. Either way the networks are tiny and the training
is minutes long: the numbers show the pipeline working, not the paper's accuracy, and the verdict that ends the
demo says so. Held-out cases are predicted without mirroring test-time augmentation, to keep the demo short.
"""
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

FULL_SCALE = """Full scale (GPU, real data) is the same pipeline with the paper's sizes:
  teachformer convert hecktor21 /data/hecktor2021/hecktor_nii --dataset-id 501
  teachformer plan -d 501
  teachformer train -d 501 -f 0 1 2 3 4 --device cuda        # or --dry-run to get the nnUNetv2_train commands
  teachformer report -d 501
  teachformer predict -i imagesTs -o predictions -d 501 -f 0 1 2 3 4"""


@dataclass(frozen=True)
class DemoSize:
    dataset_id: int
    phantom_size: int  # voxels per axis (1 mm)
    training_cases: int
    test_cases: int
    preset: str
    teachers: Sequence[str]
    timing: bool


SIZES = {
    "full": DemoSize(990, 48, 16, 4, "demo", ("swinunetr", "hdenseformer"), timing=True),
    "quick": DemoSize(991, 40, 10, 2, "demo", ("swinunetr",), timing=False),
}


class _Stages:
    def __init__(self, log):
        self.log, self.start = log, time.time()

    def __call__(self, name: str):
        self.log(f"\n=== [{time.time() - self.start:6.0f} s] {name}")


def _use_workdir(workdir: Path, device: str) -> None:
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[name] = str(workdir / name)
        (workdir / name).mkdir(parents=True, exist_ok=True)
    if device == "cpu":
        os.environ.setdefault("nnUNet_compile", "f")
        os.environ.setdefault("nnUNet_n_proc_DA", "1")
        os.environ.setdefault("nnUNet_def_n_proc", "1")


def run_demo(workdir: str = "teachformer_demo", quick: bool = False, device: Optional[str] = None,
             configuration: str = "3d_fullres", log=print):
    import torch

    from nnunet_teachformer.conversion.dataset_writer import existing_datasets_with_id
    from nnunet_teachformer.conversion.synthetic import convert_synthetic
    from nnunet_teachformer.evaluation.metrics import evaluate_predictions
    from nnunet_teachformer.evaluation.report import build_report
    from nnunet_teachformer.planners.plan import format_summary, plan_dataset
    from nnunet_teachformer.inference.predict import predict
    from nnunet_teachformer.study.run import plan_study, run_study

    size = SIZES["quick" if quick else "full"]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    workdir = Path(workdir).resolve()
    _use_workdir(workdir, device)
    stage = _Stages(log)
    log(f"Teach-Former demo ({'quick' if quick else 'full'}, {configuration}) in {workdir} on {device}. TOY SCALE: "
        f"tiny networks, "
        f"minutes of training on a synthetic phantom; it shows the pipeline, not the paper's accuracy.")

    stage(f"1/5 phantom: {size.training_cases} training + {size.test_cases} held-out PET/CT cases")
    raw = Path(os.environ["nnUNet_raw"])
    existing = existing_datasets_with_id(raw, size.dataset_id)
    if existing:
        dataset = existing[0]
        log(f"reusing {dataset}")
    else:
        dataset = convert_synthetic(size.dataset_id, size.training_cases, size=size.phantom_size,
                                    num_test_cases=size.test_cases, progress=False)
        log(f"wrote {dataset}")

    stage("2/5 plan and preprocess with TeachFormerPlans (nnU-Net fingerprint, plan, preprocess)")
    log(format_summary(plan_dataset(size.dataset_id, configuration, num_processes=2, progress=False)))

    stage(f"3/5 train fold 0: teachers {', '.join(size.teachers)}, baseline and distilled student "
          f"({size.preset} preset; nnU-Net's epoch log follows)")
    log("(no UNETR teacher here: it needs more than the demo's 60 iterations to learn the phantom; "
        "`teachformer train` trains all three of the paper's teachers)")
    runs = plan_study(size.dataset_id, [0], size.teachers, "hdenseformer_light", configuration=configuration,
                      device=device, preset=size.preset)
    run_study(runs, log=log)

    stage(f"4/5 predict the {size.test_cases} held-out cases with every model (teachformer predict) and evaluate")
    dataset_json = json.loads((dataset / "dataset.json").read_text())
    held_out = {}
    for r in runs:
        out = workdir / "held_out_predictions" / dataset.name / configuration / r.trainer
        # one worker each: starting nnU-Net's default 3+3 worker processes costs more than these small cases;
        # a re-run predicts again into the demo's own folder
        predict(str(dataset / "imagesTs"), str(out), size.dataset_id, [0], trainer=r.trainer,
                configuration=configuration, device=device, tta=False, processes=1, overwrite=True)
        held_out[r.trainer] = evaluate_predictions(out, dataset / "labelsTs", dataset_json)

    stage("5/5 report (nnU-Net validation of fold 0, parameters, GFLOPs, paired tests, plots)")
    report = build_report(size.dataset_id, folds=[0], output=workdir / "report", device=device, timing=size.timing,
                          mirroring=False, log=log)
    table = held_out_table(held_out, [r.role for r in runs])
    (report.folder / "held_out.md").write_text(table + "\n")

    log("\n" + report.table_markdown)
    log("\nHeld-out phantom cases (not used for training or validation), Dice %:\n" + table)
    log("\nFiles:\n" + "\n".join(f"  {p}" for p in [report.files["report_md"], report.folder / "held_out.md",
                                                      *report.figures.values()]))
    log(f"\nDone in {time.time() - stage.start:.0f} s. This was toy scale.\n{FULL_SCALE}")
    log("\n" + verdict(held_out, runs, size))
    return report, held_out


def foreground_mean(metrics) -> float:
    """Mean over the held-out cases of each case's mean foreground Dice (a correct empty label scores 1)."""
    import numpy as np

    from nnunet_teachformer.evaluation.metrics import case_score
    return float(np.nanmean([case_score(v) for v in metrics.dice.values()]))


def verdict(held_out: dict, runs, size: DemoSize) -> str:
    """One line: the distilled student against its baseline and the best teacher on the held-out cases."""
    dice = {r.role: {} for r in runs}
    for r in runs:
        dice[r.role][r.trainer] = foreground_mean(held_out[r.trainer])
    best = max(dice["teacher"], key=dice["teacher"].get)
    (distilled, d), = dice["distilled"].items()
    (baseline, b), = dice["baseline"].items()
    t = dice["teacher"][best]
    share = f"; the distilled student at {d / t:.2f}x its Dice" if t > 0 else ""
    return (f"VERDICT (toy scale: tiny networks, {size.test_cases} held-out phantom cases, one fold, one unseeded run "
            f"each, so a difference of a few points is noise): held-out foreground Dice of the distilled student "
            f"{100 * d:.1f} % vs its baseline {100 * b:.1f} % ({100 * (d - b):+.1f} points) vs the best teacher, "
            f"{best}, {100 * t:.1f} %{share}.")


def held_out_table(metrics: dict, roles: Sequence[str]) -> str:
    import numpy as np

    from nnunet_teachformer.evaluation.metrics import dice_empty_rule

    first = next(iter(metrics.values()))
    labels = first.labels
    header = ["model", "role"] + [first.label_names.get(lb, str(lb)) for lb in labels] + ["foreground mean"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (trainer, m), role in zip(metrics.items(), roles):  # one rule throughout: a correct empty label scores 1
        per_label = [np.mean([dice_empty_rule(m.dice[c][lb]) for c in m.dice]) for lb in labels]
        fg = foreground_mean(m)
        lines.append("| " + " | ".join([trainer, role] + [f"{100 * v:.1f}" for v in per_label] + [f"{100 * fg:.1f}"])
                     + " |")
    return "\n".join(lines)
