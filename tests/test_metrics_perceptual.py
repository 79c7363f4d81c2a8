"""LPIPS and FID against the upstream ``lpips`` / ``pytorch-fid`` packages (fixtures made on synthetic weights
by ``tests/fixtures/perceptual/make_fixtures.py``), the Fréchet distance by hand, and weight-file errors."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import pytest
import torch
import torchvision

from tsdf_pipeline.metrics.fid import FIDInception, frechet_distance, load_fid_inception
from tsdf_pipeline.metrics.lpips import LPIPS, load_lpips
from tsdf_pipeline.models.checkpoints import CheckpointError, CheckpointNotFoundError

HERE = Path(__file__).resolve().parent / "fixtures" / "perceptual"
LINEAR = HERE / "lpips_alex_v0.1.pth"


@cache
def _maker():
    spec = importlib.util.spec_from_file_location("perceptual_fixtures", HERE / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def fixture() -> dict:
    return torch.load(HERE / "perceptual.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory) -> Path:
    """The fixture's synthetic trunk as a torchvision AlexNet file, with a (small) classifier entry to ignore."""
    features = torchvision.models.alexnet(weights=None).features
    shapes = {f"features.{k}": v.shape for k, v in features.state_dict().items()}
    state = _maker().synthetic(shapes, int(fixture()["meta"]["seed"]))
    assert _maker().digest(state) == fixture()["meta"]["alexnet_digest"], "torch's RNG differs from the fixture's"
    path = tmp_path_factory.mktemp("lpips") / "alexnet-owt-7be5be79.pth"
    torch.save({**state, "classifier.6.bias": torch.zeros(1000)}, path)
    return path


def inception_file(tmp_path: Path) -> Path:
    shapes = {k: v.shape for k, v in FIDInception().net.state_dict().items()}
    state = _maker().synthetic(shapes, int(fixture()["meta"]["seed"]) + 1)
    assert _maker().digest(state) == fixture()["meta"]["inception_digest"], "torch's RNG differs from the fixture's"
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return path


def test_lpips_matches_the_lpips_package(alexnet_file):
    model = load_lpips(alexnet_file, LINEAR)
    f = fixture()["lpips"]
    torch.testing.assert_close(model(f["a"], f["b"]), f["distance"], atol=1e-6, rtol=1e-5)
    assert torch.equal(model(f["a"], f["a"]), torch.zeros(2))


def test_fid_inception_features_match_pytorch_fid(tmp_path):
    model = load_fid_inception(inception_file(tmp_path))
    f = fixture()["fid"]
    torch.testing.assert_close(model(f["x01"] * 2 - 1), f["features"], atol=2e-5, rtol=1e-4)


def test_frechet_distance_matches_pytorch_fid_and_hand_values():
    f = fixture()["fid"]
    assert frechet_distance(f["set_a"], f["set_b"]) == pytest.approx(f["distance"], rel=1e-9)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(64, 5, dtype=torch.float64, generator=gen)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, a + 2.0) == pytest.approx(5 * 4.0, rel=1e-9)  # a shift moves only the means
    # Independent coordinates: per dimension (σ_a - σ_b)² for the variances' square roots.
    x = torch.tensor([[-1.0, -2.0], [1.0, 2.0], [-1.0, 2.0], [1.0, -2.0]], dtype=torch.float64)
    var_a, var_b = torch.cov(x.T).diagonal(), torch.cov((3 * x).T).diagonal()
    expected = float(((var_a.sqrt() - var_b.sqrt()) ** 2).sum())
    assert frechet_distance(x, 3 * x) == pytest.approx(expected, rel=1e-9)
    # Fewer samples than dimensions (the data, not the covariance, is factored): same value as the D x D way.
    few = torch.randn(5, 12, dtype=torch.float64, generator=gen)
    other = torch.randn(7, 12, dtype=torch.float64, generator=gen) + 0.3
    cov_f, cov_o = torch.cov(few.T), torch.cov(other.T)
    vals, vecs = torch.linalg.eigh(cov_f)
    root = (vecs * vals.clamp_min(0).sqrt()) @ vecs.T
    trace_root = torch.linalg.eigvalsh(root @ cov_o @ root).clamp_min(0).sqrt().sum()
    direct = (few.mean(0) - other.mean(0)).pow(2).sum() + cov_f.trace() + cov_o.trace() - 2 * trace_root
    # rel 1e-6: the direct way takes square roots of the rank-deficient product's round-off eigenvalues (~1e-16)
    assert frechet_distance(few, other) == pytest.approx(float(direct), rel=1e-6)


def test_frechet_distance_rejects_too_few_samples():
    with pytest.raises(ValueError, match=r"N, M >= 2, got \(1, 4\) and \(3, 4\)"):
        frechet_distance(torch.zeros(1, 4), torch.zeros(3, 4))


def test_weight_files_errors_name_the_file_and_keys(tmp_path, alexnet_file):
    with pytest.raises(CheckpointNotFoundError, match="nowhere.pth"):
        load_lpips(tmp_path / "nowhere.pth", LINEAR)
    trunk = alexnet_file
    with pytest.raises(CheckpointError, match=r"lpips_alex_v0.1.pth: missing keys \['features.0.bias'"):
        load_lpips(LINEAR, LINEAR)  # the linear file given as the trunk
    state = torch.load(LINEAR, map_location="cpu", weights_only=True)
    state["lin2.model.1.weight"] = torch.zeros(1, 10, 1, 1)
    torch.save(state, tmp_path / "bad_lin.pth")
    with pytest.raises(CheckpointError, match=r"bad_lin.pth: shape mismatches \['lin2.model.1.weight: file "
                                              r"\[1, 10, 1, 1\], expected \[1, 384, 1, 1\]'\]"):
        load_lpips(trunk, tmp_path / "bad_lin.pth")
    with pytest.raises(CheckpointError, match="alexnet-owt-7be5be79.pth: missing keys"):
        load_fid_inception(trunk)


def test_lpips_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match=r"H, W >= 31, got \(2, 3, 32, 32\) and \(1, 3, 32, 32\)"):
        LPIPS()(torch.zeros(2, 3, 32, 32), torch.zeros(1, 3, 32, 32))
