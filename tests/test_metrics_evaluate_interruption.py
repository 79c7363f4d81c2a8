"""Interruption evaluation on tiny random victims (32 px) and a hand-made identity victim."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from tsdf_pipeline.metrics.disruption import edit_mask, l2_mask, mse
from tsdf_pipeline.metrics.evaluate_interruption import (
    PerceptualModels,
    aggregate_rows,
    collect_examples,
    evaluate_interruption,
    evaluate_interruption_methods,
)
from tsdf_pipeline.metrics.fid import FIDInception, frechet_distance
from tsdf_pipeline.metrics.image_quality import psnr, quantize_8bit, ssim
from tsdf_pipeline.metrics.lpips import LPIPS
from tsdf_pipeline.metrics.purification import apply_purification, protect
from tsdf_pipeline.models.attgan import AttGANGenerator
from tsdf_pipeline.models.stargan import StarGANGenerator
from tsdf_pipeline.models.victims import EditTargets, Victim, make_victim

SIZE = 32
N = 5


class IdentityVictim(Victim):
    """Returns its input for two targets: the edit changes nothing, so every mask is empty."""

    arch = "identity"
    output_range = (-1.0, 1.0)

    def __init__(self) -> None:
        super().__init__(nn.Identity(), name="identity", attrs=[], image_size=SIZE)

    def _target_names(self, mode: str) -> list[str]:
        return ["recon", "noop"]

    def _conditions(self, attrs40: Tensor, mode: str) -> Tensor:
        return torch.zeros(2, attrs40.shape[0], 1)

    def edit_with_feature(self, x: Tensor, t: EditTargets) -> tuple[Tensor, Tensor]:
        self._check_batch(x, t)
        y = x.unsqueeze(0).expand(len(t), *x.shape)
        return y, y


@pytest.fixture(scope="module")
def victims() -> list[Victim]:
    torch.manual_seed(0)
    stargan = make_victim("stargan", StarGANGenerator(conv_dim=8, c_dim=5, repeat_num=1), image_size=SIZE)
    attgan_gen = AttGANGenerator(enc_dim=8, enc_layers=3, dec_dim=8, dec_layers=3, n_attrs=13, img_size=SIZE)
    return [stargan, make_victim("attgan", attgan_gen)]


@pytest.fixture(scope="module")
def batch() -> tuple[Tensor, Tensor]:
    rng = torch.Generator().manual_seed(1)
    x = quantize_8bit(torch.rand(N, 3, SIZE, SIZE, generator=rng) * 2 - 1)
    attrs40 = torch.randint(0, 2, (N, 40), generator=rng)
    return x, attrs40


def _universal(seed: int = 2, eps: float = 0.05) -> Tensor:
    rng = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 3, SIZE, SIZE, generator=rng) * 2 - 1) * eps


def _rows_of(rows: list[dict], kind: str = "interruption") -> list[dict]:
    return [r for r in rows if r["kind"] == kind]


def _same(a: dict, b: dict) -> bool:
    """Rows equal field by field (NaN equals NaN)."""
    def eq(u: object, v: object) -> bool:
        return u == v or (isinstance(u, float) and isinstance(v, float) and math.isnan(u) and math.isnan(v))

    return a.keys() == b.keys() and all(eq(value, b[k]) for k, value in a.items())


def test_zero_perturbation_gives_no_disruption(victims, batch):
    x, attrs40 = batch
    rows = evaluate_interruption(victims, x, attrs40, torch.zeros(1, 3, SIZE, SIZE), method="zero", batch_size=2)
    inter = _rows_of(rows)
    assert len(inter) == sum(len(v.target_names("all")) for v in victims)  # 6 stargan + 14 attgan targets
    assert sum(r["n_valid"] for r in inter) > 0
    for r in inter:
        assert r["n_samples"] == N and r["purification"] == "none" and r["method"] == "zero"
        assert r["sr_mask_all"] == 0 and r["ruiz_sr"] == 0 and r["mse"] == 0 and r["l1"] == 0
        assert r["psnr_out"] == math.inf and r["ssim_out_w7"] == pytest.approx(1.0)
        if r["n_valid"]:
            assert r["sr_mask"] == 0 and r["l2_mask"] == 0
    (wm,) = _rows_of(rows, "watermark")
    assert wm["watermark_psnr"] == math.inf and wm["watermark_linf"] == 0
    assert wm["watermark_ssim_w7"] == pytest.approx(1.0) and wm["watermark_ms_ssim"] == pytest.approx(1.0)


def test_rows_match_direct_computation(victims, batch):
    """Uneven batches (5 images, batch 2) pool to the same values as one direct pass per target."""
    x, attrs40 = batch
    w = _universal(eps=1.0) * torch.tensor([0.1, 0.3, 0.6, 0.8, 1.0]).view(N, 1, 1, 1)  # per image
    rows = evaluate_interruption(victims, x, attrs40, w, method="m", batch_size=2)
    published = quantize_8bit((x + w).clamp(-1, 1))
    for victim in victims:
        t = victim.targets(attrs40)
        with torch.no_grad():
            clean, adv = victim.edit(x, t), victim.edit(published, t)
        for i, name in enumerate(t.names):
            (row,) = [r for r in rows if r["victim"] == victim.name and r["target"] == name]
            l2, valid = l2_mask(adv[i], clean[i], edit_mask(clean[i], x))
            assert row["n_valid"] == int(valid.sum())
            assert row["n_success"] == int(((l2 > 0.05) & valid).sum())
            if row["n_valid"]:
                assert row["l2_mask"] == pytest.approx(float(l2[valid].mean()), rel=1e-5)
            assert row["mse"] == pytest.approx(float(mse(adv[i], clean[i]).mean()), rel=1e-5)
            assert row["psnr_out"] == pytest.approx(float(psnr(adv[i], clean[i]).mean()), rel=1e-6)
            assert row["ssim_out_w3"] == pytest.approx(
                float(ssim(adv[i], clean[i], 3, "per_image").mean()), rel=1e-6)
    assert any(0 < r["n_success"] < r["n_valid"] for r in _rows_of(rows))  # not a trivial all-or-nothing
    (wm,) = _rows_of(rows, "watermark")
    assert wm["watermark_psnr"] == pytest.approx(float(psnr(x, published).mean()), rel=1e-9)
    assert wm["watermark_linf"] == pytest.approx(float((published - x).abs().max()))


def test_identity_victim_has_empty_masks(batch):
    x, attrs40 = batch
    rows = evaluate_interruption([IdentityVictim()], x, attrs40, _universal(), method="m", batch_size=N)
    inter = _rows_of(rows)
    assert [r["target"] for r in inter] == ["recon", "noop"]
    for r in inter:
        assert r["n_empty_mask"] == N and r["n_valid"] == 0 and r["n_success"] == 0
        assert math.isnan(r["sr_mask"]) and math.isnan(r["l2_mask"]) and r["sr_mask_all"] == 0
        assert r["mse"] > 0  # the perturbation itself passes through the identity


def test_universal_equals_expanded_per_image(victims, batch):
    x, attrs40 = batch
    w = _universal(eps=0.3)
    kwargs = {"method": "m", "batch_size": 2, "purifications": ("none", "jpeg75")}
    universal = evaluate_interruption(victims, x, attrs40, w, **kwargs)
    per_image = evaluate_interruption(victims, x, attrs40, w.expand(N, -1, -1, -1).clone(), **kwargs)
    assert len(universal) == len(per_image)
    assert all(_same(a, b) for a, b in zip(universal, per_image, strict=True))


def test_several_methods_equal_separate_calls_with_one_clean_edit_per_batch(victims, batch, monkeypatch):
    x, attrs40 = batch
    ws = {"universal": _universal(eps=0.3), "per_image": _universal(seed=5, eps=0.1).expand(N, -1, -1, -1) * 0.5}
    kwargs = {"batch_size": 2, "purifications": ("none", "jpeg75")}
    separate = [row for m, w in ws.items() for row in evaluate_interruption(victims, x, attrs40, w, method=m,
                                                                            **kwargs)]
    calls: list[int] = []
    edit = type(victims[0]).edit
    monkeypatch.setattr(type(victims[0]), "edit", lambda self, xs, t: calls.append(xs.data_ptr()) or edit(self, xs, t))
    together = evaluate_interruption_methods(victims, x, attrs40, ws, **kwargs)
    assert len(together) == len(separate) and all(_same(a, b) for a, b in zip(together, separate, strict=True))
    # StarGAN per batch: the clean x once, then 2 methods x 2 purifications; 3 batches of N = 5.
    assert len(calls) == 3 * (1 + 2 * 2)
    with pytest.raises(ValueError, match="per_image: perturbation"):
        evaluate_interruption_methods(victims, x, attrs40, {"per_image": torch.zeros(2, 3, SIZE, SIZE)}, **kwargs)


def test_purification_rows_use_clean_reference(victims, batch):
    """G(x) comes from the clean, unpurified image: with w = 0, JPEG alone disrupts, 'none' does not."""
    x, attrs40 = batch
    rows = evaluate_interruption(victims[:1], x, attrs40, torch.zeros(1, 3, SIZE, SIZE), method="m",
                                 batch_size=N, purifications=("none", "jpeg75", "blur1"))
    inter = _rows_of(rows)
    assert len(inter) == 6 * 3
    assert [r["purification"] for r in inter[:3]] == ["none", "jpeg75", "blur1"]
    for r in inter:
        assert (r["mse"] == 0) == (r["purification"] == "none")
    victim = victims[0]
    t = victim.targets(attrs40)
    with torch.no_grad():
        expected = mse(victim.edit(apply_purification("jpeg75", protect(x, torch.zeros(1, 3, SIZE, SIZE))), t)[0],
                       victim.edit(x, t)[0]).mean()
    (row,) = [r for r in inter if r["target"] == "recon" and r["purification"] == "jpeg75"]
    assert row["mse"] == pytest.approx(float(expected), rel=1e-5)
    assert len(_rows_of(rows, "watermark")) == 1


def test_bad_inputs_are_rejected(victims, batch):
    x, attrs40 = batch
    with pytest.raises(ValueError, match="perturbation"):
        evaluate_interruption(victims, x, attrs40, torch.zeros(2, 3, SIZE, SIZE), method="m", batch_size=2)
    with pytest.raises(ValueError, match="attrs40"):
        evaluate_interruption(victims, x, attrs40[:2], _universal(), method="m", batch_size=2)
    with pytest.raises(ValueError, match="unknown purification"):
        evaluate_interruption(victims, x, attrs40, _universal(), method="m", batch_size=2, purifications=["png"])
    with pytest.raises(ValueError, match="unique"):
        evaluate_interruption([victims[0], victims[0]], x, attrs40, _universal(), method="m", batch_size=2)


def _row(target: str, *, n: int, n_valid: int, n_success: int, l2: float, mse_v: float, psnr_v: float) -> dict:
    return {
        "kind": "interruption", "method": "m", "victim": "v", "arch": "stargan", "target": target,
        "purification": "none", "n_samples": n, "n_valid": n_valid, "n_empty_mask": n - n_valid,
        "n_success": n_success, "sr_mask": n_success / n_valid if n_valid else math.nan,
        "sr_mask_all": n_success / n, "l2_mask": l2, "mse": mse_v, "n_ruiz_success": n_success,
        "ruiz_sr": n_success / n, "l1": mse_v, "psnr_out": psnr_v, "ssim_out_w3": 0.5, "ssim_out_w7": 0.5,
    }


def test_aggregate_rows_pools_samples_not_means():
    rows = [
        _row("a", n=10, n_valid=10, n_success=10, l2=0.2, mse_v=0.1, psnr_v=10.0),
        _row("b", n=30, n_valid=10, n_success=0, l2=0.0, mse_v=0.5, psnr_v=20.0),
        _row("c", n=5, n_valid=0, n_success=0, l2=math.nan, mse_v=0.0, psnr_v=30.0),
        {"kind": "watermark", "method": "m", "victim": None, "purification": "none", "watermark_psnr": 40.0},
    ]
    (agg,) = aggregate_rows(rows)
    assert agg["target"] == "all" and agg["arch"] == "stargan" and agg["n_rows"] == 3
    assert agg["n_samples"] == 45 and agg["n_valid"] == 20 and agg["n_empty_mask"] == 25
    assert agg["sr_mask"] == pytest.approx(10 / 20)  # not the mean of 1.0, 0.0, NaN
    assert agg["sr_mask_all"] == pytest.approx(10 / 45)
    assert agg["ruiz_sr"] == pytest.approx(10 / 45)
    assert agg["l2_mask"] == pytest.approx((0.2 * 10 + 0.0 * 10) / 20)  # NaN row has weight n_valid = 0
    assert agg["mse"] == pytest.approx((0.1 * 10 + 0.5 * 30) / 45)
    assert agg["psnr_out"] == pytest.approx((10 * 10 + 20 * 30 + 30 * 5) / 45)
    by_target = aggregate_rows(rows, by=("method", "target"))
    assert [r["target"] for r in by_target] == ["a", "b", "c"] and by_target[0]["n_rows"] == 1
    with pytest.raises(KeyError, match="group key"):
        aggregate_rows(rows, by=("method", "seed"))


def test_collect_examples_grid_shapes(victims, batch):
    x, attrs40 = batch
    grids = collect_examples(victims, x, attrs40, _universal(eps=0.3), n=3)
    assert list(grids) == [v.name for v in victims]
    for g in grids.values():
        assert g.shape == (3, 3 * (SIZE + 2) + 2, 5 * (SIZE + 2) + 2)
        assert g.min() >= 0 and g.max() <= 1
    # Row 0, column 1 is the published image of image 0.
    first_published = grids["stargan"][:, 2:2 + SIZE, 2 + SIZE + 2:2 + 2 * SIZE + 2]
    expected = (protect(x[:1], _universal(eps=0.3))[0] + 1) / 2
    assert torch.allclose(first_published, expected, atol=1e-6)
    assert collect_examples([IdentityVictim()], x, attrs40, _universal(), n=10)["identity"].shape[1] == (
        N * (SIZE + 2) + 2)


def test_perceptual_metrics_join_the_rows_when_models_are_given(victims, batch):
    """LPIPS per sample in every row and the watermark row, pooled like the other sample means; FID per method
    and victim over every target's edits (0 for a zero perturbation, up for a strong one)."""
    x, attrs40 = batch[0][:2], batch[1][:2]  # the Inception runs at 299 px: few samples
    torch.manual_seed(3)
    models = PerceptualModels(lpips=LPIPS(), fid=FIDInception())
    stargan = victims[:1]
    perturbations = {"zero": torch.zeros(1, 3, SIZE, SIZE), "strong": _universal(eps=0.5)}
    rows = evaluate_interruption_methods(stargan, x, attrs40, perturbations, batch_size=2, perceptual=models)
    published = quantize_8bit((x + perturbations["strong"]).clamp(-1, 1))
    t = stargan[0].targets(attrs40)
    with torch.no_grad():
        clean, adv = stargan[0].edit(x, t), stargan[0].edit(published, t)
        for i, name in enumerate(t.names):
            (row,) = [r for r in _rows_of(rows) if r["method"] == "strong" and r["target"] == name]
            assert row["lpips_out"] == pytest.approx(float(models.lpips(adv[i], clean[i]).mean()), rel=1e-5)
        expected_fid = frechet_distance(models.fid(clean.flatten(0, 1)), models.fid(adv.flatten(0, 1)))
        wm_lpips = float(models.lpips(x, published).mean())
    fid_rows = {r["method"]: r for r in _rows_of(rows, "fid")}
    assert fid_rows["strong"]["fid_out"] == pytest.approx(expected_fid, rel=1e-6) and expected_fid > 0
    assert fid_rows["zero"]["fid_out"] == pytest.approx(0.0, abs=1e-6)
    assert fid_rows["strong"]["n_samples"] == 2 * len(t) and fid_rows["strong"]["target"] == "all"
    wm = {r["method"]: r for r in _rows_of(rows, "watermark")}
    assert wm["zero"]["watermark_lpips"] == 0 and wm["strong"]["watermark_lpips"] == pytest.approx(wm_lpips, rel=1e-5)
    strong = [r for r in _rows_of(rows) if r["method"] == "strong"]
    (pooled,) = aggregate_rows(strong)
    assert pooled["lpips_out"] == pytest.approx(sum(r["lpips_out"] * r["n_samples"] for r in strong)
                                                / sum(r["n_samples"] for r in strong))
    assert "lpips_out" not in aggregate_rows(_rows_of(evaluate_interruption(
        stargan, x, attrs40, perturbations["strong"], method="m", batch_size=2)))[0]


def test_fid_refuses_a_single_edit_per_victim_before_any_work(victims, batch):
    x, attrs40 = batch
    with pytest.raises(ValueError, match=r"FID needs at least 2 edits per victim .*\['stargan', 'attgan'\]"):
        evaluate_interruption_methods(victims, x[:1], attrs40[:1], {"m": _universal()}, batch_size=1,
                                      target_mode="train", perceptual=PerceptualModels(fid=FIDInception()))
    with pytest.raises(ValueError, match=r"purifications \('jpeg75',\) lack 'none'"):
        evaluate_interruption_methods(victims, x, attrs40, {"m": _universal()}, batch_size=2,
                                      purifications=("jpeg75",), perceptual=PerceptualModels(fid=FIDInception()))


def test_per_target_perturbations_edit_each_target_with_its_own_image(victims, batch):
    """Row (victim, target i) of a per-target perturbation equals the per-image evaluation of ``w[victim][i]``
    against that victim's target i; the watermark row covers every (victim, target, image) published image."""
    x, attrs40 = batch
    rng = torch.Generator().manual_seed(4)
    w = {v.name: (torch.rand(len(v.target_names("all")), N, 3, SIZE, SIZE, generator=rng) * 2 - 1) * 0.3
         for v in victims}
    rows = evaluate_interruption_methods(victims, x, attrs40, {"pt": w}, batch_size=2,
                                         purifications=("none", "blur1"))
    for victim in victims:
        for i, name in enumerate(victim.target_names("all")[:3]):
            alone = evaluate_interruption([victim], x, attrs40, w[victim.name][i], method="pt", batch_size=2,
                                          purifications=("none", "blur1"))
            for p in ("none", "blur1"):
                (got,) = [r for r in _rows_of(rows) if (r["victim"], r["target"], r["purification"]) ==
                          (victim.name, name, p)]
                (want,) = [r for r in _rows_of(alone) if (r["target"], r["purification"]) == (name, p)]
                assert got["n_success"] == want["n_success"] and got["n_valid"] == want["n_valid"]
                for key in ("mse", "l1", "psnr_out", "ssim_out_w7"):
                    assert got[key] == pytest.approx(want[key], rel=1e-5), (victim.name, name, p, key)
    (wm,) = _rows_of(rows, "watermark")
    assert wm["n_samples"] == N * 20  # 6 StarGAN + 14 AttGAN targets per image
    published = torch.cat([quantize_8bit((x + w_t).clamp(-1, 1)) for v in victims for w_t in w[v.name]])
    assert wm["watermark_linf"] == pytest.approx(float((published - x.repeat(20, 1, 1, 1)).abs().max()))
    grids = collect_examples(victims, x, attrs40, w, 2)
    assert grids["stargan"].shape[-1] == 5 * (SIZE + 2) + 2


def test_per_target_perturbations_must_match_the_victims_and_targets(victims, batch):
    x, attrs40 = batch
    w = {"stargan": torch.zeros(6, N, 3, SIZE, SIZE), "attgan": torch.zeros(13, N, 3, SIZE, SIZE)}
    with pytest.raises(ValueError, match=r"m: 13 per-target perturbations for attgan, which the evaluation edits "
                                         r"with 14 targets"):
        evaluate_interruption_methods(victims, x, attrs40, {"m": w}, batch_size=2)
    with pytest.raises(ValueError, match=r"per-target perturbations for victims \['stargan'\], but the evaluation "
                                         r"runs \['attgan', 'stargan'\]"):
        evaluate_interruption_methods(victims, x, attrs40, {"m": {"stargan": w["stargan"]}}, batch_size=2)
    with pytest.raises(ValueError, match=r"perturbation\['stargan'\]: expected \[T,5,3,32,32\]"):
        evaluate_interruption_methods(victims, x, attrs40, {"m": {"stargan": torch.zeros(6, 3, SIZE, SIZE)}},
                                      batch_size=2)
