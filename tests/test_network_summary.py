"""The architecture summary: parameters and GFLOPs per network, n/a where a patch is not allowed."""
import torch

from nnunet_teachformer.networks.registry import NETWORKS
from nnunet_teachformer.evaluation.summary import format_table, summarise


def test_summary_counts_every_network_and_marks_patches_it_cannot_take():
    table = summarise(channels=2, classes=3, patches=(48, 64), preset="tiny")
    assert set(table) == set(NETWORKS)
    assert table["swinunetr"][48] is None  # SwinUNETR needs multiples of 32
    for key, row in table.items():
        built = NETWORKS[key].build(2, 3, (64, 64, 64), preset="tiny")
        assert row[64].parameters == sum(p.numel() for p in built.parameters())
        assert row[64].gflops > 0
        if row[48] is not None:  # FLOPs grow with the patch
            assert row[48].gflops < row[64].gflops
    text = format_table(table, (48, 64))
    assert "| SwinUNETR | teacher |" in text and "n/a" in text
    assert "H-DenseFormer Light" in text


def test_flops_of_a_convolution_are_counted_exactly():
    from nnunet_teachformer.evaluation.complexity import measure_complexity
    conv = lambda: torch.nn.Conv3d(2, 4, 3, padding=1, bias=False)  # noqa: E731
    c = measure_complexity(conv, (1, 2, 8, 8, 8))
    assert c.gflops * 1e9 == 2 * 2 * 4 * 27 * 8 ** 3


def test_the_2d_summary_counts_the_2d_networks():
    table = summarise(channels=3, classes=2, patches=(64,), preset="tiny", dims=2)
    for key, row in table.items():
        built = NETWORKS[key].build(3, 2, (64, 64), preset="tiny")
        assert row[64].parameters == sum(p.numel() for p in built.parameters()), key
    cube = summarise(channels=3, classes=2, patches=(64,), preset="tiny")
    assert all(table[k][64].gflops < cube[k][64].gflops for k in table)  # a slice costs less than a volume
    assert "GFLOPs @ 64^2" in format_table(table, (64,), dims=2)
