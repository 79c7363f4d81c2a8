"""Checkpoint reading, strict loading, wrappers and atomic saving (small models, no fixtures)."""

from __future__ import annotations

import argparse
from collections import OrderedDict

import pytest
import torch

from tsdf_pipeline.models import (
    CheckpointError,
    build_discriminator,
    build_generator,
    load_discriminator,
    load_generator,
    save_generator,
)
from tsdf_pipeline.models.checkpoints import CheckpointNotFoundError, read_checkpoint, unwrap_state_dict

SMALL_STARGAN = {"conv_dim": 4, "c_dim": 3, "repeat_num": 2}
SMALL_ATTGAN = {"enc_dim": 4, "enc_layers": 3, "dec_dim": 4, "dec_layers": 3, "n_attrs": 5, "img_size": 32}


def _randomised(module: torch.nn.Module, seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return OrderedDict((k, torch.randn(v.shape, generator=gen) if v.is_floating_point() else v.clone())
                       for k, v in module.state_dict().items())


def _same_weights(module: torch.nn.Module, sd) -> bool:
    own = module.state_dict()
    return all(torch.equal(own[k.removeprefix("module.")], v) for k, v in sd.items())


@pytest.fixture
def stargan_sd():
    return _randomised(build_generator("stargan", **SMALL_STARGAN))


@pytest.fixture
def attgan_sd():
    return _randomised(build_generator("attgan", **SMALL_ATTGAN), seed=1)


def test_raw_state_dict_with_prefix_and_without_nbt(tmp_path, stargan_sd):
    sd = OrderedDict(("module." + k, v) for k, v in stargan_sd.items() if not k.endswith("num_batches_tracked"))
    torch.save(sd, tmp_path / "200000-G.ckpt")
    g = load_generator("stargan", tmp_path / "200000-G.ckpt", **SMALL_STARGAN)
    assert _same_weights(g, sd) and not g.training


def test_attgan_full_save_with_optimisers(tmp_path, attgan_sd):
    g = build_generator("attgan", **SMALL_ATTGAN)
    d = build_discriminator("attgan", dim=4, n_layers=3, fc_dim=8, n_attrs=5, img_size=32)
    optim_g = torch.optim.Adam(g.parameters(), betas=(0.5, 0.999))
    g(torch.zeros(1, 3, 32, 32), torch.zeros(1, 5)).mean().backward()
    optim_g.step()
    d_sd = _randomised(d, seed=3)
    full = {"G": attgan_sd, "D": d_sd, "optim_G": optim_g.state_dict(),
            "optim_D": torch.optim.Adam(d.parameters()).state_dict()}
    torch.save(full, tmp_path / "weights.3.pth")
    assert _same_weights(load_generator("attgan", tmp_path / "weights.3.pth", **SMALL_ATTGAN), attgan_sd)
    loaded_d = load_discriminator("attgan", tmp_path / "weights.3.pth", dim=4, n_layers=3, fc_dim=8, n_attrs=5,
                                  img_size=32)
    assert _same_weights(loaded_d, d_sd)


def test_stargan_discriminator_raw_file(tmp_path):
    config = {"image_size": 32, "conv_dim": 4, "c_dim": 3, "repeat_num": 3}
    sd = _randomised(build_discriminator("stargan", **config))
    torch.save(sd, tmp_path / "200000-D.ckpt")
    assert _same_weights(load_discriminator("stargan", tmp_path / "200000-D.ckpt", **config), sd)
    with pytest.raises(CheckpointError, match="image_size=32"):
        load_discriminator("stargan", tmp_path / "200000-D.ckpt", conv_dim=4, c_dim=3, repeat_num=3)
    with pytest.raises(ValueError, match="no discriminator for arch 'hisd'"):
        build_discriminator("hisd")


def test_wrong_shape_reports_key_and_implied_config(tmp_path, stargan_sd):
    torch.save(stargan_sd, tmp_path / "g.ckpt")
    with pytest.raises(CheckpointError) as err:
        load_generator("stargan", tmp_path / "g.ckpt", conv_dim=4, c_dim=5, repeat_num=3)
    msg = str(err.value)
    assert str(tmp_path / "g.ckpt") in msg
    assert "main.0.weight [4, 6, 7, 7] (model [4, 8, 7, 7])" in msg
    assert "c_dim=3" in msg and "repeat_num=2" in msg and "missing keys" in msg
    assert "main.11.main.0.weight" in msg  # the third residual block the checkpoint lacks


def test_attgan_implied_n_attrs(tmp_path, attgan_sd):
    torch.save({"G": attgan_sd}, tmp_path / "weights.0.pth")
    with pytest.raises(CheckpointError, match=r"dec_layers\.0\.layers\.0\.weight \[21, 16, 4, 4\] -> n_attrs=5"):
        load_generator("attgan", tmp_path / "weights.0.pth", **{**SMALL_ATTGAN, "n_attrs": 13})


def test_unexpected_and_missing_keys_are_refused(tmp_path, stargan_sd):
    extra = OrderedDict(stargan_sd, **{"preprocessing.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.ckpt")
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): preprocessing\.weight"):
        load_generator("stargan", tmp_path / "extra.ckpt", **SMALL_STARGAN)
    missing = OrderedDict((k, v) for k, v in stargan_sd.items() if k != "main.4.running_var")
    torch.save(missing, tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): main\.4\.running_var"):
        load_generator("stargan", tmp_path / "missing.ckpt", **SMALL_STARGAN)


def test_wrong_wrapper(tmp_path, stargan_sd, attgan_sd):
    torch.save({"G": stargan_sd}, tmp_path / "wrapped.ckpt")
    with pytest.raises(CheckpointError, match=r"expected a raw state dict.*\['G'\].*wrapper_key"):
        load_generator("stargan", tmp_path / "wrapped.ckpt", **SMALL_STARGAN)
    assert _same_weights(load_generator("stargan", tmp_path / "wrapped.ckpt", wrapper_key="G", **SMALL_STARGAN),
                         stargan_sd)
    torch.save(attgan_sd, tmp_path / "raw.pth")
    with pytest.raises(CheckpointError, match=r"expected a dict with key 'G'"):
        load_generator("attgan", tmp_path / "raw.pth", **SMALL_ATTGAN)
    with pytest.raises(CheckpointError, match=r"entry 'G' is not a state dict"):
        unwrap_state_dict({"G": [1, 2]}, "G", path="x.pth")


def test_refuses_files_needing_full_unpickling(tmp_path, attgan_sd):
    path = tmp_path / "weights.199.pth"
    torch.save({"G": attgan_sd, "args": argparse.Namespace(img_size=32)}, path)
    with pytest.raises(CheckpointError) as err:
        load_generator("attgan", path, **SMALL_ATTGAN)
    msg = str(err.value)
    assert str(path) in msg and "argparse.Namespace" in msg and "never unpickled" in msg


def test_truncated_garbage_missing_and_directory(tmp_path, stargan_sd):
    good = tmp_path / "good.ckpt"
    torch.save(stargan_sd, good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    for path in (truncated, text, empty):
        with pytest.raises(CheckpointError, match="cannot read checkpoint|not a PyTorch checkpoint") as err:
            read_checkpoint(path)
        assert str(path) in str(err.value)
    with pytest.raises(CheckpointNotFoundError, match="checkpoint not found: .*absent.ckpt"):
        load_generator("stargan", tmp_path / "absent.ckpt")
    assert issubclass(CheckpointNotFoundError, FileNotFoundError)
    with pytest.raises(CheckpointError, match="not a file"):
        read_checkpoint(tmp_path)


def test_unknown_arch():
    with pytest.raises(ValueError, match="unknown generator arch 'stylegan'"):
        build_generator("stylegan")


@pytest.mark.parametrize(("arch", "config"), [("stargan", SMALL_STARGAN), ("attentiongan", SMALL_STARGAN),
                                              ("attgan", SMALL_ATTGAN)])
def test_save_generator_round_trip(tmp_path, arch, config):
    g = build_generator(arch, **config)
    g.load_state_dict(_randomised(g))
    path = save_generator(arch, g, tmp_path / "out" / "G.ckpt")
    obj = read_checkpoint(path)
    if arch == "attgan":
        assert set(obj) == {"G"}
    else:
        assert set(obj) == set(g.state_dict())
    assert _same_weights(load_generator(arch, path, **config), g.state_dict())
    assert [p.name for p in path.parent.iterdir()] == ["G.ckpt"]  # no temporary file left behind


def test_save_generator_wrappers_and_overwrite(tmp_path):
    g = build_generator("stargan", **SMALL_STARGAN)
    path = tmp_path / "G.ckpt"
    path.write_bytes(b"old")
    save_generator("stargan", g, path)
    assert set(read_checkpoint(path)) == set(g.state_dict())
    with pytest.raises(ValueError, match="raw state dict"):
        save_generator("stargan", g, path, extra={"D": {}})
    other = {k: v + 1 for k, v in g.state_dict().items() if v.is_floating_point()}
    save_generator("hisd", g, tmp_path / "gen.pt", extra={"gen": other, "step": torch.tensor(5)})
    obj = read_checkpoint(tmp_path / "gen.pt")
    assert set(obj) == {"gen", "gen_test", "step"}
    assert _same_weights(g, obj["gen_test"]) and torch.equal(obj["gen"]["main.0.weight"], other["main.0.weight"])
    save_generator("attgan", g, tmp_path / "weights.1.pth", extra={"D": other})
    assert set(read_checkpoint(tmp_path / "weights.1.pth")) == {"G", "D"}
