"""Bad input across `convert`, `plan`, `train`, `predict`, `export` and `report`, as a user in a hurry gives it.

One table: each row prepares a bad input, runs the command and expects exit status 2 (non-zero for nnU-Net's own
commands), one paragraph containing the named file or case and the fix, no traceback, and the nnU-Net folders and
the row's own folder unchanged (paths, sizes, modification times: nothing the user had is touched, nothing
half-written is left). `teachformer` rows run in this process through ``cli.main``, the console script's entry
point (an exception escaping it fails the row, as a traceback would); rows naming another console script
(nnUNetv2_train) run it as a subprocess.

Predict and export use a model fabricated in nnU-Net's checkpoint format (HDenseFormerLightTrainer_tiny,
initialised, not trained) in a private nnUNet_results: every row is refused before its weights matter, and
``test_valid_input_predicts_every_case`` shows the checks let the phantom's own held-out cases through.
Destructive rows use copies of the phantom (ids 966-968, 975-989); dataset 990 is never changed.
"""
import contextlib
import gzip
import json
import os
import shutil
import subprocess
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import CONFIG, DATASET_ID, DATASET_NAME, TEACHFORMER_PLANS, console_script, fabricate_model, run_cli

TRAINER = "HDenseFormerLightTrainer_tiny"
PHANTOM_RAW_NAME = DATASET_NAME  # Dataset990_TeachFormerPhantom
STALE_ID = 980
INTERRUPTED_ID = 966  # a preprocessing stopped half-way


def _copy_phantom(dirs, dataset_id: int, preprocessed: bool = False) -> Path:
    """Dataset990's raw data (and, with ``preprocessed``, its preprocessed folder) as Dataset<id>_TeachFormerPhantom."""
    name = f"Dataset{dataset_id}_TeachFormerPhantom"
    raw = Path(dirs["nnUNet_raw"], name)
    shutil.copytree(Path(dirs["nnUNet_raw"], PHANTOM_RAW_NAME), raw)
    if preprocessed:
        target = Path(dirs["nnUNet_preprocessed"], name)
        shutil.copytree(Path(dirs["nnUNet_preprocessed"], PHANTOM_RAW_NAME), target)
        for plans_file in target.glob("*Plans.json"):
            plans = json.loads(plans_file.read_text())
            plans["dataset_name"] = name
            plans_file.write_text(json.dumps(plans))
    return raw


@pytest.fixture(scope="module")
def world(phantom, nnunet_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    results = root / "results"
    model = fabricate_model(results, TRAINER, Path(nnunet_dirs["nnUNet_preprocessed"], DATASET_NAME))
    corrupt = root / "corrupt_results"
    shutil.copytree(results, corrupt)
    checkpoint = corrupt / model.relative_to(results) / "fold_0" / "checkpoint_final.pth"
    checkpoint.write_bytes(checkpoint.read_bytes()[:4096])  # an interrupted copy

    # stale preprocessed data: dataset 990 planned, then its raw data replaced by another conversion
    _copy_phantom(nnunet_dirs, STALE_ID, preprocessed=True)
    run_cli([console_script("teachformer"), "convert", "synthetic", "--dataset-id", STALE_ID, "--cases", 5,
             "--size", 32, "--seed", 7, "--overwrite"])
    return SimpleNamespace(dirs=nnunet_dirs, root=root, results=results, model=model, corrupt=corrupt,
                           images=phantom / "imagesTs")


# setups: (world, row folder) -> substitutions for the command ------------------------------------------------

def _phantom_variant(dataset_id, damage):
    def setup(w, tmp):
        raw = _copy_phantom(w.dirs, dataset_id)
        damage(raw)
        return {}
    return setup


def _truncate(path: Path, keep: int = 200):
    path.write_bytes(path.read_bytes()[:keep])


def _relabel(path: Path, value: int):
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    array[array == 2] = value
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path), useCompression=True)


def _edit_header(path: Path, **geometry):
    """Rewrites the image at ``path`` with new geometry (origin=, spacing=, direction=), its voxels unchanged."""
    image = sitk.ReadImage(str(path))
    for key, value in geometry.items():
        getattr(image, "Set" + key.capitalize())(value)
    sitk.WriteImage(image, str(path), useCompression=True)


def _poison(path: Path):
    """NaN and infinite voxels in the image at ``path`` (SimpleITK and so nnU-Net read them as 0)."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    array[0, 0, :2] = np.nan
    array[0, 1, 0] = np.inf
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path), useCompression=True)


def _input(files: Dict[str, str]):
    """An input folder named ``in`` holding held-out phantom files under new names (name -> phantom file name)."""
    def setup(w, tmp):
        folder = tmp / "in"
        folder.mkdir()
        for name, source in files.items():
            shutil.copy(w.images / source, folder / name)
        return {}
    return setup


def _shifted_pet(w, tmp):
    _input({"P_0000.nii.gz": "PHANTOM_010_0000.nii.gz", "P_0001.nii.gz": "PHANTOM_010_0001.nii.gz"})(w, tmp)
    pet = sitk.ReadImage(str(tmp / "in" / "P_0001.nii.gz"))
    pet.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(pet, str(tmp / "in" / "P_0001.nii.gz"))
    return {}


def _truncated_input(w, tmp):
    _input({"P_0000.nii.gz": "PHANTOM_010_0000.nii.gz", "P_0001.nii.gz": "PHANTOM_010_0001.nii.gz"})(w, tmp)
    _truncate(tmp / "in" / "P_0001.nii.gz", keep=2000)
    return {}


def _interrupted_preprocessing(w, dataset_id):
    """A copy of the phantom whose preprocessing stopped before PHANTOM_003 was written."""
    _copy_phantom(w.dirs, dataset_id, preprocessed=True)
    base = Path(w.dirs["nnUNet_preprocessed"], f"Dataset{dataset_id}_TeachFormerPhantom")
    plans = json.loads((base / f"{TEACHFORMER_PLANS}.json").read_text())
    for path in (base / plans["configurations"][CONFIG]["data_identifier"]).glob("PHANTOM_003*"):
        path.unlink()
    return {}


def _raw_dataset_with_labels(w, tmp):
    """A raw dataset whose labelsTs holds the ground truth of the case the input folder holds."""
    _input(PHANTOM_INPUT)(w, tmp)
    labels = tmp / "Dataset981_X" / "labelsTs"
    labels.mkdir(parents=True)
    shutil.copy(Path(w.dirs["nnUNet_raw"], PHANTOM_RAW_NAME, "dataset.json"), labels.parent / "dataset.json")
    shutil.copy(Path(w.dirs["nnUNet_raw"], PHANTOM_RAW_NAME, "labelsTs", "PHANTOM_010.nii.gz"), labels / "P.nii.gz")
    return {}


def _earlier_prediction(w, tmp):
    _input(PHANTOM_INPUT)(w, tmp)
    (tmp / "out").mkdir()
    (tmp / "out" / "P.nii.gz").write_bytes(b"a segmentation the user keeps")
    return {}


def _user_output_folder(w, tmp):
    (tmp / "in").mkdir()
    (tmp / "out").mkdir()
    (tmp / "out" / "notes.txt").write_text("mine")
    return {}


def _file_at(name):
    def setup(w, tmp):
        _input({"P_0000.nii.gz": "PHANTOM_010_0000.nii.gz", "P_0001.nii.gz": "PHANTOM_010_0001.nii.gz"})(w, tmp)
        (tmp / name).write_text("not a folder")
        return {}
    return setup


def _folder(name):
    def setup(w, tmp):
        (tmp / name).mkdir()
        return {}
    return setup


def _hecktor_archive(train, bad=()):
    """A fabricated HECKTOR 2021 training folder at {tmp}/src/hecktor2021_train (see test_conversion_hecktor21)."""
    def setup(w, tmp):
        from test_conversion_hecktor21 import make_archive
        make_archive(tmp / "src", train=train, bad=bad)
        return {}
    return setup


def _zip_ready(source: str, card: Optional[str] = None):
    """A private nnUNet_results, ``{tmp}/results``, holding the world's model (``source``: "results" or "corrupt")
    with what nnU-Net's export packs besides the checkpoint; ``card``: a MODEL_CARD.md the user wrote there."""
    def setup(w, tmp):
        shutil.copytree(getattr(w, source), tmp / "results")
        model = tmp / "results" / w.model.relative_to(w.results)
        (model / "dataset_fingerprint.json").write_text("{}")
        (model / "fold_0" / "progress.png").write_bytes(b"")
        (model / "fold_0" / "validation").mkdir()
        (model / "fold_0" / "validation" / "summary.json").write_text(json.dumps(
            {"foreground_mean": {"Dice": 0.5}, "mean": {"1": {"Dice": 0.4}, "2": {"Dice": 0.6}},
             "metric_per_case": []}))
        if card is not None:
            (model / "MODEL_CARD.md").write_text(card)
        return {}
    return setup


def _hecktor_prediction_without_header(w, tmp):
    """Converted cases and their labels as predictions, one saved from its array alone (origin 0, the header lost)."""
    from test_conversion_hecktor21 import GOOD_TRAIN, convert, make_archive
    dataset = convert(make_archive(tmp / "src", train=GOOD_TRAIN[:2]), tmp / "raw")
    (tmp / "pred").mkdir()
    for case in GOOD_TRAIN[:2]:
        label = sitk.ReadImage(str(dataset / "labelsTr" / f"{case}.nii.gz"))
        if case == GOOD_TRAIN[0]:
            label = sitk.GetImageFromArray(sitk.GetArrayFromImage(label))
        sitk.WriteImage(label, str(tmp / "pred" / f"{case}.nii.gz"))
    return {}


def _hecktor_predictions(existing_output: Optional[str] = None):
    """Two converted cases' labels as predictions on their crop grids in {tmp}/pred (scorable), the converted dataset
    in {tmp}/raw; ``existing_output``: a file the user has at {tmp}/<existing_output>."""
    def setup(w, tmp):
        from test_conversion_hecktor21 import GOOD_TRAIN, convert, make_archive
        dataset = convert(make_archive(tmp / "src", train=GOOD_TRAIN[:2]), tmp / "raw")
        (tmp / "pred").mkdir()
        for case in GOOD_TRAIN[:2]:
            shutil.copy(dataset / "labelsTr" / f"{case}.nii.gz", tmp / "pred" / f"{case}.nii.gz")
        if existing_output:
            (tmp / existing_output).parent.mkdir(parents=True, exist_ok=True)
            (tmp / existing_output).write_bytes(b"a submission the user keeps")
        return {"dataset": dataset}
    return setup


def _user_file(name):
    def setup(w, tmp):
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text("mine")
        return {}
    return setup


def _picai_graded_labels(w, tmp):
    """Two PI-CAI cases whose labels hold ISUP grades (3) instead of 1, with fitting probabilities."""
    from test_evaluation_picai import LESION, SHAPE, _box, _write_label, _write_probabilities
    for i, case in enumerate(("10000_11000", "10001_11001")):
        lesion = _box((2 * i, 4, 4), LESION)
        _write_label(tmp / "labels", case, lesion.astype(np.uint8) * (1 if i == 0 else 3))
        _write_probabilities(tmp / "npz", case, np.where(lesion, 0.9, 0.01) + np.zeros(SHAPE))
    return {}


def _picai_archive(cases):
    def setup(w, tmp):
        from test_conversion_picai22 import make_archive
        make_archive(tmp / "src", cases)
        return {}
    return setup


@contextlib.contextmanager
def _read_only(paths: Sequence[Path]):
    """``paths`` and everything under them read-only while the command runs; yields what to run the command under.
    Permission bits do that for other users; root ignores them, so for root the command runs (as a subprocess) in
    a private mount namespace where each path is a read-only bind mount, as a read-only volume or NFS export is."""
    if not paths:
        yield []
        return
    if os.geteuid() != 0:
        modes = {}
        for path in paths:
            for folder, _, _ in os.walk(path):
                modes[folder] = os.stat(folder).st_mode
                os.chmod(folder, 0o555)
        try:
            yield []
        finally:
            for folder, mode in modes.items():
                os.chmod(folder, mode)
        return
    if not shutil.which("unshare") or subprocess.run(["unshare", "--mount", "true"]).returncode != 0:
        pytest.skip("running as root, whom permission bits do not stop, on a machine that allows no private "
                    "read-only mount (unshare --mount)")
    mount = ('while [ "$1" != -- ]; do mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" || exit 99; shift; '
             'done; shift; exec "$@"')
    yield ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "sh", *map(str, paths), "--"]


@dataclass
class Row:
    name: str
    args: Sequence
    expect: Sequence[str]
    setup: Optional[Callable] = None
    env: Dict[str, Optional[str]] = field(default_factory=dict)  # "{results}" etc. are substituted; None unsets
    read_only: Sequence[str] = ()  # folders ("{tmp}/results") that cannot be written while the command runs


PHANTOM_INPUT = {"P_0000.nii.gz": "PHANTOM_010_0000.nii.gz", "P_0001.nii.gz": "PHANTOM_010_0001.nii.gz"}
PREDICT = ["predict", "-d", DATASET_ID, "-f", 0, "-tr", TRAINER, "--device", "cpu", "--disable-tta"]
EXPORT = ["export", "-d", DATASET_ID, "-tr", TRAINER]
ZIP = [*EXPORT, "--no-timing"]
SLURM = ["train", "-d", DATASET_ID, "-f", 0, "--teachers", "unetr", "--preset", "tiny", "--submit", "slurm",
         "--write-only"]
PRIVATE = {"nnUNet_results": "{results}"}
CORRUPT = {"nnUNet_results": "{corrupt}"}

ROWS = [
    # convert
    Row("convert: dataset id taken", ["convert", "synthetic", "--dataset-id", DATASET_ID],
        ["Dataset990_TeachFormerPhantom already exists", "--overwrite", "another --dataset-id"]),
    Row("convert: too few cases", ["convert", "synthetic", "--dataset-id", 984, "--cases", 3],
        ["--cases 3", "at least 5"]),
    Row("convert: id above 999", ["convert", "synthetic", "--dataset-id", 1000], ["1000", "outside 1..999"]),
    Row("convert: hecktor21 source missing", ["convert", "hecktor21", "{tmp}/hecktor", "--dataset-id", 985],
        ["hecktor"]),
    Row("convert: picai22 folders missing", ["convert", "picai22", "{tmp}/images", "{tmp}/labels", "--dataset-id", 985],
        ["images"]),
    Row("convert hecktor21 --skip-bad: 4 training cases left",
        ["convert", "hecktor21", "{tmp}/src/hecktor2021_train", "--dataset-id", 979, "--crop", 24, "--skip-bad"],
        ["--skip-bad would leave 4 HECKTOR 2021 training case(s)", "fewer than the 5", "nothing was written",
         "Skipped 2 of 6", "CHMR002: missing PET", "CHUP002: PET has", "Fix the skipped cases"],
        _hecktor_archive(["CHGJ001", "CHGJ002", "CHMR001", "CHUM001"], bad=["CHMR002", "CHUP002"])),
    Row("convert picai22 --skip-bad: 4 cases left",
        ["convert", "picai22", "{tmp}/src/picai_public_images", "{tmp}/src/picai_labels", "--dataset-id", 979,
         "--skip-bad"],
        ["--skip-bad would leave 4 PI-CAI training case(s)", "fewer than the 5", "Skipped 1 of 5",
         "10010_1000010: missing ADC"],
        _picai_archive({"10000_1000000": (0, "pos", None), "10000_1000001": (0, "neg", None),
                        "10001_1000002": (1, "pos", None), "10002_1000003": (2, "neg", None),
                        "10010_1000010": (1, "pos", "no_adc")})),
    # evaluate
    Row("evaluate hecktor21: prediction off the crop grid",
        ["evaluate", "hecktor21", "--predictions", "{tmp}/pred", "--source", "{tmp}/src/hecktor2021_train"],
        ["1 of 2 predictions cannot be scored", "pred/CHGJ001.nii.gz: its grid is 24 x 24 x 24 voxels of 1 x 1 x 1 mm "
         "from origin (0, 0, 0) mm, not the converted 1 mm crop grid of this case, 24 x 24 x 24 voxels of 1 x 1 x 1 mm "
         "from origin (-4, -14, -11) mm", "copy the header of imagesTr/CHGJ001_0000.nii.gz"],
        _hecktor_prediction_without_header),
    Row("evaluate hecktor21 --resampled-out: files the user has",
        ["evaluate", "hecktor21", "--predictions", "{tmp}/pred", "--source", "{tmp}/src/hecktor2021_train",
         "--resampled-out", "{tmp}/back"],
        ["--resampled-out: 1 file(s) this command would write exist already", "back/CHGJ001.nii.gz",
         "nothing was changed", "--overwrite"], _hecktor_predictions("back/CHGJ001.nii.gz")),
    Row("evaluate hecktor21 --resampled-out: a raw dataset's labelsTr",
        ["evaluate", "hecktor21", "--predictions", "{tmp}/pred", "--source", "{tmp}/src/hecktor2021_train",
         "--resampled-out", "{dataset}/labelsTr"],
        ["--resampled-out", "labelsTr folder of the raw dataset", "predictions"], _hecktor_predictions()),
    Row("evaluate picai22: labels not 0/1", ["evaluate", "picai22", "--predictions", "{tmp}/npz", "--labels",
                                             "{tmp}/labels"],
        ["1 of 2 cases cannot be scored", "10001_11001: ", "labels/10001_11001.nii.gz holds the label values 0, 3",
         "not 0 and 1", "set every lesion voxel to 1"], _picai_graded_labels),
    # plan
    Row("plan: five-digit id", ["plan", "-d", 12345], ["-d 12345", "1..999", "three-digit"]),
    Row("plan: unknown id", ["plan", "-d", 974], ["Unknown dataset id 974", "teachformer convert synthetic"]),
    Row("plan: a word as id", ["plan", "-d", "nine"], ["-d 'nine'", "Dataset990_TeachFormerPhantom"]),
    Row("plan: no GPU memory", ["plan", "-d", DATASET_ID, "--gpu-memory", 0], ["--gpu-memory 0", "in GB"]),
    Row("plan: truncated raw image", ["plan", "-d", 982, "-np", 1],
        ["PHANTOM_003: damaged file", "PHANTOM_003_0001.nii.gz", "ends before", "run the same teachformer plan"],
        _phantom_variant(982, lambda raw: _truncate(raw / "imagesTr" / "PHANTOM_003_0001.nii.gz"))),
    Row("plan: raw image not gzip", ["plan", "-d", 988, "-np", 1],
        ["PHANTOM_001: damaged file", "PHANTOM_001_0000.nii.gz", "not valid gzip", "Fix or remove"],
        _phantom_variant(988, lambda raw: (raw / "imagesTr" / "PHANTOM_001_0000.nii.gz").write_text("CT"))),
    Row("plan: unreadable raw image", ["plan", "-d", 989, "-np", 1],
        ["PHANTOM_001: unreadable image", "PHANTOM_001_0000.nii.gz", "Fix or remove"],
        _phantom_variant(989, lambda raw: (raw / "imagesTr" / "PHANTOM_001_0000.nii.gz").write_bytes(
            gzip.compress(b"not an image")))),
    Row("plan: label value not in dataset.json", ["plan", "-d", 983, "-np", 1],
        ["PHANTOM_002: label has unknown values 7", "labelsTr/PHANTOM_002.nii.gz", "Fix or remove these cases"],
        _phantom_variant(983, lambda raw: _relabel(raw / "labelsTr" / "PHANTOM_002.nii.gz", 7))),
    Row("plan: label 30 mm off its image", ["plan", "-d", 975, "-np", 1],
        ["PHANTOM_005", "labelsTr/PHANTOM_005.nii.gz is not on the voxel grid of PHANTOM_005_0000.nii.gz",
         "origin (30, 0, 0) vs (0, 0, 0) mm", "resample it onto that grid", "Nothing was planned"],
        _phantom_variant(975, lambda raw: _edit_header(raw / "labelsTr" / "PHANTOM_005.nii.gz", origin=(30, 0, 0)))),
    Row("plan: label direction flipped", ["plan", "-d", 976, "-np", 1],
        ["PHANTOM_006", "labelsTr/PHANTOM_006.nii.gz is not on the voxel grid", "direction (-1, 0, 0,"],
        _phantom_variant(976, lambda raw: _edit_header(raw / "labelsTr" / "PHANTOM_006.nii.gz",
                                                       direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1)))),
    Row("plan: PET of another spacing (was 'failed: .')", ["plan", "-d", 977, "-np", 1],
        ["PHANTOM_007", "imagesTr/PHANTOM_007_0001.nii.gz is not on the voxel grid of PHANTOM_007_0000.nii.gz",
         "spacing (2, 2, 2) vs (1, 1, 1) mm"],
        _phantom_variant(977, lambda raw: _edit_header(raw / "imagesTr" / "PHANTOM_007_0001.nii.gz",
                                                       spacing=(2.0, 2.0, 2.0)))),
    Row("plan: NaN and inf in an image", ["plan", "-d", 978, "-np", 1],
        ["PHANTOM_008", "PHANTOM_008_0001.nii.gz has 3 NaN or infinite voxels", "replace them with a real value"],
        _phantom_variant(978, lambda raw: _poison(raw / "imagesTr" / "PHANTOM_008_0001.nii.gz"))),
    Row("plan: label file missing", ["plan", "-d", 986, "-np", 1], ["PHANTOM_004", "labelsTr", "Fix or remove"],
        _phantom_variant(986, lambda raw: (raw / "labelsTr" / "PHANTOM_004.nii.gz").unlink())),
    Row("plan: dataset.json not JSON", ["plan", "-d", 987], ["dataset.json is not valid JSON", "re-convert"],
        _phantom_variant(987, lambda raw: (raw / "dataset.json").write_text('{"labels": '))),
    # train
    Row("train: stale preprocessed data", ["train", "-d", STALE_ID, "-f", 0, "--preset", "tiny", "--dry-run"],
        ["is stale", "PHANTOM_000 changed", f"teachformer plan -d {STALE_ID} -c 3d_fullres"]),
    Row("nnUNetv2_train: configuration never preprocessed",
        ["nnUNetv2_train", DATASET_ID, "2d", 0, "-p", TEACHFORMER_PLANS, "-tr", "TeachFormerTrainer_tiny", "-device",
         "cpu"], ["has not been preprocessed for TeachFormerPlans 2d", "teachformer plan -d 990 -c 2d"], env=PRIVATE),
    Row("nnUNetv2_train: interrupted preprocessing",
        ["nnUNetv2_train", INTERRUPTED_ID, CONFIG, 0, "-p", TEACHFORMER_PLANS, "-tr", TRAINER, "-device", "cpu"],
        ["is incomplete", "PHANTOM_003", f"teachformer plan -d {INTERRUPTED_ID} -c 3d_fullres"],
        lambda w, tmp: _interrupted_preprocessing(w, INTERRUPTED_ID), PRIVATE),
    Row("nnUNetv2_train: a teacher checkpoint that does not exist",
        ["nnUNetv2_train", DATASET_ID, CONFIG, 0, "-p", TEACHFORMER_PLANS, "-tr", "TeachFormerTrainer_tiny", "-device",
         "cpu"], [f"{TRAINER}__{TEACHFORMER_PLANS}__{CONFIG}/fold_0/nope.pth does not exist",
                  "the folder holds checkpoint_final.pth", f"({TRAINER}:checkpoint_final.pth)"],
        None, {**PRIVATE, "TEACHFORMER_TEACHERS": f"{TRAINER}:nope.pth"}),
    Row("nnUNetv2_train: stale preprocessed data",
        ["nnUNetv2_train", STALE_ID, CONFIG, 0, "-p", TEACHFORMER_PLANS, "-tr", TRAINER, "-device", "cpu"],
        ["is stale", "PHANTOM_000 changed", f"teachformer plan -d {STALE_ID} -c 3d_fullres"], env=PRIVATE),
    Row("train: fold 7", ["train", "-d", DATASET_ID, "-f", 7, "--dry-run"], ["fold(s) [7] do not exist", "0..4"]),
    Row("train: plans never made", ["train", "-d", DATASET_ID, "-p", "NoSuchPlans", "--dry-run"],
        ["NoSuchPlans.json is missing", "nnUNetv2_plan_and_preprocess -d 990"]),
    Row("train --submit slurm: read-only nnUNet_results", [*SLURM],
        [f"{DATASET_NAME}/slurm cannot be made", "/results", "set nnUNet_results to a folder you can write"],
        _folder("results"), {"nnUNet_results": "{tmp}/results"}, read_only=["{tmp}/results"]),
    Row("train --submit slurm: --sbatch-args with a dependency",
        [*SLURM, "--sbatch-args", "--dependency=afterok:123 -d afterok:4"],
        ["--dependency=afterok:123: submit.sh gives each job its dependencies", "-d: submit.sh", "leave it out"],
        None, {"nnUNet_results": "{tmp}/results"}),
    Row("train --submit slurm: --sbatch-args set by the job scripts",
        [*SLURM, "--sbatch-args", "--kill-on-invalid-dep=yes --output=o.log --error=e.log -J mine --array=0-3"],
        ["--kill-on-invalid-dep=yes: submit.sh sets it", "--output=o.log: each job script writes its log",
         "--error=e.log", "-J: each job script names its job", "--array=0-3: each job trains one model"],
        None, {"nnUNet_results": "{tmp}/results"}),
    Row("train --submit slurm: --gres=gpu:2 with --gpus 0",
        [*SLURM, "--gpus", 0, "--device", "cpu", "--sbatch-args", "--gres=gpu:2"],
        ["--gres=gpu:2 asks for 2 GPU(s) per job, --gpus for 0", "--gpus 2 --device cuda"],
        None, {"nnUNet_results": "{tmp}/results"}),
    # predict
    Row("predict: empty input folder", [*PREDICT, "-i", "{tmp}/in", "-o", "{tmp}/out"],
        ["holds no case", "CASE_0000.nii.gz (CT)", "CASE_0001.nii.gz (PET)"], _folder("in"), PRIVATE),
    Row("predict: output folder with the user's files", [*PREDICT, "-i", "{tmp}/in", "-o", "{tmp}/out"],
        ["holds no case"], _user_output_folder, PRIVATE),
    Row("predict: --stage-times over the user's file", [*PREDICT, "-i", "{tmp}/in", "-o", "{tmp}/out",
                                                        "--stage-times", "{tmp}/times.json"],
        ["--stage-times", "times.json", "exist already", "--overwrite"], _user_file("times.json"), PRIVATE),
    Row("predict: one channel of two", [*PREDICT, "-i", "{tmp}/in", "-o", "{tmp}/out"],
        ["case P has channel(s) _0000", "needs 2", "Rename or remove"],
        _input({"P_0000.nii.gz": "PHANTOM_010_0000.nii.gz"}), PRIVATE),
    Row("predict: no _0000 suffix", [*PREDICT, "-i", "{tmp}/in", "-o", "{tmp}/out"],
        ["ct.nii.gz has no _XXXX channel suffix", "pet.nii.gz", "CASE_0000.nii.gz (CT)"],
        _input({"ct.nii.gz": "PHANTOM_010_0000.nii.gz", "pet.nii.gz": "PHANTOM_010_0001.nii.gz"}), PRIVATE),
    Row("predict: .nii instead of .nii.gz", [*PREDICT, "-i", "{tmp}/in", "-o", "{tmp}/out"],
        ["P_0000.nii is not a .nii.gz file", "CASE_0000.nii.gz"],
        _input({"P_0000.nii": "PHANTOM_010_0000.nii.gz", "P_0001.nii": "PHANTOM_010_0001.nii.gz"}), PRIVATE),
    Row("predict: truncated image", [*PREDICT, "-i", "{tmp}/in", "-o", "{tmp}/out"],
        ["damaged image", "P_0001.nii.gz", "ends before", "Rename or remove"], _truncated_input, PRIVATE),
    Row("predict: channels on different grids", [*PREDICT, "-i", "{tmp}/in", "-o", "{tmp}/out"],
        ["case P has channels on different voxel grids", "P_0001.nii.gz", "resample"], _shifted_pet, PRIVATE),
    Row("predict: --step-size 0", [*PREDICT, "-i", "{tmp}/in", "-o", "{tmp}/out", "--step-size", 0],
        ["--step-size 0.0", "above 0 and at most 1", "default 0.5"], _input(PHANTOM_INPUT), PRIVATE),
    Row("predict: --mirror-axes with --disable-tta", [*PREDICT, "-i", "{tmp}/in", "-o", "{tmp}/out", "--mirror-axes",
                                                      1, 2], ["--mirror-axes", "--disable-tta switches off"],
        _input(PHANTOM_INPUT), PRIVATE),
    Row("predict: --mirror-axes along an axis the model lacks",
        [*PREDICT[:-1], "-i", "{tmp}/in", "-o", "{tmp}/out", "--mirror-axes", 1, 3],
        ["--mirror-axes 1 3", "fold_0/checkpoint_final.pth allows mirroring along axes 0 1 2 only",
         "cannot be mirrored along 3"], _input(PHANTOM_INPUT), PRIVATE),
    Row("predict: input folder missing", [*PREDICT, "-i", "{tmp}/nothing", "-o", "{tmp}/out"],
        ["nothing does not exist", "CASE_0000.nii.gz"], None, PRIVATE),
    Row("predict: output is a file", [*PREDICT, "-i", "{tmp}/in", "-o", "{tmp}/out"], ["out is a file"],
        _file_at("out"), PRIVATE),
    Row("predict: output is the input", [*PREDICT, "-i", "{tmp}/in", "-o", "{tmp}/in"], ["is the input folder"],
        _input(PHANTOM_INPUT), PRIVATE),
    Row("predict: into a raw dataset's labelsTs", [*PREDICT, "-i", "{tmp}/in", "-o", "{tmp}/Dataset981_X/labelsTs"],
        ["labelsTs folder of the raw dataset", "Dataset981_X/predictions"],
        _raw_dataset_with_labels, PRIVATE),
    Row("predict: segmentation already in the output", [*PREDICT, "-i", "{tmp}/in", "-o", "{tmp}/out"],
        ["already holds 1 file(s)", "P.nii.gz", "--overwrite"], _earlier_prediction, PRIVATE),
    Row("predict: corrupt checkpoint", [*PREDICT, "-i", "{tmp}/in", "-o", "{tmp}/out"],
        ["cannot load the checkpoint", "fold_0/checkpoint_final.pth",
         f"nnUNetv2_train 990 3d_fullres 0 -p TeachFormerPlans -tr {TRAINER}"],
        _input(PHANTOM_INPUT), CORRUPT),
    Row("predict: fold 7", [*PREDICT[:4], 7, *PREDICT[5:], "-i", "{tmp}/in", "-o", "{tmp}/out"],
        ["fold(s) [7] do not exist", "0..4"], _input(PHANTOM_INPUT), PRIVATE),
    Row("predict: untrained fold", [*PREDICT[:4], 1, *PREDICT[5:], "-i", "{tmp}/in", "-o", "{tmp}/out"],
        ["fold_1/checkpoint_final.pth", "Trained folds of this model: 0",
         f"nnUNetv2_train 990 3d_fullres 1 -p TeachFormerPlans -tr {TRAINER}"],
        _input(PHANTOM_INPUT), PRIVATE),
    Row("predict: nnUNet_results unset", [*PREDICT, "-i", "{tmp}/in", "-o", "{tmp}/out"],
        ["nnUNet_results is not set", "export nnUNet_results="], _input(PHANTOM_INPUT), {"nnUNet_results": None}),
    Row("predict: default --device cuda without a GPU",
        ["predict", "-d", DATASET_ID, "-f", 0, "-tr", TRAINER, "-i", "{tmp}/in", "-o", "{tmp}/out"],
        ["--device cuda", "--device cpu"], _input(PHANTOM_INPUT), PRIVATE),
    # export
    Row("export: fold 7", [*EXPORT, "-f", 7, "-o", "{tmp}/s.onnx"],
        ["fold(s) [7] do not exist", "Trained folds of", ": 0."], None, PRIVATE),
    Row("export: fold not a number", [*EXPORT, "-f", "zero", "-o", "{tmp}/s.onnx"],
        ["-f zero", "fold number (0-4) or all"],
        None, PRIVATE),
    Row("export: corrupt checkpoint", [*EXPORT, "-f", 0, "-o", "{tmp}/s.onnx"],
        ["cannot load the checkpoint", "fold_0/checkpoint_final.pth", "teachformer train -d 990 -f 0"], None,
        CORRUPT),
    Row("export: output is a folder", [*EXPORT, "-f", 0, "-o", "{tmp}/models"], ["is a folder", "student.onnx"],
        _folder("models"), PRIVATE),
    Row("export --zip: a MODEL_CARD.md the user wrote", [*ZIP, "--zip", "{tmp}/m.zip"],
        [f"{TRAINER}__TeachFormerPlans__3d_fullres/MODEL_CARD.md", "not written by teachformer export",
         "Move your file(s) out of that folder", "--overwrite"],
        _zip_ready("results", card="# Notes on this model\nmine\n"), {"nnUNet_results": "{tmp}/results"}),
    Row("export --zip: truncated checkpoint", [*ZIP, "--zip", "{tmp}/m.zip"],
        ["cannot load the checkpoint", "fold_0/checkpoint_final.pth",
         f"retrain fold 0 (nnUNetv2_train 990 3d_fullres 0 -p TeachFormerPlans -tr {TRAINER})", "the other folds with -f"],
        _zip_ready("corrupt"), {"nnUNet_results": "{tmp}/results"}),
    Row("export --zip: read-only nnUNet_results", [*ZIP, "--zip", "{tmp}/m.zip"],
        [f"{TRAINER}__TeachFormerPlans__3d_fullres", "writes its model card into the model folder",
         "nnUNet_results set to that folder"],
        _zip_ready("results"), {"nnUNet_results": "{tmp}/results"}, read_only=["{tmp}/results"]),
    Row("export -o: an ONNX file the user has", [*EXPORT, "-f", 0, "-o", "{tmp}/s.onnx"],
        ["-o: 1 file(s) this command would write exist already", "s.onnx", "nothing was changed", "--overwrite"],
        _user_file("s.onnx"), PRIVATE),
    Row("export -o: the input contract's .json is the user's", [*EXPORT, "-f", 0, "-o", "{tmp}/s.onnx"],
        ["s.json", "--overwrite"], _user_file("s.json"), PRIVATE),
    Row("export: model never trained", ["export", "-d", DATASET_ID, "-f", 0, "-o", "{tmp}/s.onnx"],
        ["TeachFormerTrainer__TeachFormerPlans__3d_fullres", "teachformer train -d 990 -f 0"], None, PRIVATE),
    # report
    Row("report: unknown id", ["report", "-d", 974], ["Unknown dataset id 974"]),
    Row("report: read-only nnUNet_results", ["report", "-d", DATASET_ID, "--no-timing"],
        [f"{DATASET_NAME}/teachformer_report cannot be made", "/results", "-o"], _folder("results"),
        {"nnUNet_results": "{tmp}/results"}, read_only=["{tmp}/results"]),
    Row("report -o: a folder of the user's files", ["report", "-d", DATASET_ID, "-o", "{tmp}/mine", "--no-timing"],
        ["-o", "mine holds files that are not an earlier teachformer report (notes.txt)", "nothing was changed",
         "--overwrite"], _user_file("mine/notes.txt")),
    Row("report: nothing trained", ["report", "-d", DATASET_ID, "-o", "{tmp}/report"], ["teachformer train"], None,
        {"nnUNet_results": "{tmp}/results"}),
]


def _snapshot(*roots: Path) -> dict:
    """{path: (size, mtime_ns)} of every file and (None, None) of every folder under ``roots``."""
    state = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            state[dirpath] = (None, None)
            for name in filenames:
                stat = os.stat(os.path.join(dirpath, name))
                state[os.path.join(dirpath, name)] = (stat.st_size, stat.st_mtime_ns)
    return state


def _run(args, capfd, prefix=()):
    """Exit status and output of `teachformer args` (in this process) or of another console script (or of either
    run under ``prefix``, as a subprocess)."""
    if args[0] != "teachformer" or prefix:
        result = run_cli([*prefix, console_script(args[0]), *args[1:]], env=os.environ.copy(), check=False)
        return result.returncode, result.stdout + result.stderr
    from nnunet_teachformer.cli import main
    capfd.readouterr()
    try:
        code = main(args[1:])
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capfd.readouterr()
    return code, out + err


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_bad_input_is_refused_in_one_paragraph(row, world, tmp_path, capfd, monkeypatch):
    if "cuda" in row.name and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    subs = {"tmp": tmp_path, "results": world.results, "corrupt": world.corrupt}
    if row.setup:
        subs.update(row.setup(world, tmp_path) or {})
    for key, value in row.env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value.format(**subs))
    args = [str(a).format(**subs) for a in row.args]
    args = args if args[0].startswith("nnUNetv2") else ["teachformer", *args]
    watched = [Path(p) for p in world.dirs.values()] + [world.root, tmp_path]
    before = _snapshot(*watched)

    with _read_only([Path(p.format(**subs)) for p in row.read_only]) as prefix:
        code, output = _run(args, capfd, prefix)

    assert code not in (0, None), f"{row.name}: exit status {code}\n{output[-3000:]}"
    if args[0] == "teachformer":
        assert code == 2, f"{row.name}: exit status {code}\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    marker = "teachformer: error: " if args[0] == "teachformer" else "nnunet-teachformer error: "
    assert marker in output, f"{row.name}: no error message:\n{output[-3000:]}"
    paragraph = output[output.rfind(marker):].strip()
    assert paragraph and "\n\n" not in paragraph, f"{row.name}: not one paragraph:\n{output[-3000:]}"
    for fragment in row.expect:
        assert fragment in paragraph, f"{row.name}: {fragment!r} not in:\n{paragraph}"
    after = _snapshot(*watched)
    changed = sorted(set(before) ^ set(after)) + sorted(p for p in before if p in after and before[p] != after[p])
    assert not changed, f"{row.name}: the command changed {changed[:10]}"


def test_valid_input_predicts_every_case_and_keeps_the_users_files(world, tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(world.results))
    _input(PHANTOM_INPUT)(world, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    run_cli([console_script("teachformer"), *map(str, PREDICT), "-i", tmp_path / "in", "-o", out])
    assert (out / "P.nii.gz").is_file() and (out / "notes.txt").read_text() == "mine"
    (out / "P.nii.gz").write_bytes(b"stale")  # the user asks explicitly to replace an earlier segmentation
    run_cli([console_script("teachformer"), *map(str, PREDICT), "-i", tmp_path / "in", "-o", out, "--overwrite"])
    assert (out / "notes.txt").read_text() == "mine"
    prediction = sitk.ReadImage(str(out / "P.nii.gz"))
    assert prediction.GetSize() == sitk.ReadImage(str(tmp_path / "in" / "P_0000.nii.gz")).GetSize()


def test_the_command_that_completes_an_interrupted_preprocessing_works(world):
    from nnunet_teachformer.planners.plan import check_preprocessed
    _interrupted_preprocessing(world, 967)
    with pytest.raises(Exception, match="teachformer plan -d 967 -c 3d_fullres"):
        check_preprocessed(967, TEACHFORMER_PLANS, CONFIG)
    run_cli([console_script("teachformer"), "plan", "-d", 967, "-c", CONFIG, "-np", 1])
    check_preprocessed(967, TEACHFORMER_PLANS, CONFIG)  # complete now: a trainer starts


def test_plan_redoes_what_a_reconversion_changed(world, capfd):
    """The issue's sequence (through cli.main): plan, convert again with another seed and --overwrite, plan again."""
    from nnunet_teachformer.cli import main

    def teachformer(*args):
        capfd.readouterr()
        assert main([str(a) for a in args]) == 0
        return capfd.readouterr().out

    dataset_id, name = 981, "Dataset981_TeachFormerPhantom"
    _copy_phantom(world.dirs, dataset_id, preprocessed=True)
    converted = teachformer("convert", "synthetic", "--dataset-id", dataset_id, "--cases", 5, "--size", 32,
                            "--seed", 7, "--overwrite")
    assert f"Replaced {world.dirs['nnUNet_raw'] / name}" in converted
    assert "may be stale" in converted and f"teachformer plan -d {dataset_id}" in converted

    planned = teachformer("plan", "-d", dataset_id, "-np", 1)
    assert "raw data       changed since the last planning: PHANTOM_000 changed" in planned
    assert "preprocessed now" in planned
    assert "warning: nnUNetPlans_3d_fullres was made from the old raw data" in planned
    base = Path(world.dirs["nnUNet_preprocessed"], name)
    for case in ("PHANTOM_000", "PHANTOM_004"):
        raw_label = world.dirs["nnUNet_raw"] / name / "labelsTr" / f"{case}.nii.gz"
        raw = sitk.GetArrayFromImage(sitk.ReadImage(str(raw_label)))
        kept = sitk.GetArrayFromImage(sitk.ReadImage(str(base / "gt_segmentations" / f"{case}.nii.gz")))
        assert np.array_equal(raw, kept)
    assert "PHANTOM_009" not in json.loads((base / "raw_signature.json").read_text())["artifacts"][
        "TeachFormerPlans_3d_fullres"]["cases"]
    again = teachformer("plan", "-d", dataset_id, "-np", 1)
    assert "already preprocessed" in again and "raw data" not in again
    teachformer("train", "-d", dataset_id, "-f", 0, "--preset", "tiny", "--dry-run")


def _interrupted_convert(raw: Path, *extra) -> None:
    """`teachformer convert synthetic` through cli.main, stopped by Ctrl-C (KeyboardInterrupt) wherever the
    caller's monkeypatch raises it; cli.main may turn it into its own message and status, or let it escape."""
    from nnunet_teachformer.cli import main
    try:
        code = main(["convert", "synthetic", "--dataset-id", "970", "--cases", "5", "--size", "16", "--out", str(raw),
                     *extra])
    except KeyboardInterrupt:
        return
    assert code not in (0, None), "the conversion was not interrupted"


@pytest.mark.parametrize("replacing", [False, True], ids=["new dataset", "--overwrite"])
def test_ctrl_c_while_converting_leaves_the_raw_folder_as_it_was(replacing, tmp_path, monkeypatch):
    from nnunet_teachformer.cli import main
    from nnunet_teachformer.conversion import synthetic

    raw = tmp_path / "raw"
    raw.mkdir()
    if replacing:
        assert main(["convert", "synthetic", "--dataset-id", "970", "--cases", "5", "--size", "16", "--out",
                     str(raw)]) == 0
    before = _snapshot(raw)
    real, calls = synthetic.write_case, []

    def ctrl_c_at_the_third_case(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(synthetic, "write_case", ctrl_c_at_the_third_case)
    _interrupted_convert(raw, "--seed", "1", *(["--overwrite"] if replacing else []))
    assert len(calls) == 3 and _snapshot(raw) == before


def test_ctrl_c_while_swapping_in_the_new_dataset_puts_the_old_one_back(tmp_path, monkeypatch):
    """The moment between moving the old dataset aside and renaming the new one into its place."""
    from nnunet_teachformer.cli import main

    raw = tmp_path / "raw"
    assert main(["convert", "synthetic", "--dataset-id", "970", "--cases", "5", "--size", "16", "--out",
                 str(raw)]) == 0
    before = _snapshot(raw)
    real_rename, renamed = Path.rename, []

    def rename(self, target):
        renamed.append(self.name)
        if ".partial-" in self.name:
            raise KeyboardInterrupt
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    _interrupted_convert(raw, "--seed", "1", "--overwrite")
    assert renamed[0] == "Dataset970_TeachFormerPhantom" and ".partial-" in renamed[1]  # interrupted mid-swap
    assert _snapshot(raw) == before


def test_ctrl_c_leaves_no_raw_folder_it_created(tmp_path, monkeypatch):
    from nnunet_teachformer.conversion import synthetic

    def ctrl_c(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "write_case", ctrl_c)
    _interrupted_convert(tmp_path / "new_raw")
    assert os.listdir(tmp_path) == []


def test_ctrl_c_while_planning_prints_one_line_and_trainers_say_what_completes_it(world, monkeypatch, capfd):
    from nnunet_teachformer.cli import main
    from nnunet_teachformer.planners import plan

    _copy_phantom(world.dirs, 968)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(plan, "preprocess_dataset", ctrl_c)
    capfd.readouterr()
    assert main(["plan", "-d", "968", "-c", CONFIG, "-np", "1"]) == 130
    err = capfd.readouterr().err
    last = err.strip().splitlines()[-1]  # nnU-Net's progress bars come before it on stderr
    assert last.startswith("teachformer plan: interrupted") and "Traceback" not in err
    with pytest.raises(Exception, match="teachformer plan -d 968 -c 3d_fullres"):
        plan.check_preprocessed(968, TEACHFORMER_PLANS, CONFIG)  # what every trainer of the package checks first


def test_ctrl_c_in_the_terminal_while_nnunets_workers_preprocess(world):
    """A real Ctrl-C: SIGINT to the whole process group of `teachformer plan` while nnU-Net's worker processes
    preprocess. One line, status 130, no process of the group left, and the suggested command completes the data."""
    import signal
    import time

    from nnunet_teachformer.planners import plan

    base = Path(world.dirs["nnUNet_preprocessed"], "Dataset969_TeachFormerPhantom")
    _copy_phantom(world.dirs, 969, preprocessed=True)
    shutil.rmtree(base / json.loads((base / f"{TEACHFORMER_PLANS}.json").read_text())["configurations"][CONFIG][
        "data_identifier"])  # so that `plan` preprocesses again
    log = base.parent / "plan_969.log"
    with open(log, "w") as out:
        # started as a shell starts it, with Ctrl-C's default action whatever this test process inherited
        process = subprocess.Popen([console_script("teachformer"), "plan", "-d", "969", "-c", CONFIG, "-np", "2"],
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 600
        while "Preprocessing cases" not in log.read_text() and process.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # the workers are importing or preprocessing
        os.killpg(process.pid, signal.SIGINT)
        code = process.wait(timeout=120)
    output = log.read_text()
    log.unlink()
    assert code == 130, output[-3000:]
    assert "Traceback" not in output and output.strip().splitlines()[-1].startswith("teachformer plan: interrupted")
    for _ in range(100):  # multiprocessing's resource tracker ends on its own once its pipe closes
        left = subprocess.run(["ps", "-o", "pid=,args=", "-g", str(process.pid)], capture_output=True, text=True)
        if not left.stdout.strip():
            break
        time.sleep(0.3)
    assert not left.stdout.strip(), f"processes left behind: {left.stdout}"
    with pytest.raises(Exception, match="teachformer plan -d 969 -c 3d_fullres"):
        plan.check_preprocessed(969, TEACHFORMER_PLANS, CONFIG)
    run_cli([console_script("teachformer"), "plan", "-d", 969, "-c", CONFIG])  # the suggested command
    plan.check_preprocessed(969, TEACHFORMER_PLANS, CONFIG)


def test_export_zip_replaces_only_its_own_model_card(world, tmp_path, monkeypatch, capfd):
    """The card export wrote is replaced by the next export; once edited it is kept, until --overwrite."""
    from nnunet_teachformer.cli import main

    _zip_ready("results")(world, tmp_path)
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    card = tmp_path / "results" / world.model.relative_to(world.results) / "MODEL_CARD.md"
    export = [*map(str, ZIP), "--zip", str(tmp_path / "m.zip")]
    assert main(export) == 0 and zipfile.ZipFile(tmp_path / "m.zip").testzip() is None
    assert main(export) == 0, capfd.readouterr().err  # its own card, unchanged: replaced without a word
    card.write_text(card.read_text() + "\nReviewed by the radiology team.\n")
    capfd.readouterr()
    assert main(export) == 2 and "not written by teachformer export (or edited since)" in capfd.readouterr().err
    assert "Reviewed by the radiology team." in card.read_text()
    assert main([*export, "--overwrite"]) == 0
    assert "Reviewed" not in card.read_text() and card.read_text().startswith("# Model card")


def test_only_the_workers_ignore_ctrl_c_not_the_process_that_starts_them():
    """A first import of the start-up module inside the block (as a test process may do) must not make this
    process, and every process it starts later, deaf to Ctrl-C."""
    import importlib
    import signal
    import sys

    from nnunet_teachformer import nnunet_ext

    child = [sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)"]
    # as a terminal starts a command (a pytest-xdist worker may run with SIGINT ignored already)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with nnunet_ext.workers_ignore_ctrl_c():
            importlib.reload(nnunet_ext)
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
            assert subprocess.run(child, capture_output=True, text=True).stdout.strip() == "True"  # a worker
        assert subprocess.run(child, capture_output=True, text=True).stdout.strip() == "False"
    finally:
        signal.signal(signal.SIGINT, inherited)
