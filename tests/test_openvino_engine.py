"""`openvino_engine`: the openvino CPU path keeps PyTorch's float32 logits where OpenVINO's own instance norm does
not, refuses a tile it was not compiled for, and runs the tiles of several threads at once, one stream each."""
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch import nn

from nnunet_teachformer.inference.openvino_engine import OpenVinoNetwork, SplitReductionInstanceNorm, _accurate_norms


@pytest.mark.parametrize("norm", [nn.InstanceNorm3d(4, affine=True), nn.InstanceNorm3d(4), nn.InstanceNorm2d(4, affine=True)])
def test_split_reduction_norm_is_pytorchs_instance_norm(norm):
    if norm.affine:
        with torch.no_grad():
            norm.weight.uniform_(0.5, 2)
            norm.bias.uniform_(-1, 1)
    shape = (2, 4, 6, 10, 12) if isinstance(norm, nn.InstanceNorm3d) else (2, 4, 10, 12)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3 + 5
    assert torch.allclose(SplitReductionInstanceNorm(norm)(x), norm(x), atol=1e-5)


def test_accurate_norms_replaces_every_instance_norm_in_a_copy_that_shares_the_weights():
    network = nn.Sequential(nn.Conv3d(1, 4, 3), nn.InstanceNorm3d(4, affine=True),
                            nn.Sequential(nn.Conv3d(4, 4, 3), nn.InstanceNorm3d(4)), nn.BatchNorm3d(4))
    copy = _accurate_norms(network)
    kinds = [type(m) for m in copy.modules()]
    assert kinds.count(SplitReductionInstanceNorm) == 2 and nn.InstanceNorm3d not in kinds
    assert nn.BatchNorm3d in kinds  # only instance norms are replaced
    assert sum(isinstance(m, nn.InstanceNorm3d) for m in network.modules()) == 2  # the original is untouched
    assert copy[1].weight is network[1].weight and copy[0].weight is network[0].weight


def test_a_full_resolution_conv_and_norm_keeps_pytorchs_float32_result():
    # OpenVINO's own norm, one float32 sum over a channel's 590k voxels, was 1.6e-3 off on this block (measured)
    block = nn.Sequential(nn.Conv3d(2, 8, 3, padding=1, bias=False), nn.InstanceNorm3d(8, affine=True)).eval()
    x = torch.rand((1, 2, 64, 96, 96), generator=torch.Generator().manual_seed(0)) + 1
    with torch.no_grad():
        expected = block(x)
    got = OpenVinoNetwork(block, x, threads=1)(x)
    assert got.shape == expected.shape and (got - expected).abs().max() < 1e-4


def test_a_tile_of_another_shape_is_refused():
    network = OpenVinoNetwork(nn.Conv3d(1, 2, 3, padding=1).eval(), torch.zeros(1, 1, 8, 8, 8), threads=1)
    with pytest.raises(ValueError, match=r"compiled for tiles of \(1, 1, 8, 8, 8\), not \(1, 1, 8, 8, 16\)"):
        network(torch.zeros(1, 1, 8, 8, 16))


def test_two_threads_get_a_stream_each_and_their_own_tiles_logits(usable_cores):
    network = OpenVinoNetwork(nn.Conv3d(1, 2, 3, padding=1).eval(), torch.zeros(1, 1, 16, 16, 16), threads=2)
    # as many streams as threads, one thread each (OpenVINO gives a process on one core one of each)
    assert network.compiled.get_property("NUM_STREAMS") == min(2, usable_cores)
    assert network.compiled.get_property("INFERENCE_NUM_THREADS") == min(2, usable_cores)
    tiles = [torch.randn((1, 1, 16, 16, 16), generator=torch.Generator().manual_seed(i)) for i in range(16)]
    alone = [network(t) for t in tiles]
    with ThreadPoolExecutor(2) as pool:  # two requests reused by turns: a mix-up would hand one tile another's output
        together = list(pool.map(network, tiles))
    assert all(torch.equal(a, b) for a, b in zip(alone, together))
    assert network._requests.qsize() == 2  # every request handed back


def test_released_buffers_come_back_with_the_next_tile():
    network = OpenVinoNetwork(nn.Conv3d(1, 2, 3, padding=1).eval(), torch.zeros(1, 1, 16, 16, 16), threads=2)
    tile = torch.randn((1, 1, 16, 16, 16), generator=torch.Generator().manual_seed(0))
    before = network(tile)
    network.release_memory()
    assert torch.equal(network(tile), before)
    assert network._requests.qsize() == 2
