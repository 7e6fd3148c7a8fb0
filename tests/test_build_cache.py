"""`build_cache`: what OpenVINO compiled for a fold is imported by the next call (no trace, no conversion) with the
same logits; other weights, tiles, threads or precision are built anew; a damaged blob is rebuilt, a cache that
cannot be written is a warning, and only the newest are kept."""
import pytest
import torch
from torch import nn

pytest.importorskip("openvino")

from nnunet_teachformer.inference import build_cache  # noqa: E402
from nnunet_teachformer.inference.openvino_engine import OpenVinoNetwork  # noqa: E402
from nnunet_teachformer.inference.path_memory import MEMORY_ENV  # noqa: E402

TILE = torch.randn((1, 1, 8, 16, 16), generator=torch.Generator().manual_seed(0))


def small_network(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.InstanceNorm3d(4, affine=True), nn.LeakyReLU(),
                         nn.Conv3d(4, 2, 1)).eval()


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(MEMORY_ENV, str(tmp_path / "cache"))


def blobs():
    return sorted(build_cache.blob_folder().glob("*.blob"))


def no_trace(monkeypatch):
    def trace(*args, **kwargs):
        raise AssertionError("built again: traced")
    monkeypatch.setattr(torch.jit, "trace", trace)


def test_a_fold_built_once_is_imported_with_the_same_logits(monkeypatch):
    network = small_network()
    first = OpenVinoNetwork(network, TILE, 1)
    assert not first.from_disk and len(blobs()) == 1
    no_trace(monkeypatch)
    second = OpenVinoNetwork(network, TILE, 1)
    assert second.from_disk
    assert torch.equal(first(TILE), second(TILE))
    with torch.no_grad():
        assert (second(TILE) - network(TILE)).abs().max() <= 1e-4


@pytest.mark.parametrize("change", ["weights", "tile", "threads", "precision"])
def test_anything_the_compilation_depends_on_is_another_blob(change):
    OpenVinoNetwork(small_network(), TILE, 1)
    network, tile, threads, precision = small_network(), TILE, 1, "f32"
    if change == "weights":
        with torch.no_grad():
            network[0].weight[0, 0, 0, 0, 0] += 1
    elif change == "tile":
        tile = torch.randn((1, 1, 8, 16, 24))
    elif change == "threads":
        threads = 2
    else:
        precision = "bf16"
    assert not OpenVinoNetwork(network, tile, threads, precision).from_disk
    assert len(blobs()) == 2


@pytest.mark.parametrize("damage", ["a flipped byte", "cut short"])
def test_a_damaged_blob_is_deleted_and_built_anew(damage):
    expected = OpenVinoNetwork(small_network(), TILE, 1)(TILE)
    blob, = blobs()
    data = bytearray(blob.read_bytes())
    if damage == "a flipped byte":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[len(data) // 3:]
    blob.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match=f"{blob}.*damaged"):
        rebuilt = OpenVinoNetwork(small_network(), TILE, 1)
    assert not rebuilt.from_disk and torch.equal(rebuilt(TILE), expected)
    assert OpenVinoNetwork(small_network(), TILE, 1).from_disk  # the blob written anew is whole


def test_a_cache_that_cannot_be_written_is_a_warning(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setenv(MEMORY_ENV, str(tmp_path / "a_file" / "cache"))
    with pytest.warns(RuntimeWarning, match="could not be kept in .*a_file.*builds it again"):
        network = OpenVinoNetwork(small_network(), TILE, 1)
    with torch.no_grad():
        assert (network(TILE) - small_network()(TILE)).abs().max() <= 1e-4
    assert not list(tmp_path.glob("a_file*/**/*.tmp"))


def test_only_the_newest_are_kept(monkeypatch):
    monkeypatch.setattr(build_cache, "KEPT", 2)
    for seed in range(3):
        OpenVinoNetwork(small_network(seed), TILE, 1)
    assert len(blobs()) == 2
    assert not OpenVinoNetwork(small_network(0), TILE, 1).from_disk  # the oldest went
    no_trace(monkeypatch)
    assert OpenVinoNetwork(small_network(2), TILE, 1).from_disk
