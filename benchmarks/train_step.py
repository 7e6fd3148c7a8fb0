"""What distillation costs per training iteration: the student alone, each teacher's forward, the distillation step.

For the default student and teachers (``TeachFormerTrainer``: H-DenseFormer Light taught by H-DenseFormer,
SwinUNETR and UNETR) at one patch and batch size, on batches of the real nnU-Net training pipeline
(phantom data, TeachFormerPlans, fold 0, augmentation on):

    (a) the student alone:  its baseline trainer's ``train_step`` (HDenseFormerLightTrainer)
    (b) each teacher alone: one forward pass as TeachFormerTrainer runs it (``TeacherEnsemble`` of that
                            teacher: no autograd, the trainer's teacher autocast, attention maps and
                            tempered probabilities included)
    (c) distillation:       ``TeachFormerTrainer.train_step``

    kd_over_student = (c) / (a)                what distillation multiplies a training step by
    waste_ratio     = (c) / ((a) + sum (b))    above the physical floor; must stay <= 1.10

Batches are fetched from the trainer's own dataloader before timing (nnUNet_n_proc_DA=0, one process, so
the batches are reproducible) and every measurement sees the same batches. The measurements take turns
within each round (a, b..., c, then the levers), warm-up rounds are not counted, and the table gives
medians, so load from other processes spreads over all of them instead of biasing one.

Levers (how the teachers run; trainer attributes, see trainers/teachformer.py): ``teacher_precision``
"bf16" (bf16 autocast for the teachers; on CUDA this is already the default, "fp32" is measured there
instead) and ``teacher_channels_last``. Teacher weights are untrained (initialised and saved with nnU-Net's
``save_checkpoint``); that does not change the cost.

    python benchmarks/train_step.py --device cpu|cuda [--tiny] [--json PATH] [--patch Z Y X] [--batch B]
"""
import gc
import sys
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable, Dict, List

import common

LEVER_CONFIGS = {  # name -> (teacher_precision, teacher_channels_last)
    "as shipped": ("auto", False),
    "channels_last": ("auto", True),
    "bf16": ("bf16", False),
    "bf16 + channels_last": ("bf16", True),
    "fp32": ("fp32", False),
}
NOT_MEASURED = {
    "torch.compile of the teachers": "not offered: compiling the three tiny teachers with inductor on this CPU took "
                                     "75-105 s each and gave no speedup at 64^3 (within noise), and capture_taps "
                                     "adds its hooks per call, which a compiled module does not see; a compiled "
                                     "teacher needs a wrapper that returns its tap features",
    "caching teacher outputs": "not offered: nnU-Net augments every training batch (random crop, mirroring, "
                               "spatial and intensity transforms), so there is no un-augmented part to cache",
}


def parse_args(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, nargs=3, metavar=("Z", "Y", "X"),
                        help="patch size (default: the plans' patch of the phantom)")
    parser.add_argument("--batch", type=int, help="batch size (default: the plans')")
    parser.add_argument("--size", type=int, help="phantom edge in voxels (default: 32 tiny, 64 cpu, 144 cuda)")
    parser.add_argument("--iterations", type=int, help="timed rounds (default: 1 tiny, 3 cpu, 20 cuda)")
    parser.add_argument("--warmup", type=int, help="untimed rounds first (default: 1 tiny/cpu, 5 cuda)")
    parser.add_argument("--levers", default="default",
                        help="comma-separated teacher settings to measure besides the shipped one: "
                             f"{', '.join(list(LEVER_CONFIGS)[1:])}; 'none'; 'default' = those that make sense "
                             "on the device")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    args.size = args.size or (32 if args.tiny else 144 if cuda else 64)
    args.iterations = args.iterations or (1 if args.tiny else 20 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda and not args.tiny else 1)
    if args.levers == "default":
        levers = ["channels_last", "fp32"] if cuda else ["channels_last", "bf16", "bf16 + channels_last"]
    elif args.levers == "none":
        levers = []
    else:
        levers = [name.strip() for name in args.levers.split(",") if name.strip()]
    unknown = [name for name in levers if name not in LEVER_CONFIGS]
    if unknown:
        parser.error(f"unknown lever(s) {unknown}; choose from {list(LEVER_CONFIGS)[1:]}")
    args.configs = ["as shipped"] + [name for name in levers if name != "as shipped"]
    return args


@dataclass
class Measurement:
    name: str
    run: Callable[[dict], object]
    times: List[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return common.median(self.times)


def teacher_forward(trainer, ensemble, device) -> Callable[[dict], object]:
    def run(batch):
        target = batch["target"]
        full_target = (target[0] if isinstance(target, list) else target).to(device, non_blocking=True)
        with trainer.teacher_autocast():
            return ensemble(batch["data"].to(device, non_blocking=True), full_target)
    return run


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from nnunet_teachformer.roster import STUDENTS

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    common.set_threads(args.threads)
    suffix = "_tiny" if args.tiny else ""
    baseline_name, distilled_name = (n + suffix for n in STUDENTS["hdenseformer_light"])
    info = common.machine(args.device)

    with common.workspace(args.workdir):
        common.log(f"[train_step] phantom {args.size}^3, TeachFormerPlans ...")
        dataset = common.phantom(args.size, ["TeachFormerPlans"], test_cases=0)
        # one process for augmentation: reproducible batches, fetched before timing
        with common.environment(nnUNet_n_proc_DA="0"):
            def distilled(config: str):
                trainer = common.make_trainer(distilled_name, dataset, "TeachFormerPlans", device,
                                              patch_size=args.patch, batch_size=args.batch)
                trainer.teacher_precision, trainer.teacher_channels_last = LEVER_CONFIGS[config]
                return trainer

            trainers = {config: distilled(config) for config in args.configs}
            first = trainers["as shipped"]
            patch = [int(p) for p in first.configuration_manager.patch_size]
            batch_size = int(first.configuration_manager.batch_size)
            teacher_names = [ref.trainer for ref in first.teacher_refs()]
            common.log(f"[train_step] patch {patch}, batch {batch_size}; untrained teacher checkpoints: "
                       f"{', '.join(teacher_names)}")
            for name in teacher_names:
                teacher = common.make_trainer(name, dataset, "TeachFormerPlans", device, patch_size=args.patch,
                                              batch_size=args.batch)
                common.write_untrained_checkpoint(teacher)
                del teacher
                gc.collect()

            # inference.py leaves an untrained student checkpoint in a shared workspace; without its teacher record
            # the distilled trainer would take it for another run's fold. These measurement trainers start afresh.
            for stale in Path(first.output_folder).glob("checkpoint_*.pth"):
                stale.unlink()
            baseline = common.make_trainer(baseline_name, dataset, "TeachFormerPlans", device,
                                           patch_size=args.patch, batch_size=args.batch)
            with common.quiet():
                for trainer in [baseline, *trainers.values()]:
                    trainer.on_train_start()  # loads and checks the teachers for the distilled trainers
                    trainer.on_train_epoch_start()
                rounds = args.warmup + args.iterations
                batches = [next(first.dataloader_train) for _ in range(rounds)]

        measurements: Dict[str, Measurement] = {"a": Measurement(baseline_name, baseline.train_step)}
        for config, trainer in trainers.items():
            for teacher in trainer.teachers.teachers:
                ensemble = trainer.teacher_ensemble([teacher])
                measurements[f"b|{config}|{teacher.ref.trainer}"] = Measurement(
                    teacher.ref.trainer, teacher_forward(trainer, ensemble, device))
            measurements[f"c|{config}"] = Measurement(distilled_name, trainer.train_step)

        common.log(f"[train_step] {args.warmup} warm-up + {args.iterations} timed rounds of "
                   f"{len(measurements)} measurements")
        for i, batch in enumerate(batches):
            for m in measurements.values():
                seconds = common.timed(lambda: m.run(batch), device)
                if i >= args.warmup:
                    m.times.append(seconds)
            common.log(f"[train_step] round {i + 1}/{rounds}" + (" (warm-up)" if i < args.warmup else ""))

    a = measurements["a"].median
    results = {}
    for config in args.configs:
        b = {k.split("|")[2]: m.median for k, m in measurements.items() if k.startswith(f"b|{config}|")}
        c = measurements[f"c|{config}"].median
        results[config] = {"teacher_precision": LEVER_CONFIGS[config][0],
                           "teacher_channels_last": LEVER_CONFIGS[config][1],
                           "b_teacher_forward_s": b, "b_sum_s": sum(b.values()), "c_distillation_step_s": c,
                           "kd_over_student": common.ratio(c, a), "waste_ratio": common.ratio(c, a + sum(b.values()))}
    shipped = results["as shipped"]

    rows = [["(a) student alone", f"{baseline_name}.train_step", f"{a:.3f}", "1.00"]]
    rows += [["(b) teacher forward", name, f"{t:.3f}", f"{common.ratio(t, a):.2f}"]
             for name, t in shipped["b_teacher_forward_s"].items()]
    rows += [["(a) + sum (b)", "physical floor", f"{a + shipped['b_sum_s']:.3f}",
              f"{common.ratio(a + shipped['b_sum_s'], a):.2f}"],
             ["(c) distillation step", f"{distilled_name}.train_step", f"{shipped['c_distillation_step_s']:.3f}",
              f"{shipped['kd_over_student']:.2f}"]]
    precision = "bf16 autocast" if args.device == "cuda" else "fp32"
    print(f"\nTraining step on {args.device} ({info['cpu'] if args.device == 'cpu' else info.get('gpu')}, "
          f"{info['torch_threads']} threads), patch {patch}, batch {batch_size}, teachers {precision}; "
          f"median of {args.iterations} after {args.warmup} warm-up (other processes share this machine: "
          f"load average {info['load_average_at_start'][0]})\n")
    print(common.table(["step", "what", "s / iteration", "x (a)"], rows))
    print(f"\n(c)/(a) = {shipped['kd_over_student']:.2f}   waste (c)/((a)+sum(b)) = {shipped['waste_ratio']:.3f} "
          f"({'<=' if shipped['waste_ratio'] <= 1.10 else '>'} 1.10)")

    if len(args.configs) > 1:
        lever_rows = [[config, r["teacher_precision"], "yes" if r["teacher_channels_last"] else "no",
                       f"{r['b_sum_s']:.3f}", f"{common.ratio(r['b_sum_s'], shipped['b_sum_s']):.2f}",
                       f"{r['c_distillation_step_s']:.3f}",
                       f"{common.ratio(r['c_distillation_step_s'], shipped['c_distillation_step_s']):.2f}",
                       f"{r['kd_over_student']:.2f}", f"{r['waste_ratio']:.3f}"]
                      for config, r in results.items()]
        print("\nLevers (teacher settings of TeachFormerTrainer; same rounds, same batches)\n")
        print(common.table(["teachers", "teacher_precision", "channels_last", "sum(b) s", "x shipped", "(c) s",
                            "x shipped", "(c)/(a)", "waste"], lever_rows))
    for lever, why in NOT_MEASURED.items():
        print(f"- {lever}: {why}")

    best = min(results, key=lambda k: results[k]["c_distillation_step_s"])
    common.write_json(args.json, {
        "benchmark": "train_step", "machine": info,
        "settings": {"device": args.device, "tiny": args.tiny, "phantom_size": args.size, "patch_size": patch,
                     "batch_size": batch_size, "iterations": args.iterations, "warmup": args.warmup,
                     "student_trainer": baseline_name, "distilled_trainer": distilled_name,
                     "teachers": teacher_names, "weights": "untrained (cost does not depend on the values)"},
        "a_student_step_s": a, "b_teacher_forward_s": shipped["b_teacher_forward_s"], "b_sum_s": shipped["b_sum_s"],
        "c_distillation_step_s": shipped["c_distillation_step_s"],
        "waste_ratio": shipped["waste_ratio"], "kd_over_student": shipped["kd_over_student"],
        "levers": results, "not_measured": NOT_MEASURED,
        "raw_times_s": {k: m.times for k, m in measurements.items()},
    })
    print(f"\nSUMMARY train_step ({args.device}, patch {patch}, batch {batch_size}): kd_over_student "
          f"{shipped['kd_over_student']:.2f}, waste_ratio {shipped['waste_ratio']:.3f}; fastest teacher setting "
          f"'{best}': (c) x{common.ratio(results[best]['c_distillation_step_s'], shipped['c_distillation_step_s']):.2f}"
          f", (c)/(a) {results[best]['kd_over_student']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
