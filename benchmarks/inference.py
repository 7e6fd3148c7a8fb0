"""What the distilled student saves at inference: time, memory, parameters and GFLOPs against its teachers and
nnU-Net's default U-Net, all through nnU-Net's own ``nnUNetPredictor``, plus the student's ONNX export.

Models (fold 0 of each; weights untrained, written with nnU-Net's ``save_checkpoint``: cost does not
depend on their values):

    student        TeachFormerTrainer (H-DenseFormer Light)           TeachFormerPlans 3d_fullres
    teachers       HDenseFormerTrainer, SwinUNETRTrainer, UNETRTrainer TeachFormerPlans 3d_fullres
    nnU-Net        nnUNetTrainer (nnU-Net's default U-Net)             nnUNetPlans 3d_fullres
    student ONNX   ``teachformer export`` of the student, run by onnxruntime (CPU) inside the same predictor

Volumes of the paper's size: ``petct`` = a held-out 2 x 144^3 phantom case (1 mm; the dataset is five
training phantoms of that size, planned with both planners); ``mri`` = a 3 x 24 x 384 x 384 case
(3 x 0.5 x 0.5 mm) of a synthetic bpMRI-like dataset (T2W, ADC, HBV).

Each model runs in a fresh child process: ``nnUNetPredictor.initialize_from_trained_model_folder``, one
untimed forward pass at the patch size, then the case: preprocessing (``preprocessor.run_case``),
sliding-window prediction (``predict_logits_from_preprocessed_data``: the plans' patch, tile step 0.5,
Gaussian weighting, mirroring TTA on or off) and conversion to a segmentation in the original geometry;
each stage is timed. Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the child's peak
resident memory (``VmHWM``, reset after the imports) minus its resident memory then, i.e. weights, the case's
arrays, activations and nnU-Net's buffers. Parameters and GFLOPs (one patch, batch 1, FlopCounterMode) come
from ``nnunet_teachformer.evaluation.complexity``.

The speedups compare the sliding-window prediction time (what the network changes); the wall time per
case (with preprocessing and export, the same for every model) is reported too.

    python benchmarks/inference.py --device cpu|cuda [--tiny] [--json PATH] [--volume petct|mri|both]
                                   [--tta off|on|both] [--repeats N]
"""
import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import common
from nnunet_teachformer.inference.cpu_paths import DEFAULT_TOLERANCE, float16_sums_bound

MRI_SHAPE, MRI_SPACING = (24, 384, 384), (3.0, 0.5, 0.5)
MRI_DATASET_ID = 950


def parse_args(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--volume", choices=["petct", "mri", "both"],
                        help="paper-size volume(s) (default: petct on cpu, both on cuda)")
    parser.add_argument("--tta", choices=["off", "on", "both"],
                        help="mirroring test-time augmentation (default: off on cpu, where it costs 8x, both on cuda)")
    parser.add_argument("--repeats", type=int, help="timed cases per model, median reported (default: 1 cpu, 3 cuda)")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX export and onnxruntime timing")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    args.volume = args.volume or ("petct" if args.tiny or not cuda else "both")
    args.tta = args.tta or ("both" if cuda and not args.tiny else "off")
    args.repeats = args.repeats or (3 if cuda and not args.tiny else 1)
    return args


# volumes ----------------------------------------------------------------------------------------------
def mri_dataset(processes: int) -> str:
    """``Dataset950_TeachFormerBenchMRI``: five training cases and one held-out case of 3 x 24 x 384 x 384."""
    import numpy as np
    import SimpleITK as sitk
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
    from scipy.ndimage import gaussian_filter

    from nnunet_teachformer.conversion.dataset_writer import atomic_dataset_folder

    name = "TeachFormerBenchMRI"
    raw = Path(os.environ["nnUNet_raw"])
    if not (raw / f"Dataset{MRI_DATASET_ID}_{name}" / "dataset.json").is_file():
        z, y, x = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in MRI_SHAPE], indexing="ij")
        with atomic_dataset_folder(raw, MRI_DATASET_ID, name, overwrite=True) as tmp:
            for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
                (tmp / sub).mkdir()
            for i in range(6):
                rng = np.random.default_rng([7, i])
                gland = (z / 0.8) ** 2 + (y / 0.35) ** 2 + (x / 0.4) ** 2 <= 1
                c = rng.uniform(-0.2, 0.2, 3)
                lesion = ((z - c[0]) / 0.5) ** 2 + ((y - c[1]) / 0.12) ** 2 + ((x - c[2]) / 0.12) ** 2 <= 1
                texture = gaussian_filter(rng.normal(0, 1, MRI_SHAPE).astype(np.float32), (0.5, 4, 4))
                images = [300 + 80 * texture + 100 * gland - 120 * lesion,  # T2W: dark lesion
                          1400 + 150 * texture + 200 * gland - 600 * lesion,  # ADC: restricted diffusion
                          8 + 2 * texture + 4 * gland + 10 * lesion]  # HBV: bright lesion
                split = "Tr" if i < 5 else "Ts"
                for channel, image in enumerate(images):
                    _write(np.clip(image, 1, None).astype(np.float32),
                           tmp / f"images{split}" / f"MRI_{i:03d}_{channel:04d}.nii.gz", sitk)
                _write((lesion & gland).astype(np.uint8), tmp / f"labels{split}" / f"MRI_{i:03d}.nii.gz", sitk)
            generate_dataset_json(str(tmp), {0: "T2W", 1: "ADC", 2: "HBV"}, {"background": 0, "lesion": 1}, 5,
                                  ".nii.gz", dataset_name=f"Dataset{MRI_DATASET_ID}_{name}",
                                  description="synthetic bpMRI-like volumes for benchmarks/inference.py")
    return common.plan(MRI_DATASET_ID, ["nnUNetPlans", "TeachFormerPlans"], processes)


def _write(array, path, sitk):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(reversed(MRI_SPACING)))
    sitk.WriteImage(image, str(path), useCompression=True)


def held_out_case(dataset_name: str):
    images = sorted(Path(os.environ["nnUNet_raw"], dataset_name, "imagesTs").glob("*_0000.nii.gz"))
    case = images[0].name[:-len("_0000.nii.gz")]
    return case, sorted(str(p) for p in images[0].parent.glob(f"{case}_*.nii.gz"))


# child process: one model, one case ---------------------------------------------------------------------
def _status_bytes(key: str) -> int:
    """A memory line of /proc/self/status (VmRSS: resident now, VmHWM: peak resident), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _start_peak_memory() -> int:
    """Resets the peak-resident mark to the resident memory now (Linux) and returns that memory.

    ``ru_maxrss`` is no use in a child process: Linux carries the parent's peak over fork and exec.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_bytes("VmRSS")
    except (OSError, KeyError):  # not Linux: ru_maxrss after the imports is the baseline
        return _max_resident_bytes()


def _peak_memory() -> int:
    try:
        return _status_bytes("VmHWM")
    except (OSError, KeyError):
        return _max_resident_bytes()


def _max_resident_bytes() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def run_child(spec: dict) -> dict:
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from nnunet_teachformer.inference.cpu_inference import CPU_PATHS, CpuPredictor, sliding_window_weights, use_path

    device = torch.device(spec["device"])
    common.set_threads(spec["threads"])
    with common.quiet():  # imports every trainer module (timm, MONAI, ...): not the model's memory
        trainer_class = recursive_find_trainer_class_by_name(spec["trainer"])
    if spec.get("onnx"):
        import onnxruntime  # noqa: F401
    if spec.get("cpu_path") and CPU_PATHS[spec["cpu_path"]].engine == "openvino":
        import openvino  # noqa: F401
    resident_after_imports = _start_peak_memory()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with common.quiet():
        predictor = CpuPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=spec["tta"],
                                    perform_everything_on_device=device.type == "cuda", device=device,
                                    allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(spec["model_folder"], (0,), "checkpoint_final.pth")
    build_seconds = 0.0
    if spec.get("cpu_path"):  # as `teachformer predict --device cpu --cpu-path NAME` runs it; built once per fold
        use_path(predictor, CPU_PATHS[spec["cpu_path"]])
        build_seconds = predictor.network.build_seconds
    if spec.get("onnx"):
        predictor.network = OnnxNetwork(spec["onnx"], torch.get_num_threads())
        predictor.list_of_parameters = [{}]
    plans_manager, config = predictor.plans_manager, predictor.configuration_manager
    preprocessor = config.preprocessor_class(verbose=False)
    if spec.get("whole_volume"):  # one tile over the whole case, rounded up to what the network accepts
        data, _, _ = preprocessor.run_case(spec["files"], None, plans_manager, config, predictor.dataset_json)
        multiple = trainer_class.network_spec.patch_multiple
        config.configuration["patch_size"] = [-(-s // multiple) * multiple for s in data.shape[1:]]
    patch = [int(p) for p in config.patch_size]
    gflops_per_tile = None
    if spec.get("whole_volume"):
        import copy
        from nnunet_teachformer.evaluation.complexity import measure_complexity
        gflops_per_tile = measure_complexity(lambda: copy.deepcopy(predictor.network),
                                             (1, len(spec["files"]), *patch)).gflops
    network = predictor.network.to(device).eval()
    # one untimed patch, under the predictor's autocast, so lazy initialisation (cuDNN autotuning) is not timed
    with torch.inference_mode(), torch.autocast("cuda") if device.type == "cuda" else contextlib.nullcontext():
        network(torch.zeros((1, len(spec["files"]), *patch), device=device))
    common.synchronize(device)

    largest_tile_logit = []  # for the exactness bound of the student's runs (float16_sums_bound)
    if spec.get("logits_out"):
        network.register_forward_hook(lambda module, args, out: largest_tile_logit.append(float(out.abs().max())))
    stages = {"preprocess": [], "predict": [], "export": []}
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        data, _, properties = preprocessor.run_case(spec["files"], None, plans_manager, config, predictor.dataset_json)
        preprocessed = time.perf_counter()
        with common.quiet(), _bf16(spec.get("bf16")):
            logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()
        common.synchronize(device)
        predicted = time.perf_counter()
        convert_predicted_logits_to_segmentation_with_correct_shape(logits, plans_manager, config,
                                                                    predictor.label_manager, properties)
        stages["preprocess"].append(preprocessed - start)
        stages["predict"].append(predicted - preprocessed)
        stages["export"].append(time.perf_counter() - predicted)
    shape = [max(s, p) for s, p in zip(data.shape[1:], patch)]
    tiles = 1
    for steps in compute_steps_for_sliding_window(shape, patch, 0.5):
        tiles *= len(steps)
    mirrored = len(predictor.allowed_mirroring_axes or ()) if spec["tta"] else 0
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _peak_memory() - resident_after_imports
    case_times = [sum(t) for t in zip(*stages.values())]
    if spec.get("logits_out"):  # the last case's logits, for the exactness check of the student's paths
        import numpy as np
        np.save(spec["logits_out"], logits.to(torch.float16).numpy())
        weight_sum, tiles_over_voxel = sliding_window_weights(predictor, data.shape[1:])
        np.save(_bound_file(spec["logits_out"]),
                float16_sums_bound(weight_sum, tiles_over_voxel, max(largest_tile_logit)).numpy())
    return {"patch_size": patch, "preprocessed_shape": list(data.shape[1:]), "tiles": tiles,
            "forwards_per_tile": 2 ** mirrored, "stages_s": stages, "predict_s": common.median(stages["predict"]),
            "case_s": common.median(case_times), "peak_memory_bytes": int(peak), "logits_out": spec.get("logits_out"),
            "path_build_s": build_seconds, "gflops_per_tile": gflops_per_tile,
            "largest_tile_logit": max(largest_tile_logit, default=None),
            "peak_memory_method": "torch.cuda.max_memory_allocated" if device.type == "cuda"
            else "peak resident memory (VmHWM) minus resident memory after the imports, fresh process"}


def _bf16(enabled: bool):
    """bfloat16 autocast on the CPU (oneDNN uses AMX or AVX512-BF16 where the CPU has them); a lever measured here,
    not a path of ``teachformer predict``: its logits are not float32's."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


class OnnxNetwork(torch.nn.Module):
    """Stands in for the student network in nnU-Net's predictor: the same sliding window, onnxruntime forwards."""

    def __init__(self, path: str, threads: int):
        from nnunet_teachformer.sharing.export import onnx_session
        super().__init__()
        self.session = onnx_session(Path(path), threads)

    def forward(self, x):
        from nnunet_teachformer.sharing.export import INPUT_NAME, OUTPUT_NAME
        logits = self.session.run([OUTPUT_NAME], {INPUT_NAME: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(logits).to(x.device)


def measure_in_child(spec: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "result.json")
        spec = dict(spec, result=str(out))
        result = subprocess.run([sys.executable, __file__, "--_child", json.dumps(spec)], capture_output=True,
                                text=True)
        if result.returncode != 0 or not out.is_file():
            raise RuntimeError(f"measuring {spec['label']} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
        return json.loads(out.read_text())


# parent -------------------------------------------------------------------------------------------------
def models(tiny: bool, dataset: str):
    suffix = "_tiny" if tiny else ""
    results = Path(os.environ["nnUNet_results"], dataset)
    entries = [("student", "TeachFormerTrainer" + suffix, "TeachFormerPlans")]
    entries += [("teacher", t + suffix, "TeachFormerPlans")
                for t in ("HDenseFormerTrainer", "SwinUNETRTrainer", "UNETRTrainer")]
    entries += [("nnU-Net default", "nnUNetTrainer", "nnUNetPlans")]
    return [(role, trainer, plans, results / f"{trainer}__{plans}__3d_fullres") for role, trainer, plans in entries]


def measure_volume(volume: str, args) -> dict:
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from nnunet_teachformer.inference.cpu_paths import CPU_PATHS
    from nnunet_teachformer.evaluation.complexity import model_folder_complexity
    from nnunet_teachformer.sharing.export import export_student

    size = 32 if args.tiny else 144
    common.log(f"[inference] {volume}: dataset, nnUNetPlans and TeachFormerPlans ...")
    dataset = common.phantom(size, ["nnUNetPlans", "TeachFormerPlans"], test_cases=1) if volume == "petct" \
        else mri_dataset(processes=2)
    case, files = held_out_case(dataset)
    entries = models(args.tiny, dataset)
    for role, trainer_name, plans, folder in entries:  # rewritten every run: a reused --workdir may hold old presets
        common.write_untrained_checkpoint(common.make_trainer(trainer_name, dataset, plans, torch.device("cpu")))

    rows = {}
    for role, trainer_name, plans, folder in entries:
        with common.quiet():
            trainer_class = recursive_find_trainer_class_by_name(trainer_name)
            complexity = model_folder_complexity(folder, trainer_class, "3d_fullres")
        rows[trainer_name] = {"role": role, "trainer": trainer_name, "trainer_class": trainer_name,
                              "plans": plans, "model_folder": str(folder),
                              "parameters": complexity.parameters, "gflops_per_patch": complexity.gflops}
    onnx = None
    if not args.no_onnx:
        onnx_path = Path(os.environ["nnUNet_results"], dataset, "student.onnx")
        common.log(f"[inference] exporting the student to {onnx_path} ...")
        with common.quiet():
            meta = export_student(dataset, 0, onnx_path, trainer=entries[0][1])
        onnx = {"path": str(onnx_path), "max_abs_logit_difference": meta["verification"]["max_abs_logit_difference"],
                "tolerance": meta["verification"]["tolerance"], "opset": meta["export"]["opset"]}
        rows["student (ONNX)"] = dict(rows[entries[0][1]], role="student ONNX, onnxruntime CPU",
                                      trainer=entries[0][1] + " -> ONNX")

    student = entries[0][1]
    if args.device == "cpu":  # the student along each path of `teachformer predict --device cpu`, and in bfloat16
        for path in CPU_PATHS.values():
            if path.name != "nnunet" and path.exact:  # openvino_bf16: real_ct_prediction.py measures the levers
                rows[f"student [{path.name}]"] = dict(rows[student], role="student path", cpu_path=path.name,
                                                      trainer=f"{student}, {path.description}")
        rows["student [bf16]"] = dict(rows[student], role="student lever", bf16=True,
                                      trainer=f"{student}, bfloat16 autocast (not exact: not a predict path)")
        rows["student [whole volume]"] = dict(rows[student], role="student lever", whole_volume=True,
                                              trainer=f"{student}, one tile over the whole case (not exact: not a "
                                                      f"predict path)")

    tta_modes = {"off": [False], "on": [True], "both": [False, True]}[args.tta]
    runs = {}
    with tempfile.TemporaryDirectory() as logits_dir:
        for tta in tta_modes:
            key = "tta_on" if tta else "tta_off"
            runs[key] = {}
            for label, row in rows.items():
                onnx_run = label == "student (ONNX)"
                common.log(f"[inference] {volume} TTA {'on' if tta else 'off'}: {label} ...")
                student_variant = row["model_folder"] == rows[student]["model_folder"]
                runs[key][label] = measure_in_child({
                    "label": label, "device": "cpu" if onnx_run else args.device, "tta": tta, "files": files,
                    "model_folder": row["model_folder"], "trainer": row["trainer_class"], "repeats": args.repeats,
                    "threads": args.threads, "onnx": onnx["path"] if onnx_run else None,
                    "cpu_path": row.get("cpu_path"), "bf16": row.get("bf16", False),
                    "whole_volume": row.get("whole_volume", False),
                    "logits_out": str(Path(logits_dir, f"{len(runs[key])}.npy")) if student_variant else None})
            exactness(runs[key], student)
            add_throughput(runs[key], rows)
    return {"dataset": dataset, "case": case, "files": files, "models": rows, "runs": runs, "onnx": onnx}


def _bound_file(logits_file: str) -> str:
    return logits_file[:-len(".npy")] + "_bound.npy"


def exactness(runs: dict, student: str) -> None:
    """Adds to every run of the student (paths, levers, ONNX) its largest |logit difference| to nnU-Net's own path,
    the share of voxels whose argmax (the segmentation) equals it, the largest margin by which nnU-Net's own
    logits preferred their class where the argmax differs (a flip at a near-tie has a margin near 0), and
    ``exact``: every logit within DEFAULT_TOLERANCE plus that voxel's ``float16_sums_bound`` for nnU-Net's own
    run (nnU-Net sums the tiles in float16, so a rounding difference of 1e-6 in a tile can move a logit by a
    float16 step of a sum, a large one where the Gaussian weights are float16 subnormals), and every flip at a
    margin within that bound too (a tie at the precision of nnU-Net's own sums). ``exactness_bound`` is the
    bound at the voxel of the largest difference."""
    import numpy as np
    reference = np.load(runs[student]["logits_out"]).astype(np.float32)
    bound = DEFAULT_TOLERANCE + np.load(_bound_file(runs[student]["logits_out"]))
    chosen = reference.argmax(0)
    for run in runs.values():
        if run.get("logits_out"):
            logits = np.load(run.pop("logits_out")).astype(np.float32)
            difference = np.abs(logits - reference)
            flipped = logits.argmax(0) != chosen
            margin = (np.take_along_axis(reference, chosen[None], 0)[0]
                      - np.take_along_axis(reference, logits.argmax(0)[None], 0)[0])
            flip_margin = float(margin[flipped].max()) if flipped.any() else 0.0
            worst = np.unravel_index(np.argmax(difference - bound), difference.shape)
            run.update(max_abs_logit_difference=float(difference.max()), argmax_agreement=float(1 - flipped.mean()),
                       argmax_flips=int(flipped.sum()), argmax_flip_max_margin=flip_margin,
                       exactness_bound=float(bound[worst[1:]]),
                       exact=bool((difference <= bound).all() and (margin[flipped] <= bound[flipped]).all()))


def add_throughput(runs: dict, rows: dict) -> None:
    """Achieved GFLOP/s: the network's GFLOPs per tile (the plans' patch, or the run's own tile) x tiles x forwards
    per tile / sliding-window seconds."""
    for label, run in runs.items():
        gflops = run.get("gflops_per_tile") or rows[label]["gflops_per_patch"]
        run["gflops_per_s"] = gflops * run["tiles"] * run["forwards_per_tile"] / run["predict_s"]


def ratios(runs: dict, rows: dict, student: str) -> dict:
    s = runs[student]
    teachers = [k for k, r in rows.items() if r["role"] == "teacher"]
    default = next(k for k, r in rows.items() if r["role"] == "nnU-Net default")
    out = {
        "speedup_vs_teachers_min": min(common.ratio(runs[t]["predict_s"], s["predict_s"]) for t in teachers),
        "speedup_vs_nnunet_default": common.ratio(runs[default]["predict_s"], s["predict_s"]),
        "memory_ratio_vs_teachers_min": min(common.ratio(runs[t]["peak_memory_bytes"], s["peak_memory_bytes"])
                                            for t in teachers),
        "memory_ratio_vs_nnunet_default": common.ratio(runs[default]["peak_memory_bytes"], s["peak_memory_bytes"]),
        "case_speedup_vs_teachers_min": min(common.ratio(runs[t]["case_s"], s["case_s"]) for t in teachers),
        "case_speedup_vs_nnunet_default": common.ratio(runs[default]["case_s"], s["case_s"]),
    }
    if "student (ONNX)" in runs:
        out["onnxruntime_cpu_speedup_vs_pytorch_student"] = common.ratio(s["predict_s"],
                                                                         runs["student (ONNX)"]["predict_s"])
    paths = {k: r for k, r in runs.items() if rows[k]["role"] == "student path"}
    if paths:  # CPU: the path `teachformer predict --device cpu` would take on this case (fastest exact one)
        exact = {k: r for k, r in paths.items() if r["exact"]}
        best = min(exact, key=lambda k: exact[k]["predict_s"]) if exact else student
        best_run = runs[best] if runs[best]["predict_s"] < s["predict_s"] else s
        fastest_teacher = min(teachers, key=lambda t: runs[t]["predict_s"])
        out.update({
            "fastest_exact_path": rows[best]["cpu_path"] if best_run is not s else "nnunet",
            "fastest_exact_path_speedup_vs_nnunet_path": common.ratio(s["predict_s"], best_run["predict_s"]),
            "fastest_exact_path_speedup_vs_teachers_min": common.ratio(runs[fastest_teacher]["predict_s"],
                                                                       best_run["predict_s"]),
            "fastest_exact_path_gflops_per_s_vs_fastest_teacher": common.ratio(
                best_run["gflops_per_s"], runs[fastest_teacher]["gflops_per_s"]),
        })
    return out


def print_volume(volume: str, result: dict, args) -> None:
    rows, student = result["models"], next(k for k, r in result["models"].items() if r["role"] == "student")
    for key, runs in result["runs"].items():
        s = runs[student]
        table = []
        for label, row in rows.items():
            r = runs[label]
            table.append([label, row["plans"], "x".join(map(str, r["patch_size"])), f"{row['parameters'] / 1e6:.2f}",
                          f"{r.get('gflops_per_tile') or row['gflops_per_patch']:.1f}", f"{r['tiles']}x{r['forwards_per_tile']}",
                          f"{r['predict_s']:.2f}", f"{r['case_s']:.2f}", f"{r['gflops_per_s']:.0f}",
                          f"{r['peak_memory_bytes'] / 2 ** 20:.0f}",
                          f"{common.ratio(r['predict_s'], s['predict_s']):.2f}",
                          f"{common.ratio(r['peak_memory_bytes'], s['peak_memory_bytes']):.2f}",
                          f"{r['max_abs_logit_difference']:.1e}" if "max_abs_logit_difference" in r else "",
                          f"{r['argmax_flips']}" if "argmax_flips" in r else "",
                          f"{r['argmax_flip_max_margin']:.1e}" if "argmax_flip_max_margin" in r else ""])
        where = "onnxruntime on CPU" if args.device == "cuda" else "all on CPU"
        where += f", {torch.get_num_threads()} CPU threads"
        print(f"\n{volume}: case {result['case']} ({len(result['files'])} channels), TTA {key[4:]}, {where}, "
              f"median of {args.repeats}\n")
        print(common.table(["model", "plans", "patch", "params M", "GFLOPs/tile", "tiles x fwd", "predict s",
                            "case s", "GFLOP/s", "peak MB", "x student time", "x student mem", "max |d logit|",
                            "argmax flips", "flip margin"], table))
        r = ratios(runs, rows, student)
        if "fastest_exact_path" in r:
            print(f"\nfastest exact path (every |d logit| and flip margin within {DEFAULT_TOLERANCE:g} + the float16 "
                  f"sums' bound at its voxel): {r['fastest_exact_path']}, "
                  f"{r['fastest_exact_path_speedup_vs_nnunet_path']:.2f}x nnU-Net's own path, "
                  f"{r['fastest_exact_path_speedup_vs_teachers_min']:.2f}x faster than the fastest teacher, "
                  f"{r['fastest_exact_path_gflops_per_s_vs_fastest_teacher']:.2f}x its GFLOP/s (goal >= 1)")
        print(f"\nstudent speedup: {r['speedup_vs_teachers_min']:.2f}x vs the fastest teacher, "
              f"{r['speedup_vs_nnunet_default']:.2f}x vs nnU-Net's default U-Net (goal >= 5); memory "
              f"{r['memory_ratio_vs_teachers_min']:.2f}x / {r['memory_ratio_vs_nnunet_default']:.2f}x lower "
              f"(goal >= 3)")
    if result["onnx"]:
        print(f"ONNX export: opset {result['onnx']['opset']}, max |logit difference| to PyTorch "
              f"{result['onnx']['max_abs_logit_difference']:.2e} (tolerance {result['onnx']['tolerance']:g})")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._child:
        spec = json.loads(args._child)
        Path(spec["result"]).write_text(json.dumps(run_child(spec)))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    common.set_threads(args.threads)
    info = common.machine(args.device)
    volumes = ["petct", "mri"] if args.volume == "both" else [args.volume]
    payload = {"benchmark": "inference", "machine": info,
               "settings": {"device": args.device, "tiny": args.tiny, "volumes": volumes, "tta": args.tta,
                            "repeats": args.repeats, "tile_step_size": 0.5, "fold": 0,
                            "weights": "untrained (cost does not depend on the values)",
                            "speedups": "ratio of sliding-window prediction times (case_* keys: wall time per case)"},
               "volumes": {}}
    with common.workspace(args.workdir):
        for volume in volumes:
            result = measure_volume(volume, args)
            student = next(k for k, r in result["models"].items() if r["role"] == "student")
            result["ratios"] = {key: ratios(runs, result["models"], student) for key, runs in result["runs"].items()}
            payload["volumes"][volume] = result
            print_volume(volume, result, args)

    first = payload["volumes"][volumes[0]]["ratios"]
    tta_key = "tta_off" if "tta_off" in first else "tta_on"
    headline = first[tta_key]
    payload.update(headline)
    common.write_json(args.json, payload)
    onnx = headline.get("onnxruntime_cpu_speedup_vs_pytorch_student")
    print(f"\nSUMMARY inference ({args.device}, {volumes[0]}, TTA {tta_key[4:]}, sliding-window time): student "
          f"speedup_vs_teachers_min {headline['speedup_vs_teachers_min']:.2f}, speedup_vs_nnunet_default "
          f"{headline['speedup_vs_nnunet_default']:.2f}, memory_ratio_vs_teachers_min "
          f"{headline['memory_ratio_vs_teachers_min']:.2f}" +
          (f", onnxruntime CPU {onnx:.2f}x the PyTorch student" if onnx else "") +
          (f", fastest exact CPU path {headline['fastest_exact_path']} "
           f"{headline['fastest_exact_path_speedup_vs_nnunet_path']:.2f}x nnU-Net's own path, GFLOP/s "
           f"{headline['fastest_exact_path_gflops_per_s_vs_fastest_teacher']:.2f}x the fastest teacher's"
           if "fastest_exact_path" in headline else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
