"""HECKTOR 2021 converter on small fabricated archives laid out like the challenge's.

The archives copy the public layout: ``hecktor2021_train/hecktor_nii/<ID>_{ct,pt,gtvt}.nii.gz`` with
``hecktor2021_bbox_training.csv`` (PatientID,x1,x2,y1,y2,z1,z2 in mm), and the test folder without labels
and with ``hecktor2021_bbox_testing.csv``. As in the real data, CT is fine in-plane with thick slices, PET
is coarser with another origin and field of view, and the GTVt lies on the CT grid. Every case has a
tumour at a known physical point, dense in CT and hot in PET, so the tests can check where it lands.
"""
import csv
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import console_script, run_cli
from nnunet_teachformer.conversion import hecktor21
from nnunet_teachformer.conversion.hecktor21 import convert_hecktor21
from nnunet_teachformer.errors import TeachFormerError

CROP_MM = 24
CT_SPACING = (0.98, 0.98, 3.0)  # x, y, z
PET_SPACING = (4.0, 4.0, 3.27)
GOOD_TRAIN = ["CHGJ001", "CHGJ002", "CHMR001", "CHUM001", "CHUM002", "CHUS001", "CHUP001"]
GOOD_TEST = ["CHUP101", "CHUV001"]
BAD = {  # patient id -> (fault, words the reported reason must contain)
    "CHMR002": ("no_pet", "missing PET"),
    "CHUS002": ("label_value", "unknown values 2"),
    "CHUM003": ("pet_elsewhere", "do not overlap"),
    "CHUP002": ("pet_nan", "NaN"),
    "CHGJ003": ("bbox_outside", "outside the CT"),
    "CHUS003": ("no_csv_row", "no row in hecktor2021_bbox_training.csv"),
}


def _tumour_centre(pid):
    """A per-case physical point (mm) inside every image, away from the grid's symmetry."""
    k = sum(map(ord, pid)) % 5
    return np.array([2.0 + k, -3.0 + 0.5 * k, 4.0 - k])


def _write(array_zyx, spacing, origin, path):
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(spacing)
    image.SetOrigin(tuple(float(o) for o in origin))
    sitk.WriteImage(image, str(path), useCompression=True)


def _physical_grid(size, spacing, origin):
    """World coordinates (z, y, x arrays) of the voxel centres of an identity-direction grid."""
    axes = [origin[i] + spacing[i] * np.arange(size[i]) for i in range(3)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    return z.T, y.T, x.T  # (z, y, x) array order


def make_case(folder, pid, fault=None, with_label=True):
    tumour = _tumour_centre(pid)
    ct_size, ct_origin = (48, 48, 20), np.array([-23.5, -23.5, -30.0])
    z, y, x = _physical_grid(ct_size, CT_SPACING, ct_origin)
    r2 = (x - tumour[0]) ** 2 + (y - tumour[1]) ** 2 + (z - tumour[2]) ** 2
    ct = np.where(x ** 2 + y ** 2 < 21 ** 2, 40, -1000).astype(np.int16)
    ct[r2 < 6 ** 2] = 200
    _write(ct, CT_SPACING, ct_origin, folder / f"{pid}_ct.nii.gz")
    if with_label:
        label = (r2 < 6 ** 2).astype(np.uint8)
        if fault == "label_value":
            label[r2 < 2 ** 2] = 2
        _write(label, CT_SPACING, ct_origin, folder / f"{pid}_gtvt.nii.gz")
    if fault == "no_pet":
        return
    pet_size, pet_origin = (16, 16, 24), np.array([-31.0, -33.0, -40.0])
    if fault == "pet_elsewhere":
        pet_origin = pet_origin + np.array([1000.0, 0.0, 0.0])
    z, y, x = _physical_grid(pet_size, PET_SPACING, pet_origin)
    pet = (1.0 + 9.0 * np.exp(-((x - tumour[0]) ** 2 + (y - tumour[1]) ** 2 + (z - tumour[2]) ** 2) / (2 * 4.0 ** 2))
           ).astype(np.float32)
    if fault == "pet_nan":
        pet[0, 0, :3] = np.nan
    _write(pet, PET_SPACING, pet_origin, folder / f"{pid}_pt.nii.gz")


def bbox_of(pid):
    """A 20 mm box near the tumour (deliberately not centred on it), like the challenge's automatic boxes."""
    centre = _tumour_centre(pid) + np.array([2.0, -1.0, 1.0])
    return centre - 10.0, centre + 10.0


def make_archive(root, train=GOOD_TRAIN, test=(), bad=()):
    """The challenge's folders under ``root``; returns the training folder (or the test folder if no training)."""
    parts = {"hecktor2021_train": ("hecktor2021_bbox_training.csv", list(train) + list(bad), True),
             "hecktor2021_test": ("hecktor2021_bbox_testing.csv", list(test), False)}
    for part, (csv_name, pids, labelled) in parts.items():
        if not pids:
            continue
        nii = root / part / "hecktor_nii"
        nii.mkdir(parents=True)
        with open(root / part / csv_name, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["PatientID", "x1", "x2", "y1", "y2", "z1", "z2"])
            for pid in pids:
                fault = BAD.get(pid, (None,))[0]
                make_case(nii, pid, fault, with_label=labelled)
                lo, hi = bbox_of(pid)
                if fault == "bbox_outside":
                    lo, hi = lo + 500.0, hi + 500.0
                if fault != "no_csv_row":
                    writer.writerow([pid, lo[0], hi[0], lo[1], hi[1], lo[2], hi[2]])
    return root / ("hecktor2021_train" if train or bad else "hecktor2021_test")


def convert(src, out, **kwargs):
    return convert_hecktor21(src, dataset_id=501, crop_mm=CROP_MM, out=out, progress=False, **kwargs)


def _physical_centroid(image, mask_zyx):
    idx = np.argwhere(mask_zyx).mean(axis=0)[::-1]  # (x, y, z) continuous index
    return np.array(image.TransformContinuousIndexToPhysicalPoint(idx.tolist()))


def test_training_cases_geometry_channels_and_labels(tmp_path):
    folder = convert(make_archive(tmp_path / "src"), tmp_path / "raw")
    assert folder == tmp_path / "raw" / "Dataset501_HECKTOR2021"
    assert sorted(os.listdir(folder / "imagesTr")) == sorted(f"{p}_000{c}.nii.gz" for p in GOOD_TRAIN for c in (0, 1))
    assert sorted(os.listdir(folder / "labelsTr")) == sorted(f"{p}.nii.gz" for p in GOOD_TRAIN)
    assert not (folder / "splits_final.json").exists()
    for pid in GOOD_TRAIN:
        ct = sitk.ReadImage(str(folder / "imagesTr" / f"{pid}_0000.nii.gz"))
        pet = sitk.ReadImage(str(folder / "imagesTr" / f"{pid}_0001.nii.gz"))
        label = sitk.ReadImage(str(folder / "labelsTr" / f"{pid}.nii.gz"))
        lo, hi = bbox_of(pid)
        for image in (ct, pet, label):  # one shared 1 mm grid: the crop cube centred on the bounding box
            assert image.GetSize() == (CROP_MM,) * 3
            assert image.GetSpacing() == pytest.approx((1.0, 1.0, 1.0))
            assert image.GetOrigin() == pytest.approx(tuple((lo + hi) / 2 - CROP_MM / 2))
            assert image.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
        ct_a, pet_a, lab_a = (sitk.GetArrayFromImage(i) for i in (ct, pet, label))
        # channel order: _0000 is the CT in HU (air, tissue, dense tumour), _0001 the PET in SUV
        assert ct_a.dtype == np.int16 and ct_a.min() < -500 and 150 < ct_a.max() < 260
        assert pet_a.dtype == np.float32 and 0.5 < np.median(pet_a) < 2.5 and pet_a.max() > 6
        assert set(np.unique(lab_a)) == {0, 1}
        # the tumour lands at its physical place in every channel: PET was resampled onto the CT's cube
        tumour = _tumour_centre(pid)
        assert np.linalg.norm(_physical_centroid(label, lab_a == 1) - tumour) < 1.0
        assert np.linalg.norm(_physical_centroid(ct, ct_a > 170) - tumour) < 1.0
        assert np.linalg.norm(_physical_centroid(pet, pet_a > 0.8 * pet_a.max()) - tumour) < 1.5
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT", "1": "PET"}
    assert meta["labels"] == {"background": 0, "GTVt": 1}
    assert meta["numTraining"] == len(GOOD_TRAIN)
    assert meta["teachformer"]["centres"] == {p: p[:4] for p in GOOD_TRAIN}


def test_centre_splits_from_the_command_line(tmp_path):
    src = make_archive(tmp_path / "src")
    result = run_cli([console_script("teachformer"), "convert", "hecktor21", src, "--dataset-id", 501, "--crop",
                      CROP_MM, "--out", tmp_path / "raw", "--splits", "centre"])
    assert "7 training" in result.stdout and "centres: CHGJ 2, CHMR 1, CHUM 2, CHUP 1, CHUS 1" in result.stdout
    splits = json.loads((tmp_path / "raw" / "Dataset501_HECKTOR2021" / "splits_final.json").read_text())
    assert len(splits) == 5  # five training centres: leave one centre out
    assert sorted(c for fold in splits for c in fold["val"]) == sorted(GOOD_TRAIN)
    for fold in splits:
        assert sorted(fold["train"] + fold["val"]) == sorted(GOOD_TRAIN)
        assert not {c[:4] for c in fold["train"]} & {c[:4] for c in fold["val"]}
        assert len({c[:4] for c in fold["val"]}) == 1


def test_random_splits_are_nnunets_own(tmp_path):
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    folder = convert(make_archive(tmp_path / "src"), tmp_path / "raw", splits="random")
    splits = json.loads((folder / "splits_final.json").read_text())
    expected = generate_crossval_split(sorted(GOOD_TRAIN), seed=12345, n_splits=5)
    assert splits == [{k: [str(c) for c in v] for k, v in fold.items()} for fold in expected]


def test_centre_split_packs_more_centres_than_folds():
    centres = {f"{c}{i:03d}": c for c in hecktor21.CENTRES for i in range(3 if c == "CHUS" else 2)}
    splits = hecktor21.centre_splits(centres)
    assert len(splits) == 5
    for fold in splits:
        assert not {c[:4] for c in fold["train"]} & {c[:4] for c in fold["val"]}
    with pytest.raises(TeachFormerError, match="at least two centres"):
        hecktor21.centre_splits({"CHUS001": "CHUS", "CHUS002": "CHUS"})


def test_every_bad_case_is_listed_and_nothing_is_written(tmp_path):
    src = make_archive(tmp_path / "src", bad=BAD)
    with pytest.raises(TeachFormerError) as err:
        convert(src, tmp_path / "raw")
    message = str(err.value)
    assert f"{len(BAD)} of {len(BAD) + len(GOOD_TRAIN)}" in message and "--skip-bad" in message
    lines = {line.split(":")[0].strip(): line for line in message.splitlines() if line.startswith("  ")}
    assert set(lines) == set(BAD)
    for pid, (_, reason) in BAD.items():
        assert reason in lines[pid], lines[pid]
    assert not (tmp_path / "raw").exists()  # no dataset, no temporary folder, not even the folder it made


def test_skip_bad_converts_the_rest(tmp_path, capsys):
    folder = convert(make_archive(tmp_path / "src", bad=BAD), tmp_path / "raw", skip_bad=True)
    assert sorted(os.listdir(folder / "labelsTr")) == sorted(f"{p}.nii.gz" for p in GOOD_TRAIN)
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["numTraining"] == len(GOOD_TRAIN)
    assert sorted(meta["teachformer"]["skipped"]) == sorted(BAD)
    out = capsys.readouterr().out
    assert f"Skipping {len(BAD)} of" in out and "skipped 6" in out
    assert "shape (z, y, x): 24 x 24 x 24 (all 7 cases)" in out and "spacing (z, y, x): 1 x 1 x 1 mm" in out
    assert os.listdir(tmp_path / "raw") == [folder.name]


def test_existing_dataset_is_kept_without_overwrite(tmp_path):
    src = make_archive(tmp_path / "src")
    folder = convert(src, tmp_path / "raw")
    (folder / "marker").write_text("mine")
    with pytest.raises(TeachFormerError, match="--overwrite"):
        convert(src, tmp_path / "raw")
    assert (folder / "marker").read_text() == "mine"
    convert(src, tmp_path / "raw", overwrite=True)
    assert not (folder / "marker").exists() and (folder / "dataset.json").is_file()
    assert os.listdir(tmp_path / "raw") == [folder.name]


def test_interrupted_conversion_leaves_no_folder(tmp_path, monkeypatch):
    src = make_archive(tmp_path / "src")
    real, calls = hecktor21.convert_case, []

    def interrupt_third(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(hecktor21, "convert_case", interrupt_third)
    with pytest.raises(KeyboardInterrupt):
        convert(src, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_test_layout_without_labels_and_both_layouts_together(tmp_path):
    root = tmp_path / "src"
    make_archive(root, test=GOOD_TEST)
    folder = convert(root / "hecktor2021_test", tmp_path / "raw_test")
    assert sorted(os.listdir(folder / "imagesTs")) == sorted(f"{p}_000{c}.nii.gz" for p in GOOD_TEST for c in (0, 1))
    assert os.listdir(folder / "labelsTr") == [] and os.listdir(folder / "imagesTr") == []
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["numTraining"] == 0 and meta["teachformer"]["centres"] == {"CHUP101": "CHUP", "CHUV001": "CHUV"}
    pet = sitk.ReadImage(str(folder / "imagesTs" / "CHUV001_0001.nii.gz"))
    assert pet.GetSize() == (CROP_MM,) * 3
    with pytest.raises(TeachFormerError, match="only the test set"):
        convert(root / "hecktor2021_test", tmp_path / "raw_test2", splits="centre")

    both = convert(root, tmp_path / "raw_both", splits="centre")  # the folder holding train and test
    assert len(os.listdir(both / "labelsTr")) == len(GOOD_TRAIN)
    assert len(os.listdir(both / "imagesTs")) == 2 * len(GOOD_TEST)
    splits = json.loads((both / "splits_final.json").read_text())
    assert sorted(c for fold in splits for c in fold["val"]) == sorted(GOOD_TRAIN)  # test cases stay out


def test_unusable_inputs_name_the_fix(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TeachFormerError, match="hecktor2021_bbox_training.csv"):
        convert(tmp_path / "empty", tmp_path / "raw")
    src = make_archive(tmp_path / "src")
    (src / "hecktor2021_bbox_training.csv").write_text("PatientID,x1,y1\nCHGJ001,0,0\n")
    with pytest.raises(TeachFormerError, match="lacks the column"):
        convert(src, tmp_path / "raw")
    monkeypatch.delenv("nnUNet_raw", raising=False)
    with pytest.raises(TeachFormerError, match="nnUNet_raw"):
        convert_hecktor21(src, progress=False)


def test_output_passes_nnunet_verify_dataset_integrity(tmp_path, monkeypatch):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    folder = convert(make_archive(tmp_path / "src", test=GOOD_TEST), tmp_path / "nnUNet_raw")
    verify_dataset_integrity(str(folder), num_processes=1)
