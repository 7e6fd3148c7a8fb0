"""Inference time per case with nnU-Net's own predictor, as a user would run it.

``nnUNetPredictor`` is initialised from the model folder with ONE fold's checkpoint (an ensemble of k
folds takes about k times as long) and predicts one raw case end to end: preprocessing, sliding-window
inference (tile step 0.5, Gaussian weighting, mirroring test-time augmentation unless switched off)
and resampling to the original geometry; no file is written. One patch-sized forward pass runs first
so that lazy initialisation (cuDNN autotuning, allocator warm-up) is not timed.
"""
import contextlib
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch


@dataclass(frozen=True)
class Latency:
    seconds: float
    device: str
    fold: int
    case: str
    mirroring: bool


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_inference(model_folder, fold: int, image_files: Sequence[str], case: str, device: str = "cpu",
                   mirroring: bool = True, checkpoint: str = "checkpoint_final.pth") -> Latency:
    """Seconds to predict the case made of ``image_files`` (one file per channel) with ``fold``'s checkpoint."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    torch_device = torch.device(device)
    with contextlib.redirect_stdout(io.StringIO()):  # the predictor prints its device choices per case
        predictor = nnUNetPredictor(use_mirroring=mirroring, perform_everything_on_device=torch_device.type == "cuda",
                                    device=torch_device, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(Path(model_folder)), (fold,), checkpoint)
        network = predictor.network.to(torch_device).eval()
        channels = len(image_files)
        # the same autocast as nnU-Net's sliding window, so the warm-up tunes the kernels that are timed
        autocast = torch.autocast("cuda") if torch_device.type == "cuda" else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            network(torch.zeros((1, channels, *predictor.configuration_manager.patch_size), device=torch_device))
        _synchronize(torch_device)
        start = time.perf_counter()
        predictor.predict_from_files_sequential([list(map(str, image_files))], None)
        _synchronize(torch_device)
        seconds = time.perf_counter() - start
    return Latency(seconds, torch_device.type, fold, case, mirroring)
