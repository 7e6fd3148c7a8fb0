# Over 400 lines because each of the eleven subcommands keeps its small parser beside the function that runs it.
"""The ``teachformer`` command: one subcommand per step of a Teach-Former study.

Heavy imports (torch, nnU-Net, MONAI) happen inside the subcommands, so ``teachformer --help`` is fast.
A ``TeachFormerError`` or an ``OSError`` is printed as one paragraph and exits with status 2, Ctrl-C as one line
with status 130. Every flag that mirrors one of
nnU-Net's commands also takes nnU-Net's spelling (``NNUNET_SPELLINGS``), hidden from the help.
"""
import argparse
import atexit
import copy
import os
import sys

from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.nnunet_paths import parse_fold


def _convert_synthetic(a):
    from nnunet_teachformer.conversion.synthetic import convert_synthetic
    folder = convert_synthetic(a.dataset_id, a.cases, size=a.size, seed=a.seed, spacing=a.spacing,
                               num_test_cases=a.test_cases, out=a.out, overwrite=a.overwrite)
    print(f"Wrote {folder} ({a.cases} training cases, {a.test_cases} held-out cases).")


def _convert_hecktor21(a):
    from nnunet_teachformer.conversion.hecktor21 import convert_hecktor21
    convert_hecktor21(a.src, dataset_id=a.dataset_id, crop_mm=a.crop, out=a.out, splits=a.splits,
                      skip_bad=a.skip_bad, overwrite=a.overwrite)


def _convert_picai22(a):
    from nnunet_teachformer.conversion.picai22 import convert_picai22
    convert_picai22(a.images_dir, a.labels_dir, dataset_id=a.dataset_id, labels=a.labels, out=a.out,
                    splits=a.splits, skip_bad=a.skip_bad, overwrite=a.overwrite, matrix_size=a.matrix_size,
                    positives_only=a.positives_only)


def _convert_parser(sub):
    convert = sub.add_parser("convert", help="write an nnU-Net raw dataset").add_subparsers(dest="source",
                                                                                           required=True)
    p = convert.add_parser("synthetic", help="synthetic PET/CT phantom (CT + PET, labels GTVp/GTVn)")
    _add_common_convert_args(p, 990)
    p.add_argument("--cases", type=int, default=10, help="training cases (default 10)")
    p.add_argument("--test-cases", type=int, default=0, help="held-out cases in imagesTs/labelsTs (default 0)")
    p.add_argument("--size", type=int, default=48, help="field of view in mm = voxels per axis at 1 mm (default 48)")
    p.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 1.0), metavar=("Z", "Y", "X"),
                   help="voxel spacing in mm (default 1 1 1; e.g. 2 1 1 for anisotropic slices)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_convert_synthetic)

    p = convert.add_parser("hecktor21", help="HECKTOR 2021 PET/CT training or test folder")
    p.add_argument("src", help="folder with <ID>_ct.nii.gz, <ID>_pt.nii.gz, [<ID>_gtvt.nii.gz] and the bbox CSV")
    _add_common_convert_args(p, 501)
    p.add_argument("--crop", type=float, default=144, help="edge of the cube cropped around the bounding box, mm")
    p.add_argument("--splits", choices=["centre", "random"], default=None,
                   help="also write splits_final.json (patient level)")
    p.add_argument("--skip-bad", action="store_true", help="convert the valid cases and list the others")
    p.set_defaults(func=_convert_hecktor21)

    p = convert.add_parser("picai22", help="PI-CAI 2022 bpMRI (T2W, ADC, HBV)")
    p.add_argument("images_dir", help="picai_public_images folder ([fold<k>/]<patient>/<patient>_<study>_*.mha; "
                                      "without fold<k>/, the fold comes from picai_baseline's published splits)")
    p.add_argument("labels_dir", help="picai_labels folder (csPCa_lesion_delineations/...)")
    _add_common_convert_args(p, 502)
    p.add_argument("--labels", choices=["human", "human+ai"], default="human")
    p.add_argument("--splits", choices=["picai"], default=None, help="also write the official five folds")
    p.add_argument("--matrix-size", type=int, nargs=3, default=(24, 384, 384), metavar=("Z", "Y", "X"),
                   help="centre crop/pad on the T2W grid (default 24 384 384, the paper's)")
    p.add_argument("--positives-only", action="store_true",
                   help="only cases with a csPCa lesion (with --labels human: the paper's 220 cases)")
    p.add_argument("--skip-bad", action="store_true", help="convert the valid cases and list the others")
    p.set_defaults(func=_convert_picai22)


def _plan(a):
    from nnunet_teachformer.planners.plan import format_summary, plan_dataset
    for configuration in dict.fromkeys(a.configuration):
        summary = plan_dataset(a.dataset, configuration=configuration, gpu_memory_gb=a.gpu_memory,
                               num_processes=a.num_processes)
        print(format_summary(summary))


def _plan_parser(sub):
    p = sub.add_parser("plan", help="plan TeachFormerPlans (patches of multiples of 32) and preprocess")
    p.add_argument("-d", "--dataset", required=True, help="dataset id or name")
    p.add_argument("-c", "--configuration", nargs="+", default=["2d", "3d_fullres"],
                   help="configurations to preprocess (default: 2d and 3d_fullres, as nnU-Net plans them)")
    p.add_argument("--gpu-memory", type=float, default=None, metavar="GB",
                   help="GPU memory to plan patch and batch size for (default: nnU-Net's 8 GB)")
    p.add_argument("-np", "--num-processes", type=int, default=2,
                   help="processes for fingerprinting and preprocessing (default 2)")
    p.set_defaults(func=_plan)


def _train(a):
    from nnunet_teachformer.study.run import plan_study, run_study
    runs = plan_study(a.dataset, a.folds, a.teachers, a.student, plans=a.plans, configuration=a.configuration,
                      device=a.device, preset=a.preset, nnunet_baseline=a.nnunet_baseline)
    if not _dry_run_or_submit(a, runs):
        run_study(runs)


def _train_parser(sub):
    from nnunet_teachformer import roster
    p = sub.add_parser("train", help="train teachers, baseline and distilled students per fold (nnUNetv2_train)")
    p.add_argument("-d", "--dataset", required=True, help="dataset id or name")
    p.add_argument("-f", "--folds", type=parse_fold, nargs="+", default=[0, 1, 2, 3, 4], help=FOLDS_HELP)
    p.add_argument("--teachers", nargs="+", choices=list(roster.TEACHERS), default=list(roster.PAPER_TEACHERS),
                   help="the paper's three by default; unet/resenc are nnU-Net's own U-Nets (mixes allowed)")
    p.add_argument("--nnunet-baseline", action="store_true",
                   help="also train nnU-Net's own U-Net (UNetTrainer) per fold: the row nnU-Net users compare with")
    p.add_argument("--student", choices=sorted(roster.STUDENTS), default="hdenseformer_light")
    p.add_argument("--preset", choices=sorted(roster.PRESETS), default="full",
                   help="full: the paper's sizes and schedule; 5epochs: a quick check; tiny: CPU smoke run")
    p.add_argument("-p", "--plans", default="TeachFormerPlans")
    p.add_argument("-c", "--configuration", default="3d_fullres")
    p.add_argument("--device", choices=["cuda", "cpu", "mps"], default="cuda")
    _add_run_args(p)
    p.set_defaults(func=_train)


def _dry_run_or_submit(a, runs) -> bool:
    """--dry-run prints the runs, --submit slurm submits them; False when they are to run here."""
    if a.dry_run:
        for r in runs:
            print(("# done: " if r.finished else "") + r.shell())
        return True
    if a.submit:
        _submit(a, runs)
        return True
    if a.write_only or a.gpus is not None or a.sbatch_args:
        raise TeachFormerError("--write-only, --gpus and --sbatch-args are for the job scripts of --submit slurm; "
                               "add --submit slurm, or leave them out to train here.")
    return False


def _distill(a):
    from nnunet_teachformer.nnunet_paths import sort_folds
    from nnunet_teachformer.study.distill import plan_distillation, predict_command
    from nnunet_teachformer.study.run import run_study
    runs, plans = plan_distillation(a.dataset, a.teachers, a.folds, plans=a.plans, configuration=a.configuration,
                                    checkpoint=a.checkpoint, student=a.student, preset=a.preset,
                                    baseline=a.baseline, device=a.device)
    if _dry_run_or_submit(a, runs):
        return
    run_study(runs)
    folds = sort_folds(r.fold for r in runs)
    cross_validated = any(f != "all" for f in folds)  # the paired tests need numbered folds
    # the student's model folder names the reference unambiguously (the dataset may hold it on other plans too)
    _print_report(a.dataset, folds, reference=runs[-1].folder.parent.name if cross_validated else None,
                  device="cuda" if a.device == "cuda" else "cpu", timing=not a.no_timing, mirroring=True)
    print(f"\nPredict with the distilled student:\n    {predict_command(a.dataset, runs, plans, a.configuration)}"
          f" --device {a.device}")


def _distill_parser(sub):
    from nnunet_teachformer import roster
    p = sub.add_parser("distill", help="distil students from the nnU-Net models you already have: trains, per fold, "
                                       "what is missing, reports the students beside their teachers")
    p.add_argument("-d", "--dataset", required=True, help="dataset id or name")
    p.add_argument("--from", dest="teachers", nargs="+", default=["nnUNetTrainer"], metavar="TRAINER",
                   help="trainer(s) of your models, the teachers (default nnUNetTrainer); any nnU-Net trainer or "
                        "this package's, trained with the same plans and configuration")
    p.add_argument("-f", "--folds", type=parse_fold, nargs="+", default=None,
                   help="folds to distil (numbers and/or all; default: every fold your models have)")
    p.add_argument("-p", "--plans", default=None, help="plans of your models (default: found in nnUNet_results)")
    p.add_argument("-c", "--configuration", default="3d_fullres")
    p.add_argument("--checkpoint", default="checkpoint_final.pth",
                   help="the teachers' checkpoint file (default checkpoint_final.pth)")
    p.add_argument("--student", choices=sorted(roster.STUDENTS), default="hdenseformer_light")
    p.add_argument("--baseline", action="store_true", help="also train the student without distillation per fold")
    p.add_argument("--preset", choices=sorted(roster.PRESETS), default="full",
                   help="the student's schedule: full (the paper's), 5epochs, tiny (CPU smoke run)")
    p.add_argument("--device", choices=["cuda", "cpu", "mps"], default="cuda")
    p.add_argument("--no-timing", action="store_true", help="leave the inference timing out of the report")
    _add_run_args(p)
    p.set_defaults(func=_distill)


def _submit(a, runs):
    from nnunet_teachformer.nnunet_paths import resolve_dataset, sort_folds
    from nnunet_teachformer.study.slurm import slurm_folder, submit, write_study
    dataset_id, dataset_name = resolve_dataset(a.dataset, need_raw=False)
    jobs = write_study(runs, dataset_id, dataset_name, sort_folds(r.fold for r in runs), a.device,
                       gpus=1 if a.gpus is None else a.gpus, sbatch_args=a.sbatch_args)
    folder = slurm_folder(dataset_name)
    if not jobs:
        print(f"All {len(runs)} models are trained; nothing to submit. `teachformer report -d {a.dataset}` makes "
              f"the report.")
        return
    if a.write_only:
        print(f"Wrote {len(jobs)} job scripts to {folder}; submit them with: bash {folder / 'submit.sh'}")
        return
    ids = submit(jobs, dataset_name)
    print(f"Submitted {len(ids)} jobs (scripts and logs in {folder}); follow them with: teachformer status -d "
          f"{a.dataset}")


def _status(a):
    from nnunet_teachformer.study.status import format_status, study_status
    print(format_status(*study_status(a.dataset)))


def _status_parser(sub):
    p = sub.add_parser("status", help="which model of which fold is done, running, waiting or failed (results "
                                      "tree, and SLURM for a submitted study)")
    p.add_argument("-d", "--dataset", required=True, help="dataset id or name")
    p.set_defaults(func=_status)


def _predict(a):
    from nnunet_teachformer.inference.predict import predict
    predict(a.input, a.output, a.dataset, a.folds, trainer=a.trainer, plans=a.plans, configuration=a.configuration,
            device=a.device, save_probabilities=a.save_probabilities, checkpoint=a.checkpoint, tta=not a.disable_tta,
            cpu_path=a.cpu_path, postprocessing=not a.no_postprocessing, overwrite=a.overwrite,
            stage_times=a.stage_times, step_size=a.step_size, mirror_axes=a.mirror_axes)


def _percent(text: str) -> str:
    """``text`` in an argparse help string, which %-formats it."""
    return text.replace("%", "%%")


def _predict_parser(sub):
    p = sub.add_parser("predict", help="predict with the distilled student's fold ensemble (nnUNetv2_predict)")
    p.add_argument("-i", "--input", required=True, help="folder of images named CASE_XXXX.nii.gz")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("-d", "--dataset", required=True, help="dataset id or name")
    p.add_argument("-f", "--folds", type=parse_fold, nargs="+", default=[0, 1, 2, 3, 4], help=FOLDS_HELP)
    p.add_argument("-tr", "--trainer", default="TeachFormerTrainer")
    p.add_argument("-p", "--plans", default="TeachFormerPlans")
    p.add_argument("-c", "--configuration", default="3d_fullres")
    p.add_argument("--checkpoint", default="checkpoint_final.pth")
    p.add_argument("--device", choices=["cuda", "cpu", "mps"], default="cuda")
    p.add_argument("--save-probabilities", action="store_true")
    p.add_argument("--overwrite", action="store_true",
                   help="replace segmentations already in the output folder (never a raw dataset's images or labels), "
                        "and the --stage-times file")
    p.add_argument("--disable-tta", action="store_true", help="no mirroring test-time augmentation (8x faster)")
    from nnunet_teachformer.inference.cpu_paths import CPU_PATHS, DEFAULT_STEP_SIZE, LEVER_COSTS
    p.add_argument("--cpu-path", choices=["auto", *CPU_PATHS], default="auto",
                   help="--device cpu: how the network runs; auto (default) measures each exact way on the model and "
                        "takes the one that finishes first (a once-per-fold build included) among those whose logits "
                        "equal nnU-Net's own (nnunet) within 1e-3, and says which; once per model and machine (the "
                        "measurements are remembered). openvino_bf16 is not exact: " + _percent(LEVER_COSTS["openvino_bf16"]))
    p.add_argument("--step-size", type=float, default=DEFAULT_STEP_SIZE,
                   help=f"tile step as a fraction of the tile (nnU-Net's, default {DEFAULT_STEP_SIZE}: exact). "
                        + _percent(LEVER_COSTS["step_size"]))
    p.add_argument("--mirror-axes", type=int, nargs="+", metavar="AXIS",
                   help="--device cpu with mirroring: mirror along these of the model's axes only (nnU-Net's spatial "
                        "axes after its transpose, 0 1 2; default: all it allows, as nnU-Net). "
                        + _percent(LEVER_COSTS["mirror_axes"]))
    p.add_argument("--no-postprocessing", action="store_true",
                   help="skip the connected-component postprocessing that nnUNetv2_find_best_configuration chose for "
                        "this model and folds (applied by default where its postprocessing.pkl exists)")
    p.add_argument("--stage-times", metavar="JSON",
                   help="write where the time went (seconds per stage: checks, path choice and builds, waiting for "
                        "preprocessing, forwards, sliding window, export...) and the peak memory to this file")
    p.set_defaults(func=_predict)


def _evaluate_hecktor21(a):
    from nnunet_teachformer.evaluation.hecktor21 import evaluate_hecktor21
    scores = evaluate_hecktor21(a.predictions, a.source, resampled_out=a.resampled_out, overwrite=a.overwrite)
    print(scores.table())
    if a.resampled_out:
        print(f"Predictions on their original CT grids (the challenge's submission format): {a.resampled_out}")


def _evaluate_picai22(a):
    from nnunet_teachformer.evaluation.picai import bootstrap_ci, compare, evaluate_picai22
    scores = evaluate_picai22(a.predictions, a.labels, cases=a.cases, threshold=a.threshold)
    print(scores.table(bootstrap_ci(scores, a.resamples, a.seed)))
    if a.compare:
        other = evaluate_picai22(a.compare, a.labels, cases=[c.case for c in scores.cases], threshold=a.threshold)
        print("\nPaired comparison (A - B):\n" + compare(scores, other, a.resamples, a.seed).table())


def _evaluate_parser(sub):
    evaluate = sub.add_parser("evaluate", help="score predictions with a challenge's own protocol").add_subparsers(
        dest="challenge", required=True)
    p = evaluate.add_parser("hecktor21", help="HECKTOR 2021: DSC and HD95 on the original CT grid in each patient's "
                                              "bounding box (mean DSC, median HD95)")
    p.add_argument("--predictions", required=True, help="folder of <PatientID>.nii.gz on the converted 1 mm crop grid")
    p.add_argument("--source", required=True, help="the challenge's training folder the dataset was converted from "
                                                   "(hecktor_nii/ with the GTVt labels, hecktor2021_bbox_training.csv)")
    p.add_argument("--resampled-out", default=None, metavar="DIR",
                   help="also write each prediction on its original CT grid here (the challenge's submission format)")
    p.add_argument("--overwrite", action="store_true", help="replace files of the same names in --resampled-out")
    p.set_defaults(func=_evaluate_hecktor21)

    p = evaluate.add_parser("picai22", help="PI-CAI 2022: csPCa detection from nnU-Net's probabilities (npz) with "
                                            "picai_eval: AUROC, AP and ranking score with 95 %% CIs")
    p.add_argument("--predictions", required=True, help="folder of <case>.npz (nnUNetv2_predict --save_probabilities, "
                                                        "or fold_X/validation after nnUNetv2_train --npz)")
    p.add_argument("--labels", required=True, help="folder of <case>.nii.gz labels (0 background, 1 csPCa): the "
                                                   "dataset's labelsTr or nnUNet_preprocessed/<Dataset>/"
                                                   "gt_segmentations")
    p.add_argument("--cases", nargs="+", default=None, help="score only these cases (default: every npz)")
    p.add_argument("--compare", default=None, metavar="DIR",
                   help="a second model's npz folder: paired bootstrap of the differences (--predictions minus it)")
    p.add_argument("--threshold", choices=["dynamic", "dynamic-fast"], default="dynamic",
                   help="extract_lesion_candidates' threshold (default dynamic, as picai_baseline's nnU-Net "
                        "evaluation)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the cases (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.set_defaults(func=_evaluate_picai22)


def _report(a):
    _print_report(a.dataset, a.folds, output=a.output, reference=a.reference, device=a.device,
                  timing=not a.no_timing, mirroring=not a.disable_tta, overwrite=a.overwrite)


def _print_report(dataset, folds, **options):
    from nnunet_teachformer.evaluation.report import build_report
    report = build_report(dataset, folds, **options)
    print(f"Reference for the paired tests: {report.reference_rule}; p-values Holm-corrected over the table\n")
    print(report.table_markdown)
    if report.fold_all_table:
        print(f"\nFold all (not cross-validated: validated on its own training cases):\n{report.fold_all_table}")
    if any(r.model.teacher_warnings for r in report.rows):
        print("\n† taught by a teacher without a provenance record of its own: its cases are derived from nnU-Net's "
              "split, or unknown (see Teachers in report.md)")
    if report.missing:
        print("\nMissing (not averaged):\n" + "\n".join(f"- {m}" for m in report.missing))
    print(f"\nReport: {report.files['report_md']}")
    for path in [p for k, p in report.files.items() if k != "report_md"] + list(report.figures.values()):
        print(f"  {path}")


def _report_parser(sub):
    p = sub.add_parser("report", help="cross-validation table, paired tests, plots and gallery of every model")
    p.add_argument("-d", "--dataset", required=True, help="dataset id or name")
    p.add_argument("-f", "--folds", type=parse_fold, nargs="+", default=[0, 1, 2, 3, 4],
                   help=FOLDS_HELP + "; fold all is listed apart, as not cross-validated")
    p.add_argument("-o", "--output", default=None, help="report folder (default: $nnUNet_results/<Dataset>/"
                                                          "teachformer_report)")
    p.add_argument("--reference", default=None, metavar="TRAINER",
                   help="model the paired tests compare against (trainer, folder or row name); default: "
                        "TeachFormerTrainer, else its one _tiny/_demo/_5epochs preset present")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="device for the inference timing (default: cuda if available, else cpu)")
    p.add_argument("--no-timing", action="store_true", help="skip the inference timing (slow for big models on CPU)")
    p.add_argument("--disable-tta", action="store_true", help="time without mirroring test-time augmentation")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an -o folder that holds other files than an earlier report's")
    p.set_defaults(func=_report)


def _demo(a):
    from nnunet_teachformer.study.demo import run_demo
    run_demo(a.workdir, quick=a.quick, device=a.device, configuration=a.configuration)


def _demo_parser(sub):
    p = sub.add_parser("demo", help="toy-scale study on the synthetic phantom: convert, plan, train, predict, report")
    p.add_argument("--workdir", default="teachformer_demo", help="folder for the demo's nnU-Net data and results")
    p.add_argument("--quick", action="store_true",
                   help="one teacher (SwinUNETR) on a smaller phantom, fewer cases (4-6 min): a smoke test")
    p.add_argument("--device", choices=["cuda", "cpu", "mps"], default=None, help="default: cuda if available")
    p.add_argument("-c", "--configuration", choices=["2d", "3d_fullres"], default="3d_fullres",
                   help="nnU-Net configuration of the study (2d: slices, the paper's PI-CAI arm)")
    p.set_defaults(func=_demo)


def _export(a):
    from pathlib import Path

    if a.zip:
        from nnunet_teachformer.sharing.export import export_model_zip
        card = export_model_zip(a.dataset, a.zip, a.fold, trainer=a.trainer, plans=a.plans,
                                configuration=a.configuration, checkpoint=a.checkpoint, timing=not a.no_timing,
                                overwrite=a.overwrite)
        folds = " ".join(str(f) for f in card["model"]["folds"])
        print(f"Wrote {a.zip} (folds {folds}, model card MODEL_CARD.md + model_card.json). The receiver installs it "
              f"with `nnUNetv2_install_pretrained_model_from_zip {a.zip}` and predicts with nnUNetv2_predict -tr "
              f"{a.trainer} -p {a.plans} -c {a.configuration} -f {folds}.")
        return
    from nnunet_teachformer.sharing.export import export_student
    if not a.fold or len(a.fold) != 1:
        raise TeachFormerError("ONNX export (-o/--onnx) takes exactly one fold: add e.g. -f 0.")
    meta = export_student(a.dataset, a.fold[0], a.onnx, trainer=a.trainer, plans=a.plans,
                          configuration=a.configuration, opset=a.opset, checkpoint=a.checkpoint, tolerance=a.tolerance,
                          overwrite=a.overwrite)
    check = meta["verification"]
    print(f"Wrote {a.onnx} (opset {a.opset}, input {meta['input']['shape']}) and its input contract "
          f"{Path(a.onnx).with_suffix('.json')}; onnxruntime vs PyTorch: max |logit difference| "
          f"{check['max_abs_logit_difference']:.2e} <= {check['tolerance']:g}.")


def _export_parser(sub):
    p = sub.add_parser("export", help="share a trained model: an nnU-Net model zip with its model card (--zip), or "
                                      "one fold as ONNX checked with onnxruntime, plus its input contract (-o)")
    p.add_argument("-d", "--dataset", required=True, help="dataset id or name")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--zip", help="model zip to write, for nnUNetv2_install_pretrained_model_from_zip")
    target.add_argument("-o", "--onnx", help="ONNX file to write, e.g. student.onnx (its .json next to it)")
    p.add_argument("-f", "--fold", nargs="+", default=None,
                   help="folds (0-4 or all): one for ONNX; for --zip default every fold with a checkpoint")
    p.add_argument("-tr", "--trainer", default="TeachFormerTrainer")
    p.add_argument("-p", "--plans", default="TeachFormerPlans")
    p.add_argument("-c", "--configuration", default="3d_fullres")
    p.add_argument("--checkpoint", default="checkpoint_final.pth")
    p.add_argument("--no-timing", action="store_true", help="--zip: leave the CPU time per case out of the card")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing -o file (and its .json); --zip: also a MODEL_CARD.md/model_card.json in "
                        "the model folder that export did not write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17; the exporter supports 9-20)")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest accepted |logit difference| between onnxruntime and PyTorch (default 1e-3)")
    p.set_defaults(func=_export)


def _env(a):
    import os
    import shlex

    from nnunet_teachformer.nnunet_ext import register_ext_trainer_dir
    print(f"export nnUNet_extTrainer={shlex.quote(register_ext_trainer_dir(dict(os.environ)))}")


def _env_parser(sub):
    p = sub.add_parser("env", help="print the export line that makes nnU-Net find our trainers without the start-up "
                                   "hook: eval \"$(teachformer env)\"")
    p.set_defaults(func=_env)


def _add_common_convert_args(p, default_id):
    p.add_argument("--dataset-id", type=int, default=default_id, help=f"nnU-Net dataset id (default {default_id})")
    p.add_argument("--out", default=None, help="raw-data root to write to (default: $nnUNet_raw)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="teachformer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add_parser in (_convert_parser, _plan_parser, _train_parser, _distill_parser, _status_parser, _predict_parser,
                       _evaluate_parser, _report_parser, _demo_parser, _export_parser, _env_parser):
        add_parser(sub)
    _add_nnunet_spellings(parser)
    return parser


FOLDS_HELP = "folds: numbers and/or all (nnU-Net's model trained on every case)"
# our flag -> nnU-Net's spelling of the same flag, also accepted (hidden from the help)
NNUNET_SPELLINGS = {"--device": "-device", "--disable-tta": "--disable_tta", "--save-probabilities":
                    "--save_probabilities", "--checkpoint": "-chk", "--gpu-memory": "-gpu_memory_target",
                    "--step-size": "-step_size"}


def _add_nnunet_spellings(parser: argparse.ArgumentParser) -> None:
    """Adds to every (sub)parser a hidden twin of each flag in ``NNUNET_SPELLINGS``, writing the same value."""
    for action in list(parser._actions):
        if isinstance(action, argparse._SubParsersAction):
            for subparser in dict.fromkeys(action.choices.values()):
                _add_nnunet_spellings(subparser)
            continue
        for flag in action.option_strings:
            if flag in NNUNET_SPELLINGS:
                twin = copy.copy(action)
                twin.option_strings, twin.help, twin.required = [NNUNET_SPELLINGS[flag]], argparse.SUPPRESS, False
                parser._add_action(twin)


def _add_run_args(p) -> None:
    """How the nnUNetv2_train runs of `train` and `distill` are carried out: here, printed, or on SLURM."""
    p.add_argument("--dry-run", action="store_true", help="print the nnUNetv2_train commands and exit")
    p.add_argument("--submit", choices=["slurm"], default=None,
                   help="submit the runs as a SLURM job graph (students after their fold's teachers, then the "
                        "report) instead of training here")
    p.add_argument("--sbatch-args", default="", metavar='"OPTIONS"',
                   help='sbatch options for every job, e.g. "--partition=gpu --time=48:00:00 --account=lab"')
    p.add_argument("--gpus", type=int, default=None,
                   help="GPUs per training job (default 1; more runs nnU-Net's -num_gpus; 0 with --device cpu)")
    p.add_argument("--write-only", action="store_true",
                   help="with --submit: write the job scripts and submit.sh to $nnUNet_results/<Dataset>/slurm "
                        "without submitting")


def _glue_option_values(argv):
    """``--sbatch-args "--time=48:00:00"``: argparse would read a lone sbatch option as one of ours; glue it on."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for i in range(len(argv) - 1, 0, -1):
        if argv[i - 1] == "--sbatch-args":
            argv[i - 1:i + 1] = [f"--sbatch-args={argv[i]}"]
    return argv


def main(argv=None) -> int:
    args = build_parser().parse_args(_glue_option_values(argv))
    try:
        args.func(args)
    except TeachFormerError as e:
        print(f"teachformer: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"teachformer {args.command}: interrupted; nothing half-written is kept (a started training resumes): "
              f"run the same command again to finish.", file=sys.stderr)
        return 130
    except OSError as e:  # a folder that is read-only, full or gone: the file and the reason, not a traceback
        print(f"teachformer: error: cannot write or read {e.filename or 'a file'}: {e.strerror or e}. Make the folder "
              f"writable (or free space, or point the command elsewhere) and run the same command again.",
              file=sys.stderr)
        return 2
    return 0


def console_main() -> None:
    """The ``teachformer`` console script: ``main``, then its exit. After ``teachformer predict`` (whose own threads
    have all ended by then) the exit handlers run and the process ends without Python's teardown of every module it
    imported (PyTorch, OpenVINO, nnU-Net: ~2 s after each prediction had ended, benchmarks/README.md)."""
    code = main()
    if sys.argv[1:2] == ["predict"]:
        atexit._run_exitfuncs()  # what sys.exit would run: multiprocessing's and logging's clean-up included
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console_main()
