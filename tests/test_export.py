"""``teachformer export``: the distilled tiny student of the session's study as ONNX, compared with PyTorch through
onnxruntime on a real preprocessed patch and on random inputs, its input-contract JSON, and the errors for
models without a checkpoint."""
import json

import numpy as np
import pytest
import torch
from acvl_utils.cropping_and_padding.padding import pad_nd_image

from conftest import DATASET_ID, console_script, model_folder, run_cli

onnxruntime = pytest.importorskip("onnxruntime")

TRAINER = "TeachFormerTrainer_tiny"
TOLERANCE = 1e-3  # max |logit difference|, the export's default


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "student.onnx"
    result = run_cli([console_script("teachformer"), "export", "-d", DATASET_ID, "-f", 0, "-o", out, "-tr", TRAINER])
    return out, result.stdout


@pytest.fixture(scope="module")
def predictor(trained, nnunet_dirs):
    """The student as nnU-Net's predictor rebuilds it: the PyTorch reference."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    p = nnUNetPredictor(perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    p.initialize_from_trained_model_folder(str(model_folder(nnunet_dirs["nnUNet_results"], TRAINER)), (0,),
                                           "checkpoint_final.pth")
    p.network.eval()
    return p


def _compare(path, network, batch):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(["logits"], {"image": batch.numpy()})[0]
    with torch.inference_mode():
        reference = network(batch).numpy()
    assert onnx_logits.shape == reference.shape
    return float(np.abs(onnx_logits - reference).max())


def test_onnx_logits_match_pytorch_on_a_real_patch(exported, predictor, phantom):
    path, stdout = exported
    assert path.is_file() and str(path) in stdout
    images = sorted(str(p) for p in (phantom / "imagesTs").glob("PHANTOM_010_*.nii.gz"))
    data, _, _ = predictor.configuration_manager.preprocessor_class(verbose=False).run_case(
        images, None, predictor.plans_manager, predictor.configuration_manager, predictor.dataset_json)
    patch = predictor.configuration_manager.patch_size
    padded = pad_nd_image(data, patch)
    batch = torch.from_numpy(np.ascontiguousarray(padded[(slice(None), *(slice(0, p) for p in patch))][None]))
    assert _compare(path, predictor.network, batch.float()) <= TOLERANCE


def test_onnx_batch_axis_is_dynamic_and_random_inputs_match(exported, predictor):
    path, _ = exported
    shape = (3, 2, *predictor.configuration_manager.patch_size)
    batch = torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 3
    assert _compare(path, predictor.network, batch) <= TOLERANCE


def test_metadata_states_the_input_contract(exported, predictor):
    path, _ = exported
    meta = json.loads(path.with_suffix(".json").read_text())
    config, plans = predictor.configuration_manager, predictor.plans_manager
    patch = [int(p) for p in config.patch_size]
    assert meta["onnx_file"] == path.name
    assert meta["model"]["trainer"] == TRAINER and meta["model"]["fold"] == 0
    assert meta["input"]["shape"] == ["batch", 2] + patch and meta["sliding_window"]["patch_size"] == patch
    assert meta["output"]["shape"] == ["batch", 3] + patch
    assert [c["name"] for c in meta["input"]["channels"]] == ["CT", "PET"]
    assert [c["normalization"] for c in meta["input"]["channels"]] == list(config.normalization_schemes)
    for i, channel in enumerate(meta["input"]["channels"]):
        if channel["normalization"] == "CTNormalization":
            expected = plans.foreground_intensity_properties_per_channel[str(i)]
            assert channel["intensity_properties"]["mean"] == pytest.approx(expected["mean"])
            assert channel["intensity_properties"]["percentile_99_5"] == pytest.approx(expected["percentile_99_5"])
    assert meta["input"]["spacing"] == pytest.approx(list(config.spacing))
    assert meta["output"]["labels"] == {"background": 0, "GTVp": 1, "GTVn": 2}
    assert meta["export"]["opset"] == 17
    assert 0 <= meta["verification"]["max_abs_logit_difference"] <= meta["verification"]["tolerance"] == TOLERANCE


def test_an_existing_file_is_replaced_only_with_overwrite(exported):
    path, _ = exported
    contract = path.with_suffix(".json")
    before = (path.stat().st_mtime_ns, contract.read_text())
    command = [console_script("teachformer"), "export", "-d", DATASET_ID, "-f", 0, "-o", path, "-tr", TRAINER]
    refused = run_cli(command, check=False)
    assert refused.returncode == 2 and "exist already" in refused.stderr and "--overwrite" in refused.stderr
    assert path.stat().st_mtime_ns == before[0] and contract.read_text() == before[1]
    run_cli(command + ["--overwrite"])  # the suggested fix
    assert path.stat().st_mtime_ns != before[0] and json.loads(contract.read_text())["onnx_file"] == path.name


def test_missing_checkpoint_is_named_with_the_fix(trained, tmp_path):
    out = tmp_path / "student.onnx"
    result = run_cli([console_script("teachformer"), "export", "-d", DATASET_ID, "-f", 1, "-o", out, "-tr", TRAINER],
                     check=False)
    assert result.returncode == 2
    assert "fold_1/checkpoint_final.pth does not exist" in result.stderr and "teachformer train" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_untrained_model_folder_is_named(trained, tmp_path):
    result = run_cli([console_script("teachformer"), "export", "-d", DATASET_ID, "-f", 0, "-o", tmp_path / "x.onnx",
                      "-tr", "TeachFormerTrainer_noAFS_tiny"], check=False)
    assert result.returncode == 2
    assert "TeachFormerTrainer_noAFS_tiny__TeachFormerPlans__3d_fullres/plans.json does not exist" in result.stderr
