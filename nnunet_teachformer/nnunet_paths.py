"""Thin helpers over nnU-Net's own naming functions, so that no module rebuilds ``Dataset<ID>_<Name>``
parsing, a ``<Trainer>__<Plans>__<Configuration>/fold_<f>`` path or an ``nnUNetv2_train`` line by hand."""
import argparse
from pathlib import Path
from typing import List, Optional, Union

from nnunetv2.utilities.dataset_name_id_conversion import convert_dataset_name_to_id
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


def model_folder(dataset_name: str, trainer: str, plans: str, configuration: str,
                 fold: Optional[Union[int, str]] = None) -> Path:
    """``$nnUNet_results/<Dataset>/<Trainer>__<Plans>__<Configuration>[/fold_<f>]``."""
    from nnunetv2.paths import nnUNet_results
    if not nnUNet_results.is_set():
        raise TeachFormerError("nnUNet_results is not set: it must point at the folder that holds the trained models, "
                               "e.g. export nnUNet_results=/data/nnUNet_results.")
    return Path(get_output_folder(dataset_name, trainer, plans, configuration, fold))


def train_command(dataset: Union[int, str], configuration: str, fold: Union[int, str], plans: str, trainer: str,
                  *extra: str) -> List[str]:
    """The ``nnUNetv2_train`` command line, the dataset given by id or name."""
    ds = dataset if isinstance(dataset, int) or str(dataset).isdigit() else dataset_id(dataset)
    return ["nnUNetv2_train", str(ds), configuration, str(fold), "-p", plans, "-tr", trainer, *extra]
