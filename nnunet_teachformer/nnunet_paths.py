"""Thin helpers over nnU-Net's own naming functions, so that no module rebuilds ``Dataset<ID>_<Name>``
parsing, a ``<Trainer>__<Plans>__<Configuration>/fold_<f>`` path or an ``nnUNetv2_train`` line by hand; and
the one place that resolves a ``-d`` argument to the dataset nnU-Net knows (``resolve_dataset``) and checks
folds against its split (``check_folds``)."""
import argparse
import os
import re
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, subdirs
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.utilities.dataset_name_id_conversion import convert_dataset_name_to_id, find_candidate_datasets
from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier, get_output_folder

from nnunet_teachformer.errors import TeachFormerError

Fold = Union[int, str]  # 0, 1, ... or "all" (nnU-Net's model trained on every case)


def parse_fold(value: str) -> Fold:
    """A fold as nnU-Net's commands take it: a number, or ``all``."""
    if value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid fold {value!r}: a fold number (0-4) or all") from None


def dataset_id(dataset_name: str) -> int:
    return convert_dataset_name_to_id(dataset_name)


def model_identifier(trainer: str, plans: str, configuration: str) -> str:
    """``<Trainer>__<Plans>__<Configuration>``, the name of a model folder."""
    return convert_trainer_plans_config_to_identifier(trainer, plans, configuration)


def results_folder(dataset_name: str) -> Path:
    """``$nnUNet_results/<Dataset>``, where the dataset's models live."""
    from nnunetv2.paths import nnUNet_results
    if not nnUNet_results.is_set():
        raise TeachFormerError("nnUNet_results is not set: it must point at the folder that holds the trained models, "
                               "e.g. export nnUNet_results=/data/nnUNet_results.")
    return Path(nnUNet_results, dataset_name)


def model_folder(dataset_name: str, trainer: str, plans: str, configuration: str,
                 fold: Optional[Union[int, str]] = None) -> Path:
    """``$nnUNet_results/<Dataset>/<Trainer>__<Plans>__<Configuration>[/fold_<f>]``."""
    results_folder(dataset_name)  # says what to do when nnUNet_results is not set
    return Path(get_output_folder(dataset_name, trainer, plans, configuration, fold))


def train_command(dataset: Union[int, str], configuration: str, fold: Union[int, str], plans: str, trainer: str,
                  *extra: str) -> List[str]:
    """The ``nnUNetv2_train`` command line, the dataset given by id or name."""
    ds = dataset if isinstance(dataset, int) or str(dataset).isdigit() else dataset_id(dataset)
    return ["nnUNetv2_train", str(ds), configuration, str(fold), "-p", plans, "-tr", trainer, *extra]


def dataset_id_of(dataset: Union[int, str]) -> int:
    """990, "990" or "Dataset990_Name" -> 990."""
    if isinstance(dataset, int):
        return dataset
    if str(dataset).strip().isdigit() and not 1 <= int(dataset) <= 999:
        raise TeachFormerError(f"-d {dataset}: dataset ids are 1..999, because nnU-Net names each dataset "
                               f"DatasetXXX_Name with a three-digit id. Give the id the dataset was converted with "
                               f"(`ls $nnUNet_raw` lists them).")
    match = re.fullmatch(r"\s*(?:Dataset)?(\d{1,3})(?:_\S*)?\s*", str(dataset))
    if not match:
        raise TeachFormerError(f"-d {dataset!r}: give a dataset id (e.g. 990) or a dataset folder name "
                               f"(e.g. Dataset990_TeachFormerPhantom).")
    return int(match.group(1))


def _require_folders(*names: str) -> None:
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise TeachFormerError(f"{', '.join(missing)} not set: nnU-Net needs its folders, e.g. "
                               + " ".join(f"export {n}=/data/{n}" for n in missing) + ".")


def resolve_dataset(dataset: Union[int, str], need_raw: bool = True) -> tuple:
    """(id, name) of a dataset nnU-Net knows; with ``need_raw``, its raw folder must hold dataset.json."""
    _require_folders(*(("nnUNet_raw",) if need_raw else ()), "nnUNet_preprocessed")
    dataset_id = dataset_id_of(dataset)
    candidates = list(find_candidate_datasets(dataset_id))
    if not candidates:
        known = sorted(subdirs(str(nnUNet_raw), prefix="Dataset", join=False)) \
            if nnUNet_raw.is_set() and isdir(str(nnUNet_raw)) else []
        raise TeachFormerError(
            f"Unknown dataset id {dataset_id}: no Dataset{dataset_id:03d}_* in nnUNet_raw ({nnUNet_raw.get()}) "
            f"or nnUNet_preprocessed ({nnUNet_preprocessed.get()}). Convert it first (e.g. `teachformer convert "
            f"synthetic --dataset-id {dataset_id}`) or check the id and nnUNet_raw; datasets in nnUNet_raw: "
            f"{', '.join(known) or 'none'}.")
    if len(candidates) > 1:
        raise TeachFormerError(f"Dataset id {dataset_id} is ambiguous: {', '.join(candidates)} (across nnUNet_raw, "
                               f"nnUNet_preprocessed and nnUNet_results). Rename or remove all but one.")
    name = str(candidates[0])
    if need_raw and not isfile(join(nnUNet_raw, name, "dataset.json")):
        raise TeachFormerError(
            f"{name} has no raw data: {join(nnUNet_raw.get(), name, 'dataset.json')} is missing. Planning and "
            f"preprocessing read the raw images; put the raw dataset there (or point nnUNet_raw at it).")
    return dataset_id, name


def sort_folds(folds: Iterable[Fold]) -> List[Fold]:
    """Folds without repeats, the numbered ones in order, then ``all`` (nnU-Net's model trained on every case)."""
    return sorted(set(folds), key=lambda f: (f == "all", f if f != "all" else 0))


def check_folds(dataset_name: str, folds: Sequence[Fold]) -> None:
    from batchgenerators.utilities.file_and_folder_operations import load_json
    splits_file = Path(os.environ.get("nnUNet_preprocessed", ""), dataset_name, "splits_final.json")
    n_folds = len(load_json(str(splits_file))) if splits_file.is_file() else 5
    bad = [f for f in folds if f != "all" and not 0 <= f < n_folds]
    if bad:
        where = splits_file if splits_file.is_file() else "nnU-Net's default five-fold split"
        raise TeachFormerError(f"fold(s) {bad} do not exist: {where} has folds 0..{n_folds - 1} (and all, which "
                               f"trains on every case).")


def trained_folds(model: Path, checkpoint: str = "checkpoint_final.pth") -> List[str]:
    """Folds of ``model`` (a trainer__plans__configuration folder) that have ``checkpoint``."""
    return sorted(p.parent.name[len("fold_"):] for p in model.glob(f"fold_*/{checkpoint}"))


def check_writable(folder: Union[str, os.PathLike], fix: str) -> None:
    """TeachFormerError naming ``folder`` and ``fix`` when files cannot be made in it (or, where it does not exist
    yet, in the folder it would be made in): a read-only mount, missing permissions, a file in the way. Commands
    call it before they write anything, so that a refusal leaves nothing half-written."""
    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    where = f"{folder}" if existing == folder else f"{folder} cannot be made: {existing}"
    if not existing.is_dir():
        raise TeachFormerError(f"{where} is a file, not a folder. {fix}")
    if not os.access(existing, os.W_OK | os.X_OK):
        why = ("is on a read-only file system" if os.statvfs(existing).f_flag & os.ST_RDONLY
               else "is not writable for you (its permissions)")
        raise TeachFormerError(f"{where} {why}. {fix}")


RAW_DATA_FOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")  # a raw dataset's own files


def check_not_raw_data(folder: Union[str, os.PathLike], flag: str) -> None:
    """TeachFormerError when ``folder`` is one of a raw dataset's image or label folders: an output there would
    replace or mix with the dataset's own files, whatever ``--overwrite`` says."""
    folder = Path(folder).absolute()
    if folder.name in RAW_DATA_FOLDERS and (folder.parent / "dataset.json").is_file():
        raise TeachFormerError(f"{flag} {folder} is the {folder.name} folder of the raw dataset {folder.parent}: "
                               f"the output would overwrite or mix with the dataset's own images and labels. Give a "
                               f"folder of its own, e.g. {flag} {folder.parent / 'predictions'}.")


def refuse_replacing(paths: Iterable[Union[str, os.PathLike]], overwrite: bool, flag: str) -> None:
    """TeachFormerError listing the ``paths`` that exist already, unless ``overwrite``: a command replaces only
    files it made in the same run, or the user's when they pass ``--overwrite``. Called before anything is
    written, so a refusal changes nothing."""
    existing = [Path(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        shown = ", ".join(str(p) for p in existing[:3]) + (", ..." if len(existing) > 3 else "")
        raise TeachFormerError(f"{flag}: {len(existing)} file(s) this command would write exist already ({shown}); "
                               f"nothing was changed. Give another {flag}, or pass --overwrite to replace them.")
