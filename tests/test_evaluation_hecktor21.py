"""`teachformer evaluate hecktor21`: predictions on the converted 1 mm crop scored on the original CT grid inside
each patient's bounding box, on fabricated challenge folders (CT 0.98 x 0.98 x 3 mm, another origin)."""
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import console_script, run_cli
from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.evaluation.hecktor21 import evaluate_hecktor21
from test_conversion_hecktor21 import CT_SPACING, GOOD_TRAIN, convert, make_archive


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("hecktor_eval")
    src = make_archive(root / "src")
    return src, convert(src, root / "raw")


def _predictions(converted, tmp_path, change=lambda case, label: label, cases=GOOD_TRAIN):
    """The converted labels, optionally changed per case, as a prediction folder."""
    out = tmp_path / "predictions"
    out.mkdir(parents=True)
    for case in cases:
        label = sitk.ReadImage(str(converted[1] / "labelsTr" / f"{case}.nii.gz"))
        changed = sitk.GetImageFromArray(change(case, sitk.GetArrayFromImage(label)))
        changed.CopyInformation(label)
        sitk.WriteImage(changed, str(out / f"{case}.nii.gz"))
    return out


def test_the_label_on_the_crop_scores_dsc_one_on_the_original_grid(converted, tmp_path):
    scores = evaluate_hecktor21(_predictions(converted, tmp_path), converted[0])
    assert [c.case for c in scores.cases] == sorted(GOOD_TRAIN)
    for c in scores.cases:  # nearest neighbour there and back loses at most a few boundary voxels
        assert c.dsc > 0.97 and c.recall > 0.95 and c.precision > 0.95 and c.hd95 <= CT_SPACING[2], c
    assert scores.mean_dsc > 0.98 and scores.median_hd95 <= 1.0 and scores.empty == 0


def test_shifted_empty_and_missing_predictions(converted, tmp_path):
    def change(case, label):
        if case == GOOD_TRAIN[0]:
            return np.zeros_like(label)
        return np.roll(label, 4, axis=2)  # 4 mm along x on the 1 mm crop

    scores = evaluate_hecktor21(_predictions(converted, tmp_path, change), converted[0])
    empty, shifted = scores.cases[0], scores.cases[1:]
    assert empty.case == sorted(GOOD_TRAIN)[0] == GOOD_TRAIN[0]
    assert (empty.dsc, empty.hd95, empty.empty) == (0.0, 0.0, True)  # the challenge's evaluator scores it so
    for c in shifted:  # a 6 mm-radius sphere moved by 4 mm: DSC about 0.5, HD95 about the shift
        assert 0.3 < c.dsc < 0.75 and 3.0 <= c.hd95 <= 5.0, c
    assert scores.mean_dsc == pytest.approx(np.mean([c.dsc for c in scores.cases]))
    assert "1 empty prediction(s)" in scores.table()

    (tmp_path / "predictions" / "CHXX999.nii.gz").write_bytes(b"")
    with pytest.raises(TeachFormerError, match="CHXX999.nii.gz: no such patient"):
        evaluate_hecktor21(tmp_path / "predictions", converted[0])


def test_a_prediction_off_the_crop_grid_is_refused_and_copying_the_header_fixes_it(converted, tmp_path):
    predictions = _predictions(converted, tmp_path)
    case = GOOD_TRAIN[0]
    lost = sitk.GetImageFromArray(sitk.GetArrayFromImage(sitk.ReadImage(str(predictions / f"{case}.nii.gz"))))
    sitk.WriteImage(lost, str(predictions / f"{case}.nii.gz"))  # saved from its array: origin 0, header lost
    with pytest.raises(TeachFormerError, match=rf"1 of {len(GOOD_TRAIN)} predictions cannot be scored(.|\n)*"
                                               rf"{case}.nii.gz: its grid is .* from origin \(0, 0, 0\) mm, not the "
                                               rf"converted 1 mm crop grid"):
        evaluate_hecktor21(predictions, converted[0])

    # the fix the message names: copy the header of the converted image into the prediction
    image = sitk.ReadImage(str(converted[1] / "imagesTr" / f"{case}_0000.nii.gz"))
    lost.CopyInformation(image)
    sitk.WriteImage(lost, str(predictions / f"{case}.nii.gz"))
    scores = evaluate_hecktor21(predictions, converted[0])
    assert scores.cases[0].case == case and scores.cases[0].dsc > 0.97


def test_another_crop_and_a_fractional_crop_are_on_the_grid(tmp_path):
    from nnunet_teachformer.conversion.hecktor21 import convert_hecktor21

    src = make_archive(tmp_path / "src", train=GOOD_TRAIN[:2])
    for crop in (30, 24.5):  # 24.5 mm: 24 voxels, the origin a quarter voxel from a 24 mm cube's
        dataset = convert_hecktor21(src, crop_mm=crop, out=tmp_path / f"raw{crop}", progress=False)
        scores = evaluate_hecktor21(_predictions((src, dataset), tmp_path / f"p{crop}", cases=GOOD_TRAIN[:2]), src)
        assert [c.case for c in scores.cases] == sorted(GOOD_TRAIN[:2]) and scores.mean_dsc > 0.97


@pytest.mark.slow  # two `teachformer evaluate` commands: ~10 s
def test_cli_prints_the_challenge_figures_and_writes_the_submission_grid(converted, tmp_path):
    predictions, back = _predictions(converted, tmp_path), tmp_path / "original_grid"
    out = run_cli([console_script("teachformer"), "evaluate", "hecktor21", "--predictions", predictions, "--source",
                   converted[0], "--resampled-out", back]).stdout
    assert f"HECKTOR 2021 protocol, {len(GOOD_TRAIN)} cases: mean DSC" in out, out
    for case in GOOD_TRAIN:
        ct = sitk.ReadImage(str(converted[0] / "hecktor_nii" / f"{case}_ct.nii.gz"))
        label = sitk.ReadImage(str(converted[0] / "hecktor_nii" / f"{case}_gtvt.nii.gz"))
        written = sitk.ReadImage(str(back / f"{case}.nii.gz"))
        assert written.GetSize() == ct.GetSize() and written.GetOrigin() == pytest.approx(ct.GetOrigin())
        assert written.GetSpacing() == pytest.approx(ct.GetSpacing())
        a, b = sitk.GetArrayFromImage(written) > 0, sitk.GetArrayFromImage(label) > 0
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.97

    shutil.rmtree(predictions)
    predictions.mkdir()
    error = run_cli([console_script("teachformer"), "evaluate", "hecktor21", "--predictions", predictions, "--source",
                     converted[0]], check=False)
    assert error.returncode == 2 and "no .nii.gz segmentation in" in error.stderr and "Traceback" not in error.stderr


def test_resampled_out_replaces_the_users_files_only_with_overwrite(converted, tmp_path):
    predictions, back = _predictions(converted, tmp_path), tmp_path / "original_grid"
    back.mkdir()
    mine = back / f"{GOOD_TRAIN[0]}.nii.gz"
    mine.write_bytes(b"an earlier submission")
    with pytest.raises(TeachFormerError, match="--resampled-out: 1 file"):
        evaluate_hecktor21(predictions, converted[0], resampled_out=back)
    assert mine.read_bytes() == b"an earlier submission" and len(list(back.iterdir())) == 1
    evaluate_hecktor21(predictions, converted[0], resampled_out=back, overwrite=True)  # the suggested fix
    assert sitk.ReadImage(str(mine)).GetSize() == sitk.ReadImage(
        str(converted[0] / "hecktor_nii" / f"{GOOD_TRAIN[0]}_ct.nii.gz")).GetSize()


def test_report_section_scores_each_model_from_the_recorded_source(converted, tmp_path):
    import json

    from nnunet_teachformer.evaluation.challenge import HECKTOR21, challenge_of, hecktor_section

    dataset_json = json.loads((converted[1] / "dataset.json").read_text())
    assert challenge_of(dataset_json) == HECKTOR21 and dataset_json["teachformer"]["source_folder"] == \
        str(converted[0].resolve())
    def by_case(folder):
        return {p.name[:-len(".nii.gz")]: p for p in folder.glob("*.nii.gz")}

    perfect = by_case(converted[1] / "labelsTr")
    empty = by_case(_predictions(converted, tmp_path, lambda case, label: np.zeros_like(label)))
    section = hecktor_section(dataset_json, {"perfect": perfect, "empty": empty})
    rows = {r["model"]: r for r in section.rows}
    assert rows["perfect"]["cases"] == len(GOOD_TRAIN) and rows["perfect"]["mean_dsc"] > 0.98
    assert rows["empty"]["mean_dsc"] == 0 and rows["empty"]["empty_predictions"] == len(GOOD_TRAIN)
    assert f"| perfect | {len(GOOD_TRAIN)} | {100 * rows['perfect']['mean_dsc']:.2f} |" in "\n".join(section.lines)

    moved = dict(dataset_json, teachformer=dict(dataset_json["teachformer"], source_folder=str(tmp_path / "gone")))
    assert "Not computed" in "\n".join(hecktor_section(moved, {"perfect": perfect}).lines)
