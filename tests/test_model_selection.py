"""nnU-Net's model selection on our results: `nnUNetv2_find_best_configuration` (with a baseline + student
ensemble), its postprocessing through `nnUNetv2_apply_postprocessing`, and `teachformer predict` applying it.

Runs on copies of the session's baseline and distilled student (trained by `teachformer train`, so with --npz),
so that the crossval/ensemble folders these commands write stay out of the other tests' models."""
import json
import os
import shutil

import numpy as np
import SimpleITK as sitk

from conftest import CONFIG, DATASET_ID, DATASET_NAME, STUDY_TRAINERS, TEACHFORMER_PLANS, console_script, run_cli

BASELINE, STUDENT = STUDY_TRAINERS


def _find_best(env, *trainers):
    return run_cli([console_script("nnUNetv2_find_best_configuration"), DATASET_ID, "-c", CONFIG, "-p",
                    TEACHFORMER_PLANS, "-tr", *trainers, "-f", 0, "-np", 1], env=env).stdout


def test_find_best_configuration_ensembles_and_postprocesses_our_models(trained, phantom, tmp_path):
    results = tmp_path / "results"
    for trainer in STUDY_TRAINERS:
        source = trained["folders"][trainer]
        assert list((source / "fold_0" / "validation").glob("*.npz")), f"{trainer}: no --npz validation output"
        shutil.copytree(source, results / DATASET_NAME / source.name)
    env = dict(os.environ, nnUNet_results=str(results))

    out = _find_best(env, BASELINE, STUDENT)
    info = json.loads((results / DATASET_NAME / "inference_information.json").read_text())
    names = set(info["all_results"])
    assert {f"{t}__{TEACHFORMER_PLANS}__{CONFIG}" for t in STUDY_TRAINERS} <= names, names
    ensembles = [n for n in names if n.startswith("ensemble")]
    assert len(ensembles) == 1 and all(0 <= v <= 1 for v in info["all_results"].values()), info["all_results"]
    assert len(list((results / DATASET_NAME / "ensembles" / ensembles[0]).glob("*.nii.gz"))) == 2  # fold 0's cases
    assert os.path.isfile(info["best_model_or_ensemble"]["postprocessing_file"])
    assert "nnUNetv2_apply_postprocessing" in out

    # the student alone: its own postprocessing, which `teachformer predict` then applies
    _find_best(env, STUDENT)
    pp_file = results / DATASET_NAME / f"{STUDENT}__{TEACHFORMER_PLANS}__{CONFIG}" / "crossval_results_folds_0" / \
        "postprocessing.pkl"
    assert pp_file.is_file()

    def predict(output, *extra):
        return run_cli([console_script("teachformer"), "predict", "-i", phantom / "imagesTs", "-o", output, "-d",
                        DATASET_ID, "-f", 0, "-tr", STUDENT, "--device", "cpu", "--cpu-path", "nnunet",
                        "--disable-tta", *extra], env=env).stdout

    raw, post, expected = tmp_path / "raw", tmp_path / "post", tmp_path / "expected"
    assert "Postprocessing" not in predict(raw, "--no-postprocessing")
    printed = predict(post)
    assert f"Postprocessing chosen by nnUNetv2_find_best_configuration ({pp_file})" in printed, printed
    run_cli([console_script("nnUNetv2_apply_postprocessing"), "-i", raw, "-o", expected, "-pp_pkl_file", pp_file,
             "-np", 1, "-plans_json", pp_file.parent / "plans.json"], env=env)
    cases = sorted(p.name for p in expected.glob("*.nii.gz"))
    assert len(cases) == len(list((phantom / "imagesTs").glob("*_0000.nii.gz")))
    for case in cases:
        want, got = (sitk.GetArrayFromImage(sitk.ReadImage(str(folder / case))) for folder in (expected, post))
        assert np.array_equal(want, got), case
