"""`cpu_inference`: every CPU path of `teachformer predict --device cpu` gives nnU-Net's own logits through nnU-Net's
own sliding window (two overlapping tiles, mirroring TTA, a two-fold ensemble), and the automatic choice is the
exact path that finishes first."""
import os
import shutil
import sys
import threading

import pytest
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from nnunet_teachformer.inference import path_memory
from nnunet_teachformer.inference.cpu_inference import (CpuPredictor, PathNetwork, sliding_window_weights,
                                                        tile_forwards, use_path)
from nnunet_teachformer.inference.path_choice import choose_cpu_path, remembered_or_chosen_cpu_path
from nnunet_teachformer.inference.predict import predict_on_cpu
from nnunet_teachformer.inference.cpu_paths import CPU_PATHS, DEFAULT_TOLERANCE, float16_sums_bound
from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.inference.openvino_engine import OpenVinoNetwork, cpu_has_bfloat16
from nnunet_teachformer.inference.stage_times import StageTimes


@pytest.fixture(scope="module")
def predictor(trained):
    """The tiny distilled student's predictor, with fold 0 loaded twice as if it were a two-fold ensemble."""
    predictor = CpuPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(trained["folders"]["TeachFormerTrainer_tiny"]), (0,),
                                                   "checkpoint_final.pth")
    second = {k: v * 0.5 if v.is_floating_point() else v for k, v in predictor.list_of_parameters[0].items()}
    predictor.list_of_parameters.append(second)
    return predictor


@pytest.fixture(scope="module")
def volume(predictor):
    patch = [int(p) for p in predictor.configuration_manager.patch_size]
    # 1.5 patches along the first axis (tile step 0.5): 2 overlapping tiles, Gaussian-weighted where they meet
    return torch.randn((2, patch[0] + patch[0] // 2, *patch[1:]), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def expected(predictor, volume):
    """nnU-Net's own logits, and the bound within which rounding in the tiles may move them (the float16 sums)."""
    use_path(predictor, CPU_PATHS["nnunet"])
    largest = []
    hook = predictor.network.register_forward_hook(lambda module, args, out: largest.append(float(out.abs().max())))
    try:
        logits = predictor.predict_logits_from_preprocessed_data(volume).float()
    finally:
        hook.remove()
    weights, tiles = sliding_window_weights(predictor, volume.shape[1:])
    folds = len(predictor.list_of_parameters)
    return logits, DEFAULT_TOLERANCE + float16_sums_bound(weights, tiles, max(largest), folds)


def assert_same_segmentation(got, expected):
    """Logits within each voxel's bound, and the argmax (the segmentation) equal wherever nnU-Net's own logits
    are not tied at that precision."""
    reference, bound = expected
    assert got.shape == reference.shape
    assert ((got - reference).abs() <= bound).all()
    top2 = reference.topk(2, dim=0).values
    flipped = got.argmax(0) != reference.argmax(0)
    assert (top2[0] - top2[1])[flipped].le(bound[flipped]).all()


EXACT_PATHS = [name for name, path in CPU_PATHS.items() if path.exact]


@pytest.mark.parametrize("path", [p for p in EXACT_PATHS if p != "nnunet"])
def test_each_path_gives_nnunets_logits_for_every_fold(predictor, volume, expected, path):
    use_path(predictor, CPU_PATHS[path])
    assert isinstance(predictor.network, PathNetwork)
    got = predictor.predict_logits_from_preprocessed_data(volume).float()
    # nnU-Net sums the weighted tiles in float16: rounding may move a logit by a float16 step of a sum; the
    # network's own outputs agree within the tolerance alone
    assert_same_segmentation(got, expected)
    patch = torch.randn((1, 2, *predictor.configuration_manager.patch_size), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert (predictor.network(patch) - predictor.network.network(patch)).abs().max() <= DEFAULT_TOLERANCE
    if CPU_PATHS[path].built_per_fold:  # one build per fold (trace, OpenVINO model), reused for the next case
        compiled = 1 if CPU_PATHS[path].engine == "openvino" else 2  # OpenVINO: the fold at work only
        assert len(predictor.network._built) == compiled
        builds = len(predictor.stage_times.builds)
        got = predictor.predict_logits_from_preprocessed_data(volume).float()
        assert len(predictor.network._built) == compiled
        assert len(predictor.stage_times.builds) - builds == (2 if compiled == 1 else 0)  # OpenVINO: imports
        assert_same_segmentation(got, expected)


def test_openvino_imports_the_folds_not_at_work_again(predictor, volume):
    use_path(predictor, CPU_PATHS["openvino"])  # builds fold 0, or imports it from build_cache
    predictor.predict_logits_from_preprocessed_data(volume)  # fold 0, then fold 1
    fold1, = predictor.network._built.values()
    from_disk = predictor.stage_times.builds_from_disk
    predictor.predict_logits_from_preprocessed_data(volume)  # the next case: fold 0 again, then fold 1
    assert predictor.stage_times.builds_from_disk - from_disk == 2
    assert list(predictor.network._built.values()) != [fold1]  # fold 1 imported anew, not kept compiled


def test_openvino_holds_activation_buffers_for_the_fold_at_work_only(predictor, volume, monkeypatch, tmp_path):
    """Where build_cache cannot keep the compiled folds, each stays compiled and gives up its buffers instead."""
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv(path_memory.MEMORY_ENV, str(tmp_path / "a_file"))
    use_path(predictor, CPU_PATHS["openvino"])  # builds fold 0
    released = []
    monkeypatch.setattr(OpenVinoNetwork, "release_memory", lambda network: released.append(network))
    predictor.predict_logits_from_preprocessed_data(volume)  # fold 0, then fold 1 (built)
    fold0, fold1 = predictor.network._built.values()
    assert released == [fold0]
    predictor.predict_logits_from_preprocessed_data(volume)  # the next case: fold 0 again, then fold 1
    assert released == [fold0, fold1, fold0]


@pytest.fixture
def two_threads():
    """Two tiles, two cores: as on CI's machines, whatever this one has."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("path", [p for p in EXACT_PATHS if CPU_PATHS[p].threaded_tiles])
def test_tiles_come_from_one_thread_per_core(predictor, volume, expected, path, two_threads, monkeypatch,
                                            usable_cores):
    use_path(predictor, CPU_PATHS[path])
    calls, windows = [], []
    forward, window = predictor.network.forward, predictor.predict_sliding_window_return_logits

    def recording(x):
        calls.append((len(windows), threading.get_ident(), torch.get_num_threads()))
        return forward(x)

    def counting(*args, **kwargs):
        windows.append(1)
        return window(*args, **kwargs)

    monkeypatch.setattr(predictor.network, "forward", recording)
    monkeypatch.setattr(predictor, "predict_sliding_window_return_logits", counting)
    got = predictor.predict_logits_from_preprocessed_data(volume).float()
    forwards = 2 * 2 * 8  # folds x tiles x mirrorings
    assert len(calls) == forwards and {n for _, _, n in calls} == {1}
    for fold in (1, 2):  # each fold's sliding window: its tiles from two threads, neither the caller's
        threads = {thread for window_number, thread, _ in calls if window_number == fold}
        assert len(threads) == 2 and threading.get_ident() not in threads
    assert torch.get_num_threads() == 2  # the caller's threads are untouched
    assert_same_segmentation(got, expected)
    if CPU_PATHS[path].engine == "openvino":  # which computes each tile on both cores, where it may use two
        for built in predictor.network._built.values():
            assert built.compiled.get_property("INFERENCE_NUM_THREADS") == min(2, usable_cores)


def test_a_plain_nnunet_predictor_is_refused_the_tile_per_core_path(predictor):
    plain = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    for name in ("plans_manager", "configuration_manager", "dataset_json", "list_of_parameters", "network"):
        setattr(plain, name, getattr(predictor, name))
    with pytest.raises(TypeError, match="tile_per_core path needs a CpuPredictor"):
        use_path(plain, CPU_PATHS["tile_per_core"])


def test_choice_is_the_exact_path_that_finishes_first_and_says_so(predictor):
    choice = choose_cpu_path(predictor, forwards=1000, rounds=1)
    assert set(choice.seconds_per_tile) == set(EXACT_PATHS)  # an inexact path (bfloat16) is never a candidate
    exact = [name for name, d in choice.max_abs_difference.items() if d <= DEFAULT_TOLERANCE]
    assert choice.path.name == min(exact, key=choice.expected_seconds)
    assert choice.build_seconds["frozen"] > 0 == choice.build_seconds["nnunet"]
    assert choice.build_seconds["tile_per_core"] > 0
    assert predictor.network.path == choice.path if choice.path.name != "nnunet" else \
        not isinstance(predictor.network, PathNetwork)
    assert choice.summary().startswith(f"CPU path: {choice.path.name} (")


def test_the_choice_builds_fold_0_once_per_engine_and_predicts_with_that_build(predictor, volume, expected):
    """What the measurements built is what the prediction runs (tile_per_core runs frozen's trace): no rebuild."""
    predictor.stage_times = StageTimes()
    choice = choose_cpu_path(predictor, forwards=1000, rounds=1)
    engines = [p.engine for p in CPU_PATHS.values() if p.built_per_fold]
    assert sorted(predictor.stage_times.builds) == sorted(set(engines))
    if choice.path.built_per_fold:
        assert_same_segmentation(predictor.predict_logits_from_preprocessed_data(volume).float(), expected)
        assert predictor.stage_times.builds.count(choice.path.engine) == 2  # fold 0 from the choice, then fold 1


def test_stage_times_cover_the_prediction_and_count_every_forward(trained, phantom, predictor, tmp_path):
    """A whole prediction from files (nnU-Net's workers included): each stage timed once in the predicting
    thread, together no more than its wall time; every tile forward counted; the fold's build timed."""
    images = phantom / "imagesTs"
    times = StageTimes()
    predict_on_cpu(trained["folders"]["TeachFormerTrainer_tiny"], (0,), "checkpoint_final.pth", str(images),
                   str(tmp_path), save_probabilities=False, tta=False, processes=1, path="tile_per_core", times=times)
    record = times.record()
    seconds = record["seconds"]
    assert 0 < sum(seconds.values()) <= record["finished_at"] - record["started_at"]
    for stage in ("initialise", "build", "preprocessing_wait", "aggregation", "forwards", "export_wait"):
        assert seconds[stage] > 0, stage
    assert seconds["path_choice"] == seconds["checks"] == 0  # asked for a path; checks are teachformer predict's
    cases = [[str(p)] for p in sorted(images.glob("*_0000.nii.gz"))]
    mirrorings = 2 ** len(predictor.allowed_mirroring_axes)  # the fixture's predictor mirrors; this one did not
    assert record["tile_forwards"] == tile_forwards(predictor, cases) // mirrorings
    assert record["builds"] == ["torchscript"] and record["peak_resident_bytes"] > 0
    assert len(list(tmp_path.glob("*.nii.gz"))) == len(cases)


def test_bfloat16_is_close_to_nnunets_logits(predictor, volume, expected):
    """openvino_bf16, the inexact lever: OpenVINO compiled in bfloat16 where the CPU has it; its segmentation
    mostly nnU-Net's, a tile's logits off by bfloat16's rounding (8 bits of mantissa), not float32's."""
    use_path(predictor, CPU_PATHS["openvino_bf16"])
    got = predictor.predict_logits_from_preprocessed_data(volume).float()
    assert got.shape == expected[0].shape
    assert (got.argmax(0) == expected[0].argmax(0)).float().mean() >= 0.95
    patch = torch.randn((1, 2, *predictor.configuration_manager.patch_size), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        tile, float32 = predictor.network(patch), predictor.network.network(patch)
    assert (tile - float32).abs().max() <= 0.1 * float32.abs().max()
    compiled = next(iter(predictor.network._built.values())).compiled
    import openvino as ov
    has_bf16 = cpu_has_bfloat16()
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == (ov.Type.bf16 if has_bf16 else ov.Type.f32)


def test_tile_step_and_mirror_axes_set_the_forwards(trained, phantom, predictor, tmp_path):
    """--step-size and --mirror-axes reach nnU-Net's predictor: one mirror axis of three doubles each tile's
    forwards instead of multiplying them by 8; a tile step of 1 cuts a 2.5-tile case from 4 tiles to 3 per axis."""
    images = phantom / "imagesTs"
    times = StageTimes()
    predict_on_cpu(trained["folders"]["TeachFormerTrainer_tiny"], (0,), "checkpoint_final.pth", str(images),
                   str(tmp_path), save_probabilities=False, tta=True, processes=1, path="nnunet", times=times,
                   step_size=1.0, mirror_axes=(2,))
    cases = [[str(p)] for p in sorted(images.glob("*_0000.nii.gz"))]
    mirrorings = 2 ** len(predictor.allowed_mirroring_axes)
    assert times.record()["tile_forwards"] == tile_forwards(predictor, cases) // mirrorings * 2
    import SimpleITK as sitk
    patch = [int(p) for p in predictor.configuration_manager.patch_size]
    long_case = tmp_path / "long_0000.nii.gz"
    image = sitk.Image([p * 5 // 2 for p in patch[::-1]], sitk.sitkUInt8)
    image.SetSpacing([float(s) for s in predictor.configuration_manager.spacing[::-1]])
    sitk.WriteImage(image, str(long_case))
    for step, per_axis in ((0.5, 4), (1.0, 3)):
        stepped = CpuPredictor(tile_step_size=step, use_mirroring=False, device=torch.device("cpu"))
        stepped.configuration_manager = predictor.configuration_manager
        assert tile_forwards(stepped, [[str(long_case)]]) == per_axis ** 3


def test_the_choice_is_measured_once_per_model_and_machine(trained, predictor, tmp_path, monkeypatch):
    """The second call with the same fold's checkpoint reuses the first call's measurements: the same path, only it
    built; a checkpoint written since is measured anew."""
    monkeypatch.setenv(path_memory.MEMORY_ENV, str(tmp_path))
    checkpoint = tmp_path / "model" / "fold_0" / "checkpoint_final.pth"
    checkpoint.parent.mkdir(parents=True)
    shutil.copy(trained["folders"]["TeachFormerTrainer_tiny"] / "fold_0" / "checkpoint_final.pth", checkpoint)
    shutil.copy(trained["folders"]["TeachFormerTrainer_tiny"] / "plans.json", checkpoint.parent.parent)
    predictor.stage_times = StageTimes()
    first = remembered_or_chosen_cpu_path(predictor, forwards=1000, checkpoint=checkpoint)
    assert "measured now, remembered in" in first.summary() and path_memory.memory_file().is_file()
    measuring_builds = list(predictor.stage_times.builds)
    predictor.stage_times = StageTimes()
    again = remembered_or_chosen_cpu_path(predictor, forwards=1000, checkpoint=checkpoint)
    assert again.path == first.path and again.seconds_per_tile == first.seconds_per_tile
    assert "as remembered in" in again.summary()
    assert predictor.stage_times.builds == []  # built when the prediction starts, beside nnU-Net's workers
    predictor.network.load_state_dict(predictor.list_of_parameters[0])
    assert predictor.stage_times.builds == ([first.path.engine] if first.path.built_per_fold else [])
    assert len(measuring_builds) > len(predictor.stage_times.builds)
    few = remembered_or_chosen_cpu_path(predictor, forwards=0, checkpoint=checkpoint)  # no forwards: no build pays
    assert few.path.name in ("nnunet", "channels_last")
    checkpoint.write_bytes(checkpoint.read_bytes())  # a new checkpoint (its modification time)
    os.utime(checkpoint, ns=(checkpoint.stat().st_atime_ns, checkpoint.stat().st_mtime_ns + 10 ** 9))
    assert "measured now" in remembered_or_chosen_cpu_path(predictor, forwards=1000, checkpoint=checkpoint).summary()


def test_a_path_asked_for_is_built_while_nnunets_workers_preprocess_the_first_case(predictor, monkeypatch):
    use_path(predictor, CPU_PATHS["frozen"], load=False)
    preprocessing = threading.Event()
    build = predictor.network._build

    def overlapping_build():
        assert preprocessing.wait(timeout=30), "the build waited for nothing: it did not overlap the preprocessing"
        return build()

    def cases():  # nnU-Net's iterator: its workers start on the first next()
        preprocessing.set()
        yield "case 1"
        yield "case 2"

    monkeypatch.setattr(predictor.network, "_build", overlapping_build)
    assert list(predictor._waited_for(cases())) == ["case 1", "case 2"]
    assert not predictor.network.needs_build(predictor.list_of_parameters[0])
    assert list(predictor._waited_for(iter(["case 3"]))) == ["case 3"]  # built: the next call just waits


def test_nothing_to_predict_pays_for_no_build(predictor):
    choice = choose_cpu_path(predictor, forwards=0, rounds=1)  # nothing to predict: any build is pure cost
    assert choice.path.name != "frozen"


def test_a_path_outside_the_tolerance_is_never_taken(predictor):
    assert choose_cpu_path(predictor, forwards=1000, tolerance=-1.0, rounds=1).path.name == "nnunet"


def test_without_openvino_its_path_says_how_to_install_it_and_auto_goes_on(predictor, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(TeachFormerError, match=r"needs OpenVINO, which is not installed: pip install"):
        use_path(predictor, CPU_PATHS["openvino"])
    choice = choose_cpu_path(predictor, forwards=1000, rounds=1)
    assert "openvino" not in choice.seconds_per_tile and choice.path.name != "openvino"
    assert "openvino left out: the openvino CPU path needs OpenVINO" in choice.summary()
