"""PI-CAI 2022 converter on small fabricated archives laid out like the public release.

The archives copy the public layout: ``[fold<k>/]<patient>/<patient>_<study>_{t2w,adc,hbv,sag,cor}.mha``
for the images (fold None: no fold folder, as when all archives are unpacked into one folder), and
picai_labels' ``csPCa_lesion_delineations/human_expert/resampled`` (ISUP grades) and ``AI/Bosma22a``
(binary) for the labels. As in the real data, T2W is fine in-plane with 3 mm slices and an
oblique direction, ADC and HBV are coarser with another origin and field of view, and labels lie on the
T2W grid. Lesions sit at a known physical point: dark in T2W and ADC, bright in HBV.
"""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
from picai_baseline.splits.picai import valid_splits

from conftest import console_script, run_cli
from nnunet_teachformer.conversion.picai22 import convert_picai22
from nnunet_teachformer.errors import TeachFormerError

MATRIX = (24, 48, 48)  # (z, y, x); the real default is 24x384x384
T2W_SIZE, T2W_SPACING = (64, 64, 19), (0.5, 0.5, 3.0)  # (x, y, z)
DWI_SIZE, DWI_SPACING = (22, 20, 19), (2.0, 2.0, 3.0)
ANGLE = np.deg2rad(12.6)  # oblique axial slices, tilted about x like the real T2W scans
DIRECTION = (1.0, 0.0, 0.0, 0.0, np.cos(ANGLE), np.sin(ANGLE), 0.0, -np.sin(ANGLE), np.cos(ANGLE))
T2W_ORIGIN = (-16.0, -30.0, 40.0)
LESION_INDEX = (33.0, 30.0, 9.0)  # continuous T2W index (x, y, z) of the lesion centre
CUT_LESION_INDEX = (-1.0, 30.0, 9.0)  # outside the 48-voxel in-plane crop

# case id -> (fold, label: "pos"/"neg" expert label, "ai" only an AI label, fault or None); ids that are real
# PI-CAI ids (10000_1000000, 10010_1000010 ...) sit in the fold picai_baseline's published splits give them
GOOD = {
    "10000_1000000": (0, "pos", None),
    "10000_1000001": (0, "neg", None),  # the same patient's second study, same fold
    "10001_1000002": (1, "pos", None),
    "10002_1000003": (2, "neg", None),
    "10003_1000004": (3, "pos", None),
    "10005_1000006": (4, "pos", None),
}
AI_ONLY = {"10004_1000005": (4, "ai", None)}
BAD = {  # case id -> (fold, label, fault), with the words its reason must contain
    "10010_1000010": (1, "pos", "no_adc"),
    "10011_1000011": (1, "pos", "label_value"),
    "10012_1000012": (4, "neg", "hbv_elsewhere"),
    "10013_1000013": (4, "pos", "hbv_nan"),
}
# one real PI-CAI case per fold: case id -> its fold in picai_baseline's published splits
PUBLISHED = {"10000_1000000": 0, "10008_1000008": 1, "10004_1000004": 2, "10009_1000009": 3, "10002_1000002": 4}
REASONS = {"no_adc": "missing ADC", "label_value": "unknown values 7", "hbv_elsewhere": "do not overlap",
           "hbv_nan": "NaN"}


def _image(array_zyx, spacing, origin, direction=DIRECTION):
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def _distance_to(image, point):
    """Per-voxel distance (mm) of the voxel centres of ``image`` to a physical point, as a (z, y, x) array."""
    size = image.GetSize()
    origin, spacing = np.array(image.GetOrigin()), np.array(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1)  # (x, y, z, 3)
    world = origin + (idx * spacing) @ direction.T
    return np.linalg.norm(world - point, axis=-1).transpose(2, 1, 0)


def _template(size, spacing, origin):
    return _image(np.zeros(tuple(reversed(size)), np.int16), spacing, origin)


def make_case(images, labels_root, case_id, fold, label_kind, fault=None):
    patient = case_id.split("_")[0]
    folder = (images if fold is None else images / f"fold{fold}") / patient
    folder.mkdir(parents=True, exist_ok=True)
    t2w = _template(T2W_SIZE, T2W_SPACING, T2W_ORIGIN)
    lesion_index = CUT_LESION_INDEX if fault == "cut_lesion" else LESION_INDEX
    lesion = np.array(t2w.TransformContinuousIndexToPhysicalPoint(lesion_index))
    seed = sum(map(ord, case_id))
    t2w_array = (300 + 20 * np.random.default_rng(seed).standard_normal(tuple(reversed(T2W_SIZE)))).astype(np.int16)
    d = _distance_to(t2w, lesion)
    t2w_array[d < 4] = 80
    t2w = _image(t2w_array, T2W_SPACING, T2W_ORIGIN)
    sitk.WriteImage(t2w, str(folder / f"{case_id}_t2w.mha"), useCompression=True)

    # ADC and HBV: coarser grid, other origin, larger field of view around the same anatomy
    dwi_origin = t2w.TransformContinuousIndexToPhysicalPoint((-6.0, -4.0, 0.0))
    if fault == "hbv_elsewhere":
        hbv_origin = tuple(np.array(dwi_origin) + np.array([500.0, 0.0, 0.0]))
    else:
        hbv_origin = dwi_origin
    adc = _template(DWI_SIZE, DWI_SPACING, dwi_origin)
    d = _distance_to(adc, lesion)
    if fault != "no_adc":
        adc_array = np.where(d < 5, 700, 1500).astype(np.int16)
        sitk.WriteImage(_image(adc_array, DWI_SPACING, dwi_origin), str(folder / f"{case_id}_adc.mha"), True)
    hbv_array = (10.0 + 40.0 * np.exp(-d ** 2 / (2 * 3.0 ** 2))).astype(np.float32)
    if fault == "hbv_nan":
        hbv_array[0, 0, :4] = np.nan
    sitk.WriteImage(_image(hbv_array, DWI_SPACING, hbv_origin), str(folder / f"{case_id}_hbv.mha"), True)
    for extra in ("sag", "cor"):  # the release's sagittal and coronal T2W, which the converter ignores
        small = _image(np.zeros((4, 8, 8), np.int16), (0.6, 0.6, 3.6), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
        sitk.WriteImage(small, str(folder / f"{case_id}_{extra}.mha"), True)

    mask = _distance_to(t2w, lesion) < 4
    ai = np.where(mask, 1, 0).astype(np.int8) if label_kind != "neg" else np.zeros(mask.shape, np.int8)
    ai_dir = labels_root / "csPCa_lesion_delineations" / "AI" / "Bosma22a"
    ai_dir.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(_image(ai, T2W_SPACING, T2W_ORIGIN), str(ai_dir / f"{case_id}.nii.gz"), True)
    if label_kind == "ai":
        return
    human = np.where(mask, 3, 0).astype(np.uint16) if label_kind == "pos" else np.zeros(mask.shape, np.uint16)
    if fault == "label_value":
        human[mask & (_distance_to(t2w, lesion) < 2)] = 7
    human_dir = labels_root / "csPCa_lesion_delineations" / "human_expert" / "resampled"
    human_dir.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(_image(human, T2W_SPACING, T2W_ORIGIN), str(human_dir / f"{case_id}.nii.gz"), True)


def make_archive(root, cases):
    images, labels = root / "picai_public_images", root / "picai_labels"
    for case_id, (fold, label_kind, fault) in cases.items():
        make_case(images, labels, case_id, fold, label_kind, fault)
    (labels / "clinical_information").mkdir(parents=True, exist_ok=True)
    (labels / "clinical_information" / "marksheet.csv").write_text(
        "patient_id,study_id,mri_date,patient_age,psa,psad,prostate_volume,histopath_type,lesion_PIRADS,"
        "lesion_GS,lesion_ISUP,case_ISUP,case_csPCa,center\n")
    return images, labels


def convert(images_dir, labels_dir, out, **kwargs):
    return convert_picai22(images_dir, labels_dir, dataset_id=502, out=out, progress=False, matrix_size=MATRIX,
                           **kwargs)


def test_geometry_channel_order_and_labels(tmp_path):
    images, labels = make_archive(tmp_path / "src", {**GOOD, **AI_ONLY})
    folder = convert(images, labels, tmp_path / "raw")
    assert folder == tmp_path / "raw" / "Dataset502_PICAI2022"
    assert sorted(os.listdir(folder / "labelsTr")) == sorted(f"{c}.nii.gz" for c in GOOD)  # AI-only left out
    assert sorted(os.listdir(folder / "imagesTr")) == sorted(f"{c}_000{k}.nii.gz" for c in GOOD for k in range(3))
    for case_id, (fold, kind, _) in GOOD.items():
        source = sitk.ReadImage(str(images / f"fold{fold}" / case_id.split("_")[0] / f"{case_id}_t2w.mha"))
        channels = [sitk.ReadImage(str(folder / "imagesTr" / f"{case_id}_000{k}.nii.gz")) for k in range(3)]
        label = sitk.ReadImage(str(folder / "labelsTr" / f"{case_id}.nii.gz"))
        # the T2W grid, centre-cropped in-plane (64 -> 48) and padded in z (19 -> 24 slices)
        origin = source.TransformContinuousIndexToPhysicalPoint((8.0, 8.0, -2.0))
        for image in channels + [label]:
            assert image.GetSize() == tuple(reversed(MATRIX))
            assert image.GetSpacing() == pytest.approx(T2W_SPACING)
            assert image.GetDirection() == pytest.approx(DIRECTION, abs=1e-6)
            assert image.GetOrigin() == pytest.approx(origin, abs=1e-4)
        t2w, adc, hbv = (sitk.GetArrayFromImage(i) for i in channels)
        # channel 0 is the T2W itself, cropped and padded without interpolation
        assert np.array_equal(t2w[2:21], sitk.GetArrayFromImage(source)[:, 8:56, 8:56])
        assert not t2w[:2].any() and not t2w[21:].any()
        # channels 1 and 2 are ADC (low in the lesion) and HBV (bright in it), resampled onto that grid
        lesion = np.array(source.TransformContinuousIndexToPhysicalPoint(LESION_INDEX))
        near = _distance_to(channels[0], lesion)
        assert adc[near < 1.5].mean() < 900 and 1300 < np.median(adc[2:21]) < 1700
        assert hbv[near < 1.5].mean() > 40 and np.median(hbv[2:21]) < 15
        lab = sitk.GetArrayFromImage(label)
        assert set(np.unique(lab)) <= {0, 1}
        if kind == "pos":
            assert lab.max() == 1 and near[lab == 1].max() < 4.5
        else:
            assert lab.max() == 0
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "T2W", "1": "ADC", "2": "HBV"}
    assert meta["labels"] == {"background": 0, "csPCa": 1}
    assert meta["numTraining"] == len(GOOD)
    assert meta["teachformer"]["unlabelled"] == list(AI_ONLY)
    assert sorted(meta["teachformer"]["cspca_positive"]) == sorted(c for c, v in GOOD.items() if v[1] == "pos")
    assert not (folder / "splits_final.json").exists()


def test_official_folds_and_ai_labels(tmp_path, capsys):
    images, labels = make_archive(tmp_path / "src", {**GOOD, **AI_ONLY})
    folder = convert(images, labels, tmp_path / "raw", labels="human+ai", splits="picai")
    cases = {**GOOD, **AI_ONLY}
    assert sorted(os.listdir(folder / "labelsTr")) == sorted(f"{c}.nii.gz" for c in cases)
    ai_label = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTr" / "10004_1000005.nii.gz")))
    assert ai_label.max() == 1
    splits = json.loads((folder / "splits_final.json").read_text())
    assert len(splits) == 5
    for k, fold in enumerate(splits):
        assert fold["val"] == sorted(c for c, v in cases.items() if v[0] == k)
        assert fold["train"] == sorted(c for c, v in cases.items() if v[0] != k)
    assert splits[0]["val"] == ["10000_1000000", "10000_1000001"]  # one patient, both studies, one fold
    out = capsys.readouterr().out
    assert "cases: 7 (5 with csPCa lesions); skipped 0" in out and "fold4 2" in out
    assert "shape (z, y, x): 24 x 48 x 48 (all 7 cases)" in out


def test_positives_only_keeps_the_lesion_cases(tmp_path):
    images, labels = make_archive(tmp_path / "src", GOOD)
    folder = convert(images, labels, tmp_path / "raw", positives_only=True)
    positives = sorted(c for c, v in GOOD.items() if v[1] == "pos")
    assert sorted(os.listdir(folder / "labelsTr")) == [f"{c}.nii.gz" for c in positives]
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["teachformer"]["negatives_left_out"] == sorted(set(GOOD) - set(positives))


def test_every_bad_case_is_listed_and_nothing_is_written(tmp_path):
    images, labels = make_archive(tmp_path / "src", {**GOOD, **BAD})
    result = run_cli([console_script("teachformer"), "convert", "picai22", images, labels, "--dataset-id", 502,
                      "--out", tmp_path / "raw"], check=False)
    assert result.returncode == 2, result.stderr
    message = result.stderr
    assert f"{len(BAD)} of {len(GOOD) + len(BAD)} PI-CAI cases have problems" in message and "--skip-bad" in message
    lines = {line.split(":")[0].strip(): line for line in message.splitlines() if line.startswith("  ")}
    assert set(lines) == set(BAD)
    for case_id, (_, _, fault) in BAD.items():
        assert REASONS[fault] in lines[case_id], lines[case_id]
    assert not (tmp_path / "raw").exists() or os.listdir(tmp_path / "raw") == []


def test_skip_bad_converts_the_rest(tmp_path):
    images, labels = make_archive(tmp_path / "src", {**GOOD, **BAD})
    folder = convert(images, labels, tmp_path / "raw", skip_bad=True, splits="picai")
    assert sorted(os.listdir(folder / "labelsTr")) == sorted(f"{c}.nii.gz" for c in GOOD)
    meta = json.loads((folder / "dataset.json").read_text())
    assert sorted(meta["teachformer"]["skipped"]) == sorted(BAD)
    splits = json.loads((folder / "splits_final.json").read_text())
    assert sorted(c for fold in splits for c in fold["val"]) == sorted(GOOD)
    assert os.listdir(tmp_path / "raw") == [folder.name]


def test_a_lesion_cut_by_the_crop_is_refused_by_picai_prep(tmp_path):
    images, labels = make_archive(tmp_path / "src", {**GOOD, "10020_1000020": (0, "pos", "cut_lesion")})
    with pytest.raises(TeachFormerError, match=r"10020_1000020: picai_prep refused it: .*1 -> 0"):
        convert(images, labels, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()  # the cases converted before were removed with the temporary folder
    folder = convert(images, labels, tmp_path / "raw", skip_bad=True)
    assert len(os.listdir(folder / "labelsTr")) == len(GOOD)


def test_overwrite_and_interruption(tmp_path, monkeypatch):
    from nnunet_teachformer.conversion import picai22

    images, labels = make_archive(tmp_path / "src", GOOD)
    folder = convert(images, labels, tmp_path / "raw")
    (folder / "marker").write_text("mine")
    with pytest.raises(TeachFormerError, match="--overwrite"):
        convert(images, labels, tmp_path / "raw")
    assert (folder / "marker").exists()

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(picai22, "convert_case", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert(images, labels, tmp_path / "raw", overwrite=True)
    assert os.listdir(tmp_path / "raw") == [folder.name] and (folder / "marker").exists()  # old dataset kept


def test_layout_errors_name_the_fix(tmp_path):
    images, labels = make_archive(tmp_path / "src", GOOD)
    with pytest.raises(TeachFormerError, match="picai_labels repository"):
        convert(images, tmp_path / "src", tmp_path / "raw")
    with pytest.raises(TeachFormerError, match="No PI-CAI scans"):
        convert(labels, labels, tmp_path / "raw")
    flat = tmp_path / "flat"  # all folds unpacked into one folder: no fold information left
    flat.mkdir()
    for patient in images.glob("fold*/*"):
        patient.rename(flat / patient.name)
    with pytest.raises(TeachFormerError, match="fold<k>"):
        convert(flat, labels, tmp_path / "raw", splits="picai")
    assert not (tmp_path / "raw").exists()


def test_flat_layout_takes_the_folds_of_picai_baselines_splits(tmp_path, capsys):
    assert all(case_id in valid_splits[k]["subject_list"] for case_id, k in PUBLISHED.items())
    images, labels = make_archive(tmp_path / "src", {c: (None, "pos", None) for c in PUBLISHED})
    assert sorted(p.name for p in images.iterdir()) == sorted(c.split("_")[0] for c in PUBLISHED)  # no fold<k>
    folder = convert(images, labels, tmp_path / "raw", splits="picai")
    splits = json.loads((folder / "splits_final.json").read_text())
    assert [fold["val"] for fold in splits] == [[c] for c in PUBLISHED]
    assert [fold["train"] for fold in splits] == [sorted(set(PUBLISHED) - {c}) for c in PUBLISHED]
    meta = json.loads((folder / "dataset.json").read_text())["teachformer"]
    assert meta["folds"] == PUBLISHED and meta["fold_source"] == "picai_baseline"
    assert "per fold (from picai_baseline): fold0 1, fold1 1, fold2 1, fold3 1, fold4 1" in capsys.readouterr().out


def test_a_fold_folder_that_contradicts_the_published_fold_is_a_problem(tmp_path):
    cases = {c: (k if k % 2 else None, "pos", None) for c, k in PUBLISHED.items()}  # fold1, fold3 in folders
    images, labels = make_archive(tmp_path / "src", {**cases, "10028_1000028": (2, "pos", None)})  # published: 3
    with pytest.raises(TeachFormerError, match=r"1 of 6 PI-CAI cases have problems(.|\n)*\n  10028_1000028: it is "
                                               r"in a fold2 folder \(\S*/fold2/10028\), but picai_baseline's "
                                               r"published splits put it in fold 3\n"):
        convert(images, labels, tmp_path / "raw", splits="picai")
    folder = convert(images, labels, tmp_path / "raw", splits="picai", skip_bad=True)
    meta = json.loads((folder / "dataset.json").read_text())["teachformer"]
    assert list(meta["skipped"]) == ["10028_1000028"]
    assert meta["folds"] == PUBLISHED and meta["fold_source"] == "mixed"
    splits = json.loads((folder / "splits_final.json").read_text())
    assert [fold["val"] for fold in splits] == [[c] for c in PUBLISHED]


def test_cases_outside_the_published_splits_have_no_fold(tmp_path):
    unknown = {"90000_9000000": (None, "pos", None), "90001_9000001": (None, "neg", None)}
    images, labels = make_archive(tmp_path / "src", unknown)
    with pytest.raises(TeachFormerError, match=r"^--splits picai needs the fold of every case, but 2 cases are "
                                               r"neither under a fold<k> folder nor in picai_baseline's published "
                                               r"splits .*\(e\.g\. 90000_9000000, 90001_9000001\)\. Put each "
                                               r"case's patient folder under IMAGES_DIR/fold<k>/ .* or convert "
                                               r"without --splits\.$"):
        convert(images, labels, tmp_path / "raw", splits="picai")
    assert not (tmp_path / "raw").exists()
    folder = convert(images, labels, tmp_path / "raw")
    meta = json.loads((folder / "dataset.json").read_text())["teachformer"]
    assert meta["folds"] == {c: None for c in unknown} and meta["fold_source"] is None
    assert not (folder / "splits_final.json").exists()


def test_output_passes_nnunet_verify_dataset_integrity(tmp_path, monkeypatch):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    images, labels = make_archive(tmp_path / "src", GOOD)
    verify_dataset_integrity(str(convert(images, labels, tmp_path / "nnUNet_raw")), num_processes=1)
