"""Every ``teachformer`` subcommand answers ``--help``, takes nnU-Net's spellings of its flags, and runs its main path
without SLURM on the session's trained models. The main paths that write results are tested where their results are
checked: convert (test_conversion_*), plan (test_planner), predict (test_e2e, test_cpu_inference), report
(test_report), export (test_export, test_sharing), evaluate (test_evaluation_*), demo (test_demo), distill end to
end (test_adopt); here the rest, and each of them through the real console script."""
import argparse

import pytest

from conftest import CONFIG, DATASET_ID, TEACHFORMER_PLANS, console_script, run_cli
from nnunet_teachformer.cli import NNUNET_SPELLINGS, build_parser, main


def _subcommands(parser=None, prefix=()):
    """Every leaf subcommand of the parser, e.g. ("convert", "synthetic")."""
    parser = parser or build_parser()
    sub = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not sub:
        return [prefix]
    return [leaf for name, p in sub[0].choices.items() for leaf in _subcommands(p, prefix + (name,))]


@pytest.mark.parametrize("command", _subcommands(), ids=" ".join)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: teachformer {' '.join(command)}")
    for spelling in NNUNET_SPELLINGS.values():  # accepted, but the help shows one spelling
        assert f" {spelling} " not in out and f"[{spelling}" not in out


def test_nnunet_spellings_set_the_same_options():
    parser = build_parser()
    ours = parser.parse_args(["predict", "-i", "a", "-o", "b", "-d", "1", "--device", "cpu", "--disable-tta",
                              "--save-probabilities", "--checkpoint", "checkpoint_best.pth", "-f", "0", "all"])
    theirs = parser.parse_args(["predict", "-i", "a", "-o", "b", "-d", "1", "-device", "cpu", "--disable_tta",
                                "--save_probabilities", "-chk", "checkpoint_best.pth", "-f", "0", "all"])
    assert vars(ours) == vars(theirs) and ours.folds == [0, "all"] and theirs.dataset == "1"
    assert parser.parse_args(["train", "-d", "1", "-device", "cpu", "-f", "all"]).device == "cpu"
    assert parser.parse_args(["plan", "-d", "1", "-gpu_memory_target", "12"]).gpu_memory == 12.0


def test_a_fold_that_is_neither_a_number_nor_all_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["train", "-d", "1", "-f", "everything"])
    assert "invalid fold 'everything': a fold number (0-4) or all" in capsys.readouterr().err


def test_main_paths_on_the_trained_models(trained):
    status = run_cli([console_script("teachformer"), "status", "-d", DATASET_ID])
    assert "TeachFormerTrainer_tiny" in status.stdout and "UNETRTrainer_tiny" in status.stdout

    train = run_cli([console_script("teachformer"), "train", "-d", DATASET_ID, "-f", 0, "all", "--preset", "tiny",
                     "-device", "cpu", "--dry-run"])
    lines = train.stdout.splitlines()
    assert any(line.startswith("# done: ") and "TeachFormerTrainer_tiny" in line and f" {CONFIG} 0 " in line
               for line in lines)
    assert any(f" {CONFIG} all " in line and "-tr TeachFormerTrainer_tiny" in line and not line.startswith("#")
               for line in lines)

    paper = ["HDenseFormerTrainer_tiny", "SwinUNETRTrainer_tiny", "UNETRTrainer_tiny"]  # fold 0's student's set
    distill = run_cli([console_script("teachformer"), "distill", "-d", DATASET_ID, "--from", *paper, "--baseline",
                       "--preset", "tiny", "-device", "cpu", "--dry-run"])
    lines = distill.stdout.splitlines()
    assert [line.startswith("# done: ") for line in lines] == [True, True]  # baseline and student of fold 0
    assert f"-p {TEACHFORMER_PLANS}" in lines[1]  # the plans, found from the teachers' folders
    assert "TEACHFORMER_TEACHERS=" + ",".join(f"{t}:checkpoint_final.pth" for t in paper) in lines[1]

    other_set = run_cli([console_script("teachformer"), "distill", "-d", DATASET_ID, "--from", "UNetTrainer_tiny",
                         "--preset", "tiny", "-device", "cpu", "--dry-run"], check=False)
    assert other_set.returncode == 2 and "already holds folds taught by another teacher set" in other_set.stderr
    assert "fold_0 was distilled from HDenseFormerTrainer_tiny:checkpoint_final.pth" in other_set.stderr

    env = run_cli([console_script("teachformer"), "env"])
    assert env.stdout.startswith("export nnUNet_extTrainer=")


@pytest.mark.parametrize("raised, code, expected", [
    (KeyboardInterrupt(), 130, "teachformer env: interrupted; nothing half-written is kept"),
    (PermissionError(13, "Permission denied", "/results/Dataset990/slurm"), 2,
     "teachformer: error: cannot write or read /results/Dataset990/slurm: Permission denied."),
])
def test_ctrl_c_and_os_errors_end_in_one_line(raised, code, expected, monkeypatch, capsys):
    def fail(environ):
        raise raised
    monkeypatch.setattr("nnunet_teachformer.nnunet_ext.register_ext_trainer_dir", fail)
    assert main(["env"]) == code
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1 and "Traceback" not in err
