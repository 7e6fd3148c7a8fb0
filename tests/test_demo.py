"""`teachformer demo --quick`: the whole toy study from an empty work folder, through the real commands."""
import pytest
from matplotlib.image import imread

from conftest import console_script, run_cli

pytestmark = pytest.mark.slow  # the whole toy study through the real commands


def test_quick_demo_runs_end_to_end(tmp_path, nnunet_dirs):
    workdir = tmp_path / "demo"
    users_folders = {k: sorted(p.name for p in v.iterdir()) for k, v in nnunet_dirs.items()}
    out = run_cli([console_script("teachformer"), "demo", "--quick", "--workdir", workdir, "--device", "cpu"],
                  timeout=1800).stdout
    assert "TOY SCALE" in out and "teachformer train -d 501" in out
    for stage in ("1/5", "2/5", "3/5", "4/5", "5/5"):
        assert f"] {stage} " in out
    assert "| Model | Role |" in out and "Held-out phantom cases" in out
    report = workdir / "report"
    assert (report / "report.md").is_file() and (report / "held_out.md").is_file()
    for png in report.glob("*.png"):
        assert imread(str(png)).ndim == 3
    assert (workdir / "nnUNet_results" / "Dataset991_TeachFormerPhantom").is_dir()  # the quick demo's own dataset
    assert out.strip().splitlines()[-1].startswith("VERDICT (toy scale")
    # the demo works in its own folders: the user's nnU-Net folders are left as they were
    assert {k: sorted(p.name for p in v.iterdir()) for k, v in nnunet_dirs.items()} == users_folders
