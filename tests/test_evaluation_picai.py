"""`teachformer evaluate picai22`: nnU-Net probabilities (npz) scored with picai_eval, on fabricated cases
whose answer is known: a perfect detector, a random one, a missed lesion, all-positive cases, broken files."""
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import console_script, run_cli
from nnunet_teachformer.cli import main
from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.evaluation.picai import NO_NEGATIVE, bootstrap_ci, compare, evaluate_picai22

SHAPE = (6, 24, 24)  # (z, y, x)
LESION = (2, 4, 4)  # 32 voxels: above extract_lesion_candidates' 10-voxel minimum
CASES = 48  # every other one with a csPCa lesion
RESAMPLES = 200


def _box(corner, size=LESION):
    mask = np.zeros(SHAPE, bool)
    mask[tuple(slice(c, c + s) for c, s in zip(corner, size))] = True
    return mask


def _corner(rng):
    return tuple(int(rng.integers(0, n - s + 1)) for n, s in zip(SHAPE, LESION))


def _write_label(folder, case, mask):
    folder.mkdir(exist_ok=True)
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing((0.5, 0.5, 3.0))
    sitk.WriteImage(image, str(folder / f"{case}.nii.gz"), useCompression=True)


def _write_probabilities(folder, case, cspca):
    """nnU-Net's --save_probabilities file: key "probabilities", (classes, z, y, x)."""
    folder.mkdir(exist_ok=True)
    cspca = cspca.astype(np.float32)
    np.savez_compressed(folder / f"{case}.npz", probabilities=np.stack([1 - cspca, cspca]))


def _detector(masks, confidence=0.95, background=0.001):
    return np.where(masks, confidence, background)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Labels (every other case positive) and two prediction folders for them: a perfect detector (0.95 on each
    lesion, 0.001 elsewhere) and a random one (a lesion-sized blob of random confidence at a random place)."""
    root = tmp_path_factory.mktemp("picai_eval")
    rng = np.random.default_rng(7)
    labels, perfect, random = root / "labelsTr", root / "perfect", root / "random"
    for i in range(CASES):
        case = f"10{i:03d}_11{i:03d}"
        lesion = _box(_corner(rng)) if i % 2 == 0 else np.zeros(SHAPE, bool)
        _write_label(labels, case, lesion)
        _write_probabilities(perfect, case, _detector(lesion))
        _write_probabilities(random, case, _detector(_box(_corner(rng)), confidence=rng.uniform(0.05, 0.95)))
    return {"labels": labels, "perfect": perfect, "random": random}


@pytest.fixture(scope="module")
def scored(study):
    return {k: evaluate_picai22(study[k], study["labels"]) for k in ("perfect", "random")}


def test_a_perfect_detector_scores_one(scored):
    s = scored["perfect"]
    assert (len(s.cases), s.positives, s.negatives) == (CASES, CASES // 2, CASES // 2)
    assert s.auroc == 1.0 and s.ap == 1.0 and s.score == 1.0
    for c in s.cases:
        if c.positive:  # the lesion is the one candidate, at its probability
            assert (c.lesions, c.detected, c.false_positives) == (1, 1, 0), c
            assert c.confidence == pytest.approx(0.95) and c.lesion_results[0][2] == pytest.approx(1.0)
        else:  # 0.001 everywhere: no lesion candidate at all
            assert (c.lesions, c.false_positives, c.confidence, c.lesion_results) == (0, 0, 0.0, ()), c
    ci = bootstrap_ci(s, resamples=RESAMPLES)
    assert ci.auroc == ci.ap == ci.score == (1.0, 1.0) and ci.skipped == {"auroc": 0, "ap": 0, "score": 0}
    assert "| AUROC (case level) | 1.0000 | 1.0000 – 1.0000 |" in s.table(ci)


def test_a_random_detector_is_at_chance_and_its_ci_is_picai_evals_own(scored):
    s = scored["random"]
    assert 0.3 < s.auroc < 0.7, s.auroc
    assert s.ap < 0.5 and s.score < 0.6, (s.ap, s.score)
    ci = bootstrap_ci(s, resamples=RESAMPLES, seed=3)
    assert ci.auroc[0] < 0.5 < ci.auroc[1] and ci.ap[0] <= s.ap <= ci.ap[1] and ci.score[0] < s.score < ci.score[1]
    official = s.metrics.bootstrap_score_ci(n_bootstraps=RESAMPLES, seed=3)  # picai_eval's own bootstrap
    for ours, theirs in ((ci.auroc, "auroc_95_ci"), (ci.ap, "ap_95_ci"), (ci.score, "score_95_ci")):
        assert ours == pytest.approx(tuple(official[theirs]), abs=1e-12)
    assert bootstrap_ci(s, resamples=RESAMPLES, seed=3) == ci  # seeded


def test_a_missed_lesion_and_a_false_positive_give_the_known_figures(tmp_path):
    """Lesions found at 0.95 in two cases, missed (all 0) in a third; a negative case with a 0.5 false positive:
    AP = 2/3 (recall 2/3 at precision 1) and AUROC = 2/3 (two of the three positives rank above the negative)."""
    labels, predictions = tmp_path / "labels", tmp_path / "predictions"
    for i in range(3):
        lesion = _box((2, 4 + 5 * i, 6))
        _write_label(labels, f"pos{i}", lesion)
        _write_probabilities(predictions, f"pos{i}", _detector(lesion) if i < 2 else np.zeros(SHAPE))
    _write_label(labels, "neg", np.zeros(SHAPE, bool))
    _write_probabilities(predictions, "neg", _detector(_box((0, 15, 15)), confidence=0.5))
    s = evaluate_picai22(predictions, labels)
    assert s.ap == pytest.approx(2 / 3) and s.auroc == pytest.approx(2 / 3) and s.score == pytest.approx(2 / 3)
    missed = next(c for c in s.cases if c.case == "pos2")
    assert (missed.lesions, missed.detected, missed.missed, missed.confidence) == (1, 0, 1, 0.0)
    assert next(c for c in s.cases if c.case == "neg").false_positives == 1


def test_all_positive_cases_leave_auroc_and_the_score_undefined(study, scored, capsys):
    positives = [c.case for c in scored["perfect"].cases if c.positive]
    s = evaluate_picai22(study["perfect"], study["labels"], cases=positives)
    assert s.auroc is None and s.score is None and s.ap == 1.0
    ci = bootstrap_ci(s, resamples=RESAMPLES)
    assert ci.auroc is None and ci.score is None and ci.ap == (1.0, 1.0)
    table = s.table(ci)
    for row in ("| AUROC (case level) |", "| Ranking score (AUROC + AP) / 2 |"):
        line = next(line for line in table.splitlines() if line.startswith(row))
        assert line.count(NO_NEGATIVE) == 2 and not any(ch.isdigit() for ch in line.replace("AUROC + AP) / 2", ""))
    assert "| AP (lesion level) | 1.0000 | 1.0000 – 1.0000 |" in table
    assert f"AUROC {NO_NEGATIVE}" in str(s) and f"ranking score {NO_NEGATIVE}" in str(s)
    difference = compare(s, s, resamples=20)
    assert difference.score.difference is None and difference.ap.difference == 0.0
    assert difference.table().count(NO_NEGATIVE) >= 10

    # the command prints the same
    assert main(["evaluate", "picai22", "--predictions", str(study["perfect"]), "--labels", str(study["labels"]),
                 "--cases", *positives, "--resamples", "20"]) == 0
    out = capsys.readouterr().out
    assert out.count(NO_NEGATIVE) == 4 and "| Positives (csPCa) | 24 (24 lesions) | |" in out, out


def test_the_paired_comparison_favours_the_perfect_detector(scored):
    c = compare(scored["perfect"], scored["random"], resamples=RESAMPLES)
    assert c.score.difference == pytest.approx(scored["perfect"].score - scored["random"].score)
    assert c.score.difference > 0.3 and c.score.ci[0] > 0 and c.score.p_value < 0.05
    assert c.auroc.ci[0] > 0 and c.ap.ci[0] > 0
    same = compare(scored["random"], scored["random"], resamples=RESAMPLES)
    assert same.score.difference == 0.0 and same.score.ci == (0.0, 0.0) and same.score.p_value == 1.0
    reverse = compare(scored["random"], scored["perfect"], resamples=RESAMPLES)
    assert reverse.score.ci == pytest.approx((-c.score.ci[1], -c.score.ci[0]))


def test_comparing_different_cases_is_refused(study, scored):
    fewer = evaluate_picai22(study["random"], study["labels"], cases=[c.case for c in scored["random"].cases[:10]])
    with pytest.raises(TeachFormerError, match="not scored on the same cases"):
        compare(scored["perfect"], fewer)


def test_broken_inputs_name_the_file_and_the_fix(study, scored, tmp_path):
    predictions = tmp_path / "predictions"
    cases = [c.case for c in scored["perfect"].cases[:4]]
    for case in cases:
        (predictions / f"{case}.npz").parent.mkdir(exist_ok=True)
        (predictions / f"{case}.npz").write_bytes((study["perfect"] / f"{case}.npz").read_bytes())
    _write_probabilities(predictions, cases[0], np.zeros((6, 24, 20)))  # another grid
    (predictions / f"{cases[1]}.npz").write_bytes(b"not a zip")
    np.savez_compressed(predictions / f"{cases[2]}.npz", seg=np.zeros(SHAPE))  # not probabilities
    with pytest.raises(TeachFormerError) as error:
        evaluate_picai22(predictions, study["labels"], cases=cases + ["99999_99999"])
    message = str(error.value)
    assert message.startswith("4 of 5 cases cannot be scored")
    assert f"{predictions / cases[0]}.npz holds probabilities on a 6x24x20" in message and "is 6x24x24" in message
    assert f"{predictions / cases[1]}.npz cannot be read" in message
    assert f"{predictions / cases[2]}.npz has no 'probabilities' array" in message
    assert f"no prediction {predictions / '99999_99999.npz'}" in message
    assert f"no label {study['labels'] / '99999_99999.nii.gz'}" in message
    assert cases[3] + ":" not in message  # the good case is not listed

    with pytest.raises(TeachFormerError, match="no .npz probabilities in .*--save_probabilities"):
        evaluate_picai22(tmp_path, study["labels"])

    # a header that reads over data that does not (the zip's checksum fails): found when picai_eval reads it
    case = cases[3]
    cspca = np.full(SHAPE, 0.5, np.float32)
    np.savez(predictions / f"{case}.npz", probabilities=np.stack([1 - cspca, cspca]))  # stored, not compressed
    data = bytearray((predictions / f"{case}.npz").read_bytes())
    data[2000:2100] = bytes(100)
    (predictions / f"{case}.npz").write_bytes(bytes(data))
    with pytest.raises(TeachFormerError, match=f"{case}.npz cannot be read .*header is intact but its data is not"):
        evaluate_picai22(predictions, study["labels"], cases=[case])


def test_labels_other_than_0_and_1_are_refused_and_binarising_them_fixes_it(study, tmp_path):
    """ISUP-graded delineations (picai_labels' expert labels) would be scored as binary without a word."""
    cases = sorted(p.name[:-len(".nii.gz")] for p in study["labels"].iterdir())[:4]
    labels = tmp_path / "labels"
    for case in cases:
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(study["labels"] / f"{case}.nii.gz")))
        _write_label(labels, case, mask * 3)  # ISUP 3 where the lesion is
    graded = [c for c in cases if sitk.GetArrayFromImage(sitk.ReadImage(str(labels / f"{c}.nii.gz"))).any()]
    with pytest.raises(TeachFormerError) as error:
        evaluate_picai22(study["perfect"], labels, cases=cases)
    message = str(error.value)
    assert message.startswith(f"{len(graded)} of {len(cases)} cases cannot be scored") and graded, message
    assert f"{labels / graded[0]}.nii.gz holds the label values 0, 3, not 0 and 1" in message
    assert "set every lesion voxel to 1" in message

    for case in graded:  # the fix the message names
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(labels / f"{case}.nii.gz")))
        _write_label(labels, case, mask > 0)
    scores = evaluate_picai22(study["perfect"], labels, cases=cases)
    assert scores.positives == len(graded) and scores.ap == pytest.approx(1.0)


def test_cli_prints_the_figures_and_a_clean_error(study, tmp_path):
    out = run_cli([console_script("teachformer"), "evaluate", "picai22", "--predictions", study["perfect"],
                   "--labels", study["labels"], "--compare", study["random"], "--resamples", RESAMPLES])
    assert out.stderr.strip() == "", out.stderr
    for line in ("| Cases | 48 | |", "| Positives (csPCa) | 24 (24 lesions) | |",
                 "| AUROC (case level) | 1.0000 | 1.0000 – 1.0000 |",
                 "| AP (lesion level) | 1.0000 | 1.0000 – 1.0000 |",
                 "| Ranking score (AUROC + AP) / 2 | 1.0000 | 1.0000 – 1.0000 |", f"{RESAMPLES} resamples, seed 0"):
        assert line in out.stdout, out.stdout
    assert "| Ranking score | 1.0000 | 0." in out.stdout, out.stdout  # the comparison with the random detector
    assert "Please cite" not in out.stdout and "feel free to open an issue" not in out.stdout  # import banners

    labels = tmp_path / "labels"
    labels.mkdir()
    for f in sorted(study["labels"].iterdir())[1:]:
        (labels / f.name).write_bytes(f.read_bytes())
    missing = sorted(study["labels"].iterdir())[0]
    error = run_cli([console_script("teachformer"), "evaluate", "picai22", "--predictions", study["perfect"],
                     "--labels", labels], check=False)
    assert error.returncode == 2 and "Traceback" not in error.stderr, error.stderr
    assert f"no label {labels / missing.name}" in error.stderr and "1 of 48 cases cannot be scored" in error.stderr


def test_report_section_scores_each_model_across_folds_against_the_reference(study, tmp_path):
    from nnunet_teachformer.evaluation.challenge import PICAI22, challenge_of, report_section

    def model(name, source, missing=()):
        """A model whose validation segmentations (and npz beside them) are spread over two fold folders."""
        files = {}
        for i, npz in enumerate(sorted(source.glob("*.npz"))):
            case = npz.name[:-len(".npz")]
            folder = tmp_path / name / f"fold_{i % 2}" / "validation"
            folder.mkdir(parents=True, exist_ok=True)
            if case not in missing:
                (folder / npz.name).symlink_to(npz)
            files[case] = folder / f"{case}.nii.gz"
        return files

    dataset_json = {"teachformer": {"source": "PI-CAI 2022 public training"}}
    assert challenge_of(dataset_json) == PICAI22
    first = sorted(p.name[:-len(".npz")] for p in study["perfect"].glob("*.npz"))[0]
    predictions = {"perfect": model("perfect", study["perfect"]), "random": model("random", study["random"]),
                   "no npz": model("no_npz", study["random"], missing=[first])}
    section = report_section(dataset_json, predictions, study["labels"], reference="perfect")
    rows = {r["model"]: r for r in section.rows}
    assert set(rows) == {"perfect", "random"} and rows["perfect"]["cases"] == CASES
    assert rows["perfect"]["ranking_score"] == 1.0 and rows["random"]["ranking_score"] < 0.8
    text = "\n".join(section.lines)
    assert "| perfect | 48 | 24 | 1.0000 [1.0000 – 1.0000] |" in text and "| reference |" in text
    random_line = next(line for line in text.splitlines() if line.startswith("| random |"))
    assert ", p = " in random_line and "| +" in random_line  # reference - random > 0
    assert "| no npz | 48 | - | not computed: 1 validation case(s) have no probabilities" in text
