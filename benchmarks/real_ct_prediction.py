"""Real CTs predicted on the CPU end to end, ``teachformer predict --device cpu`` beside ``nnUNetv2_predict -device
cpu``, on the same model and scans, with where the time goes stage by stage.

Scans: the two lung CTs of the pyradiomics 3.0.1 source archive (``data/lung1_image.nrrd``, ``lung2_image.nrrd``:
512 x 512 x 48 and 61 slices, 0.6 x 0.6 x 5 mm, HU), downloaded with ``pip download`` into ``--workdir``, or the
volumes of ``--images DIR`` (one CT per file, any size). They become an nnU-Net raw dataset (one CT channel; each
scan and its two in-plane mirror images as training cases, labelled by a bone threshold, HU > 300; the scans
themselves as the cases to predict), planned by ``teachformer plan`` (TeachFormerPlans), with the student at its
real widths (``HDenseFormerLightTrainer``, H-DenseFormer Light): fold 0 trained for ``--train-iterations`` by
nnU-Net's own training loop (in this process; nnU-Net's final validation left out), the other folds untrained
(nnU-Net's ``save_checkpoint`` of a fresh trainer: the cost of a forward does not depend on the weights). All of
it is cached in ``--workdir``.

Settings, each command a fresh process:

* ``fold0`` (fold 0, no mirroring): ``teachformer predict --device cpu`` (its defaults: auto path, exact) twice,
  first with nothing kept (``_first_call``: it measures the CPU paths and builds the fold), then with what the
  first call measured and built kept (``inference.path_memory``, ``inference.build_cache``; in ``--workdir``
  here), as every later call runs; the same with ``--cpu-path nnunet`` (nnU-Net's own predictor and network as
  ``nnUNetv2_predict`` runs them, timed stage by stage); ``nnUNetv2_predict -device cpu`` itself (wall time and
  memory only); and ``teachformer predict`` with the inexact levers of ``SPEED_LEVERS``, a first call and a later
  one;
* ``folds5_tta`` (five folds, mirroring): ``teachformer predict`` with ``SPEED_LEVERS`` and ``TTA_LEVERS`` only,
  a first call and a later one (nnU-Net's own takes ~40 times its fold-0 time here: hours);
* ``levers``: what each inexact lever (``LEVERS``) costs in agreement, on the trained fold 0 and fold 0's
  validation cases (held out of its training; their mirror-image siblings were not): each lever's segmentation
  against the exact one (Dice of the bone label, voxels that differ) and both against the labels; the mirror
  levers (``MIRROR_LEVERS``) with mirroring, on the first of those cases (8 forwards per tile).

Per run: wall seconds per scan; the predicting thread's seconds per
stage (``teachformer predict --stage-times``, ``nnunet_teachformer.inference.stage_times.STAGES``) plus
``startup`` (process start to the predict command: interpreter, command line imports) and ``exit``; GFLOP/s of
the forwards (FLOPs per tile x tile forwards / forward seconds); peak memory (the largest resident high-water of
the command's processes, normally the predictor's own). nnU-Net reads, preprocesses, resamples back and writes in
worker processes alongside the forwards; their own CPU seconds per scan are measured here too (``components``:
nnU-Net's reader, preprocessor, ``convert_predicted_logits_to_segmentation_with_correct_shape`` and writer, run
once per scan in this process), beside what the predictor waited for them.

    python benchmarks/real_ct_prediction.py [--workdir DIR] [--images DIR] [--settings fold0 folds5_tta levers]
                                            [--train-iterations N] [--json PATH] [--tiny]
"""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import common
from nnunet_teachformer.inference.path_memory import MEMORY_ENV

DATASET_ID = 985
DATASET_NAME = "TeachFormerRealCT"
PLANS = "TeachFormerPlans"
CONFIGURATION = "3d_fullres"
PYRADIOMICS = "pyradiomics==3.0.1"
SCANS = ("lung1_image.nrrd", "lung2_image.nrrd")
BONE_HU = 300
SETTINGS = {"fold0": ((0,), False), "folds5_tta": ((0, 1, 2, 3, 4), True), "levers": ((0,), False)}
# the inexact levers of `teachformer predict`, each alone, then together, measured by the `levers` setting ...
LEVERS = {
    "step_size_0.75": ["--step-size", "0.75"],
    "step_size_1": ["--step-size", "1"],
    "bf16": ["--cpu-path", "openvino_bf16"],
    "bf16_step_size_1": ["--cpu-path", "openvino_bf16", "--step-size", "1"],
}
TTA_LEVERS = ["--mirror-axes", "1", "2"]  # in-plane mirroring only: 4 forwards per tile instead of 8
MIRROR_LEVERS = {"mirror_axes_1_2": TTA_LEVERS, "mirror_axes_2": ["--mirror-axes", "2"]}  # against full mirroring
# ... and those the speed settings switch on
SPEED_LEVERS = LEVERS["bf16_step_size_1"]
IMAGE_ENDINGS = (".nrrd", ".nii.gz", ".nii", ".mha", ".mhd")
# runs the command given after it and writes its wall clock and the largest resident high-water of its processes;
# a fresh interpreter, so that no peak of the benchmark's own process is carried into the command's
MEASURE = """
import json, resource, subprocess, sys, time
start = time.time()
code = subprocess.call(sys.argv[2:], stdout=open(sys.argv[1] + '.log', 'w'), stderr=subprocess.STDOUT)
json.dump({'launched_at': start, 'ended_at': time.time(), 'returncode': code,
           'peak_resident_bytes': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024},
          open(sys.argv[1], 'w'))
"""


def parse_args(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", help="folder of real-size CT volumes to predict (one per file) instead of the "
                                         "pyradiomics lung CTs")
    parser.add_argument("--settings", choices=SETTINGS, nargs="+", help="default: all (--tiny: fold0)")
    parser.add_argument("--train-iterations", type=int,
                        help="iterations of nnU-Net's training loop for fold 0 (default 250, --tiny 4)")
    args = parser.parse_args(argv)
    if args.device != "cpu":
        raise SystemExit("this benchmark measures CPU prediction: --device cpu")
    args.settings = args.settings or (["fold0"] if args.tiny else list(SETTINGS))
    if args.train_iterations is None:
        args.train_iterations = 4 if args.tiny else 250
    return args


# scans and model -------------------------------------------------------------------------------------------
def pyradiomics_scans(workdir: Path) -> list:
    """The two lung CTs of the pyradiomics source archive, downloaded once into ``workdir``."""
    folder = workdir / "pyradiomics_data"
    if all((folder / name).is_file() for name in SCANS):
        return [folder / name for name in SCANS]
    download = workdir / "downloads"
    archives = sorted(download.glob("pyradiomics-*.tar.gz"))
    if not archives:
        common.log(f"[real_ct] downloading the {PYRADIOMICS} source archive ...")
        subprocess.run([sys.executable, "-m", "pip", "download", PYRADIOMICS, "--no-deps", "--no-binary", ":all:",
                        "--no-build-isolation", "-d", str(download)], check=True, capture_output=True)
        archives = sorted(download.glob("pyradiomics-*.tar.gz"))
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archives[0]) as archive:
        for member in archive.getmembers():
            if Path(member.name).name in SCANS and Path(member.name).parent.name == "data":
                (folder / Path(member.name).name).write_bytes(archive.extractfile(member).read())
    return [folder / name for name in SCANS]


def tiny_scans(workdir: Path) -> list:
    """Two small synthetic CTs on the lung CTs' spacing (a smoke run's stand-ins)."""
    import numpy as np
    import SimpleITK as sitk

    folder = workdir / "tiny_scans"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, slices in enumerate((10, 12)):
        path = folder / f"tiny{i + 1}.nrrd"
        if not path.is_file():
            z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in (slices, 80, 80)], indexing="ij")
            body = y ** 2 + x ** 2 < 0.8
            spine = (abs(x) < 0.15) & (y > 0.4) & (y < 0.7)
            rng = np.random.default_rng(i)
            hu = np.where(body, 40, -1000) + 800 * spine + rng.normal(0, 20, body.shape)
            image = sitk.GetImageFromArray(hu.astype(np.int16))
            image.SetSpacing((0.6, 0.6, 5.0))
            sitk.WriteImage(image, str(path))
        paths.append(path)
    return paths


def raw_dataset(scans: list) -> str:
    """``Dataset985_TeachFormerRealCT``: each scan and its two in-plane mirror images as training cases (bone
    label), the scans in imagesTs; rebuilt when the scans differ from the cached ones. Returns its name."""
    import numpy as np
    import SimpleITK as sitk
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    from nnunet_teachformer.conversion.dataset_writer import atomic_dataset_folder

    raw = Path(os.environ["nnUNet_raw"])
    name = f"Dataset{DATASET_ID}_{DATASET_NAME}"
    record = [f"{p.resolve()}:{p.stat().st_size}" for p in scans]
    source = raw / name / "sources.json"
    if source.is_file() and json.loads(source.read_text()) == record:
        return name
    for variable in ("nnUNet_preprocessed", "nnUNet_results"):  # plans and models of other scans are stale
        shutil.rmtree(Path(os.environ[variable], name), ignore_errors=True)
    common.log(f"[real_ct] converting {len(scans)} scan(s) into {name} ...")
    with atomic_dataset_folder(raw, DATASET_ID, DATASET_NAME, overwrite=True) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (tmp / sub).mkdir()
        for i, path in enumerate(scans):
            image = sitk.ReadImage(str(path))
            array = sitk.GetArrayFromImage(image)
            sitk.WriteImage(image, str(tmp / "imagesTs" / f"CT_{i:03d}_0000.nii.gz"))
            for m, mirrored in enumerate((array, array[:, :, ::-1], array[:, ::-1, :])):
                case = f"CT_{i:03d}m{m}"
                for data, folder, suffix in ((mirrored, "imagesTr", "_0000"),
                                             ((mirrored > BONE_HU).astype(np.uint8), "labelsTr", "")):
                    out = sitk.GetImageFromArray(np.ascontiguousarray(data))
                    out.CopyInformation(image)
                    sitk.WriteImage(out, str(tmp / folder / f"{case}{suffix}.nii.gz"))
        generate_dataset_json(str(tmp), {0: "CT"}, {"background": 0, "bone": 1}, 3 * len(scans), ".nii.gz",
                              dataset_name=name, description="real CTs for benchmarks/real_ct_prediction.py")
        (tmp / "sources.json").write_text(json.dumps(record))
    return name


def model(dataset: str, trainer: str, folds, iterations: int) -> Path:
    """``folds`` of ``trainer`` in the results tree, written once: fold 0 trained for ``iterations``
    (``train_fold0``), the others untrained (nnU-Net's ``save_checkpoint``)."""
    import torch
    folder = Path(os.environ["nnUNet_results"], dataset, f"{trainer}__{PLANS}__{CONFIGURATION}")
    record = folder / "fold_0" / "benchmark_training.json"
    if not record.is_file() or json.loads(record.read_text()) != {"iterations": iterations}:
        train_fold0(common.make_trainer(trainer, dataset, PLANS, torch.device("cpu"), fold=0), iterations)
        record.write_text(json.dumps({"iterations": iterations}))
    for fold in folds:
        if not (folder / f"fold_{fold}" / "checkpoint_final.pth").is_file():
            common.write_untrained_checkpoint(common.make_trainer(trainer, dataset, PLANS, torch.device("cpu"),
                                                                  fold=fold))
    return folder


def train_fold0(trainer, iterations: int) -> None:
    """nnU-Net's training loop (``run_training``: augmentation, the trainer's loss and optimiser, the validation
    iterations, ``checkpoint_final.pth`` at the end) for ``iterations`` in epochs of up to 50, without nnU-Net's
    final validation, which predicts the validation cases (``levers`` does that, lever by lever)."""
    per_epoch = min(50, iterations)
    common.log(f"[real_ct] training {type(trainer).__name__} fold 0 for {iterations} iterations ...")
    trainer.num_iterations_per_epoch = per_epoch
    trainer.num_epochs = -(-iterations // per_epoch)
    trainer.num_val_iterations_per_epoch = 2
    with common.environment(nnUNet_n_proc_DA=os.environ.get("nnUNet_n_proc_DA", "2")), common.quiet():
        trainer.run_training()


# measurements ----------------------------------------------------------------------------------------------
def components(dataset: str, folder: Path, cases: list) -> dict:
    """CPU seconds of the stages nnU-Net runs in its workers, per scan, each run once here on the real scan:
    read, preprocess (crop, normalise, resample to the plans' spacing), resample back (logits to the original
    grid, argmax) and write. The logits are zeros: resampling costs the same whatever they are; the all-background
    segmentation is the cheapest to compress, so ``write`` is a lower bound."""
    import numpy as np
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(load_json(str(folder / "plans.json")))
    dataset_json = load_json(str(folder / "dataset.json"))
    configuration = plans.get_configuration(CONFIGURATION)
    labels = plans.get_label_manager(dataset_json)
    reader = plans.image_reader_writer_class()
    preprocessor = configuration.preprocessor_class(verbose=False)
    seconds = {"read": [], "preprocess": [], "resample_back": [], "write": []}
    with tempfile.TemporaryDirectory() as tmp:
        for files in cases:
            start = time.perf_counter()
            data, properties = reader.read_images(files)
            seconds["read"].append(time.perf_counter() - start)
            start = time.perf_counter()
            with common.quiet():
                data, _, properties = preprocessor.run_case_npy(data, None, properties, plans, configuration,
                                                                dataset_json)
            seconds["preprocess"].append(time.perf_counter() - start)
            logits = np.zeros((labels.num_segmentation_heads, *data.shape[1:]), dtype=np.float16)
            start = time.perf_counter()
            segmentation = convert_predicted_logits_to_segmentation_with_correct_shape(
                logits, plans, configuration, labels, properties)
            seconds["resample_back"].append(time.perf_counter() - start)
            start = time.perf_counter()
            reader.write_seg(segmentation, str(Path(tmp, "seg" + dataset_json["file_ending"])), properties)
            seconds["write"].append(time.perf_counter() - start)
    return {name: round(sum(values) / len(values), 3) for name, values in seconds.items()}


def executable(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def run(command: list, out: Path) -> dict:
    """``command`` in a fresh process (through ``MEASURE``); its measurement and, where it wrote them, its
    seconds per stage."""
    result_file = out / "measure.json"
    subprocess.run([sys.executable, "-c", MEASURE, str(result_file), *command], check=True)
    result = json.loads(result_file.read_text())
    log = Path(str(result_file) + ".log").read_text()
    if result["returncode"] != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {result['returncode']}):\n{log[-3000:]}")
    result["wall_s"] = result["ended_at"] - result["launched_at"]
    stages_file = out / "stages.json"
    if stages_file.is_file():
        stages = json.loads(stages_file.read_text())
        result["stages"] = dict(stages["seconds"], startup=stages["started_at"] - result["launched_at"],
                                exit=result["ended_at"] - stages["finished_at"])
        result["stages"]["unaccounted"] = result["wall_s"] - sum(result["stages"].values())
        result["tile_forwards"], result["builds"] = stages["tile_forwards"], stages["builds"]
        result["builds_from_disk"] = stages["builds_from_disk"]
        result["predictor_peak_resident_bytes"] = stages["peak_resident_bytes"]
    chosen = [line for line in log.splitlines() if line.startswith("CPU path: ")]
    result["cpu_path"] = chosen[0][len("CPU path: "):].split(" ")[0] if chosen else None
    return result


def segmentations(folder: Path, ending: str) -> dict:
    import SimpleITK as sitk
    return {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(folder.glob("*" + ending))}


def predict_command(images: Path, trainer: str, folds, tta: bool, *flags: str) -> list:
    """``teachformer predict --device cpu`` of ``folds`` on ``images`` with ``flags``."""
    return [executable("teachformer"), "predict", "-i", str(images), "-d", str(DATASET_ID), "-tr", trainer, "-p",
            PLANS, "-c", CONFIGURATION, "-f", *map(str, folds), "--device", "cpu", "--overwrite",
            *([] if tta else ["--disable-tta"]), *flags]


def run_labelled(label: str, command: list, out_root: Path, scans: int, gflops: float) -> dict:
    """``command`` run (``run``) writing into ``out_root / label / pred``, with its seconds per scan and GFLOP/s."""
    out = out_root / label
    shutil.rmtree(out, ignore_errors=True)
    (out / "pred").mkdir(parents=True)
    command = command + ["-o", str(out / "pred")]
    if Path(command[0]).name == "teachformer":
        command += ["--stage-times", str(out / "stages.json")]
    common.log(f"[real_ct] {out_root.name}: {label} ...")
    result = run(command, out)
    result["seconds_per_scan"] = result["wall_s"] / scans
    forwards = result.get("stages", {}).get("forwards")
    result["gflops_per_s"] = gflops * result["tile_forwards"] / forwards if forwards else None
    return result


def measure_setting(setting: str, trainer: str, images: Path, scans: int, gflops: float, root: Path) -> dict:
    folds, tta = SETTINGS[setting]
    # the first call of a command measures the CPU paths (auto) and builds the folds; the next ones reuse both
    shutil.rmtree(os.environ[MEMORY_ENV], ignore_errors=True)
    levers = predict_command(images, trainer, folds, tta, *SPEED_LEVERS, *(TTA_LEVERS if tta else []))
    commands = {"teachformer_levers_first_call": levers, "teachformer_levers": levers}
    if setting == "fold0":
        commands = {
            "teachformer_first_call": predict_command(images, trainer, folds, tta),
            "teachformer": predict_command(images, trainer, folds, tta),
            "teachformer_nnunet_path": predict_command(images, trainer, folds, tta, "--cpu-path", "nnunet"),
            "nnUNetv2_predict": [executable("nnUNetv2_predict"), "-i", str(images), "-d", str(DATASET_ID), "-tr",
                                 trainer, "-p", PLANS, "-c", CONFIGURATION, "-f", *map(str, folds), "-device", "cpu",
                                 "--disable_tta"],
            **commands}
    runs = {label: run_labelled(label, command, root / setting, scans, gflops) for label, command in commands.items()}
    if "nnUNetv2_predict" in runs:
        reference = segmentations(root / setting / "nnUNetv2_predict" / "pred", ".nii.gz")
        for label in runs:
            got = segmentations(root / setting / label / "pred", ".nii.gz")
            runs[label]["voxels_equal_to_nnUNetv2_predict"] = float(
                sum((got[n] == reference[n]).sum() for n in reference) / sum(a.size for a in reference.values()))
    return {"folds": list(folds), "tta": tta, "runs": runs,
            "levers": " ".join(SPEED_LEVERS + (TTA_LEVERS if tta else []))}


def dice(a, b) -> float:
    """Dice of the foreground (every label > 0) of two segmentations; 1 where both are empty."""
    a, b = a > 0, b > 0
    total = int(a.sum() + b.sum())
    return 2 * int((a & b).sum()) / total if total else 1.0


def measure_levers(dataset: str, trainer: str, gflops: float, root: Path) -> dict:
    """Each inexact lever against the exact prediction, on fold 0's validation cases: seconds, Dice of the two
    segmentations, voxels that differ, and each one's Dice against the labels (mean over the cases); without
    mirroring for ``LEVERS``, with it for ``MIRROR_LEVERS`` (against full mirroring, on the first case only: 8
    forwards per tile)."""
    raw = Path(os.environ["nnUNet_raw"], dataset)
    splits = json.loads(Path(os.environ["nnUNet_preprocessed"], dataset, "splits_final.json").read_text())
    cases = sorted(splits[0]["val"])
    labels = {f"{c}.nii.gz": segmentations(raw / "labelsTr", f"{c}.nii.gz")[f"{c}.nii.gz"] for c in cases}
    results = {}
    for tta, levers, group in ((False, LEVERS, cases), (True, MIRROR_LEVERS, cases[:1])):
        exact_label = "exact_tta" if tta else "exact"
        images = root / "levers" / f"images_{exact_label}"
        shutil.rmtree(images, ignore_errors=True)
        images.mkdir(parents=True)
        for case in group:
            shutil.copy(raw / "imagesTr" / f"{case}_0000.nii.gz", images)
        runs = {label: run_labelled(label, predict_command(images, trainer, (0,), tta, *flags), root / "levers",
                                    len(group), gflops) for label, flags in {exact_label: [], **levers}.items()}
        exact = segmentations(root / "levers" / exact_label / "pred", ".nii.gz")
        for label, result in runs.items():
            got = segmentations(root / "levers" / label / "pred", ".nii.gz")
            result.update(
                flags=" ".join(levers.get(label, [])), mirroring=tta, cases=group,
                dice_to_exact=sum(dice(got[n], exact[n]) for n in exact) / len(exact),
                voxels_differing=float(sum((got[n] != exact[n]).sum() for n in exact)
                                       / sum(a.size for a in exact.values())),
                dice_to_labels=sum(dice(got[n], labels[n]) for n in exact) / len(exact))
            result["dice_to_labels_change"] = result["dice_to_labels"] - runs[exact_label]["dice_to_labels"]
            result["speedup_vs_exact"] = runs[exact_label]["wall_s"] / result["wall_s"]
            result["forwards_speedup_vs_exact"] = (runs[exact_label]["stages"]["forwards"]
                                                   / result["stages"]["forwards"])
        results.update(runs)
    return {"cases": cases, "runs": results}


# report ----------------------------------------------------------------------------------------------------
ROWS = ["startup", "imports", "checks", "initialise", "path_choice", "build", "preprocessing_wait", "fold_switch",
        "aggregation", "forwards", "export_wait", "postprocessing", "exit", "unaccounted"]


def print_setting(setting: str, result: dict, scans: int, components_per_scan: dict) -> None:
    runs = result["runs"]
    labels = list(runs)
    rows = [["wall s per scan"] + [f"{runs[k]['seconds_per_scan']:.2f}" for k in labels]]
    rows += [[f"  {stage} (s per scan)"] + [f"{runs[k]['stages'][stage] / scans:.2f}" if "stages" in runs[k]
                                             else None for k in labels] for stage in ROWS]
    rows.append(["forwards GFLOP/s"] + [f"{runs[k]['gflops_per_s']:.1f}" if runs[k]["gflops_per_s"] else None
                                        for k in labels])
    rows.append(["peak resident MB"] + [f"{runs[k]['peak_resident_bytes'] / 2 ** 20:.0f}" for k in labels])
    rows.append(["CPU path"] + [runs[k]["cpu_path"] or "nnunet" for k in labels])
    if "nnUNetv2_predict" in runs:
        rows.append(["voxels = nnUNetv2_predict"] + [f"{runs[k]['voxels_equal_to_nnUNetv2_predict']:.6f}"
                                                     if k != "nnUNetv2_predict" else None for k in labels])
    folds, tta = result["folds"], "on" if result["tta"] else "off"
    print(f"\n### {setting}: folds {' '.join(map(str, folds))}, mirroring {tta}, {scans} scan(s); "
          f"teachformer_levers: {result['levers']}\n")
    print(common.table(["", *labels], rows))
    print("\nIn the workers, CPU s per scan measured alone: " +
          ", ".join(f"{k} {v:.2f}" for k, v in components_per_scan.items()))


def print_levers(result: dict) -> None:
    headers = ["run", "flags", "mirroring", "cases", "wall s per case", "forwards s", "x exact (wall)",
               "x exact (forwards)", "Dice to exact", "voxels differing", "Dice to labels", "change"]
    rows = [[label, r["flags"] or "(defaults)", "on" if r["mirroring"] else "off", len(r["cases"]),
             f"{r['seconds_per_scan']:.1f}", f"{r['stages']['forwards']:.1f}", f"{r['speedup_vs_exact']:.2f}",
             f"{r['forwards_speedup_vs_exact']:.2f}",
             f"{r['dice_to_exact']:.4f}", f"{100 * r['voxels_differing']:.3f} %", f"{r['dice_to_labels']:.4f}",
             f"{r['dice_to_labels_change']:+.4f}"] for label, r in result["runs"].items()]
    print(f"\n### levers: fold 0 (trained), its validation cases {', '.join(result['cases'])}\n")
    print(common.table(headers, rows))


def main(argv=None) -> int:
    args = parse_args(argv)
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from nnunet_teachformer.evaluation.complexity import model_folder_complexity
    from nnunet_teachformer.inference.stage_times import STAGES

    info = common.machine("cpu")
    trainer = "HDenseFormerLightTrainer" + ("_tiny" if args.tiny else "")
    with common.workspace(args.workdir) as root, common.environment(**{MEMORY_ENV: str(root / "path_memory")}):
        if args.images:
            scans = sorted(p for p in Path(args.images).iterdir() if p.name.lower().endswith(IMAGE_ENDINGS))
            if not scans:
                raise SystemExit(f"--images {args.images}: no {', '.join(IMAGE_ENDINGS)} file in it")
        else:
            scans = tiny_scans(root) if args.tiny else pyradiomics_scans(root)
        dataset = raw_dataset(scans)
        common.log("[real_ct] teachformer plan (TeachFormerPlans) ...")
        common.plan(DATASET_ID, [PLANS])
        folder = model(dataset, trainer, sorted({f for s in args.settings for f in SETTINGS[s][0]}),
                       args.train_iterations)
        images = Path(os.environ["nnUNet_raw"], dataset, "imagesTs")
        cases = [[str(p)] for p in sorted(images.glob("*_0000.nii.gz"))]
        with common.quiet():
            complexity = model_folder_complexity(folder, recursive_find_trainer_class_by_name(trainer),
                                                 CONFIGURATION)
        per_scan = components(dataset, folder, cases)
        payload = {"benchmark": "real_ct_prediction", "machine": info,
                   "settings": {"trainer": trainer, "plans": PLANS, "configuration": CONFIGURATION,
                                "patch_size": list(complexity.patch_size), "gflops_per_tile": complexity.gflops,
                                "scans": [str(p) for p in scans], "weights": f"fold 0 trained for "
                                f"{args.train_iterations} iterations, the others untrained (cost does not depend on "
                                f"the values)", "speed_levers": SPEED_LEVERS, "tta_levers": TTA_LEVERS, "stages": dict(STAGES, startup="process start to the predict "
                                "command", exit="predict command's end to process exit")},
                   "components_s_per_scan": per_scan, "settings_results": {}}
        for setting in args.settings:
            if setting == "levers":
                payload["levers"] = measure_levers(dataset, trainer, complexity.gflops, root / "real_ct_runs")
                print_levers(payload["levers"])
                continue
            result = measure_setting(setting, trainer, images, len(cases), complexity.gflops, root / "real_ct_runs")
            payload["settings_results"][setting] = result
            print_setting(setting, result, len(cases), per_scan)
    summary = []
    fold0 = payload["settings_results"].get("fold0", {}).get("runs")
    if fold0:
        nnunet = fold0["nnUNetv2_predict"]["wall_s"]
        payload.update(teachformer_s_per_scan=fold0["teachformer"]["seconds_per_scan"],
                       nnunet_s_per_scan=fold0["nnUNetv2_predict"]["seconds_per_scan"],
                       speedup_vs_nnunetv2_predict=nnunet / fold0["teachformer"]["wall_s"],
                       teachformer_levers_s_per_scan=fold0["teachformer_levers"]["seconds_per_scan"],
                       speedup_with_levers_vs_nnunetv2_predict=nnunet / fold0["teachformer_levers"]["wall_s"])
        payload["speedup_first_call_vs_nnunetv2_predict"] = nnunet / fold0["teachformer_first_call"]["wall_s"]
        outside = fold0["teachformer"]["wall_s"] - fold0["teachformer"]["stages"]["forwards"]
        summary.append(f"fold 0: teachformer {payload['teachformer_s_per_scan']:.1f} s per scan (path "
                       f"{fold0['teachformer']['cpu_path']}, {outside:.1f} s outside the forwards), nnUNetv2_predict "
                       f"{payload['nnunet_s_per_scan']:.1f}, speedup {payload['speedup_vs_nnunetv2_predict']:.2f} "
                       f"(first call {payload['speedup_first_call_vs_nnunetv2_predict']:.2f}); with levers "
                       f"{payload['teachformer_levers_s_per_scan']:.1f} s per scan, speedup "
                       f"{payload['speedup_with_levers_vs_nnunetv2_predict']:.2f}")
    folds5 = payload["settings_results"].get("folds5_tta", {}).get("runs")
    if folds5:
        payload["folds5_tta_with_levers_s_per_scan"] = folds5["teachformer_levers"]["seconds_per_scan"]
        summary.append(f"five folds with mirroring and levers {payload['folds5_tta_with_levers_s_per_scan']:.1f} s "
                       f"per scan")
    if "levers" in payload:
        summary.append("levers' Dice to exact " + ", ".join(
            f"{label} {r['dice_to_exact']:.4f}" for label, r in payload["levers"]["runs"].items()
            if not label.startswith("exact")))
    common.write_json(args.json, payload)
    print(f"\nSUMMARY real_ct_prediction ({len(cases)} scan(s)): " + "; ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
