"""The objective of CMUA's factor search on tiny real victims."""

from __future__ import annotations

import pytest
import torch

from tsdf_pipeline.defense.cmua import CMUAConfig
from tsdf_pipeline.defense.cmua_search import CMUASearchConfig, score_factors
from tsdf_pipeline.metrics.image_quality import quantize_8bit
from tsdf_pipeline.models.attgan import AttGANGenerator
from tsdf_pipeline.models.stargan import StarGANGenerator
from tsdf_pipeline.models.victims import make_victim

SIZE = 32


def _victims(scale: float = 1.0):
    """Tiny random StarGAN and AttGAN; ``scale`` multiplies their conv weights (3: edits CMUA can disrupt)."""
    torch.manual_seed(0)
    stargan = make_victim("stargan", StarGANGenerator(conv_dim=8, c_dim=5, repeat_num=1), image_size=SIZE)
    attgan = make_victim("attgan", AttGANGenerator(enc_dim=8, enc_layers=3, dec_dim=8, dec_layers=3, n_attrs=13,
                                                   img_size=SIZE))
    with torch.no_grad():
        for p in [*stargan.parameters(), *attgan.parameters()]:
            if p.dim() == 4:
                p.mul_(scale)
    return [stargan, attgan]


def _data(n: int = 6):
    rng = torch.Generator().manual_seed(1)
    return quantize_8bit(torch.rand(n, 3, SIZE, SIZE, generator=rng) * 2 - 1), torch.randint(0, 2, (n, 40),
                                                                                            generator=rng)


def test_zero_factors_leave_the_images_untouched_and_score_zero():
    x, attrs = _data()
    cmua = CMUAConfig(iterations=2, device="cpu", progress=False)
    result = score_factors(_victims(), x, attrs, {"stargan": 0.0, "attgan": 0.0}, cmua=cmua,
                           search=CMUASearchConfig(batch_size=3, eval_images=4))
    assert result == {"score": 0.0, "stargan": 0.0, "attgan": 0.0}


def test_the_score_is_the_mean_success_rate_follows_the_factors_and_is_reproducible():
    x, attrs = _data()
    cmua = CMUAConfig(iterations=3, epsilon=0.1, device="cpu", progress=False)
    search = CMUASearchConfig(batch_size=3, eval_images=6)
    strong = score_factors(_victims(3.0), x, attrs, {"stargan": 10.0, "attgan": 10.0}, cmua=cmua, search=search)
    assert set(strong) == {"score", "stargan", "attgan"}
    assert strong["stargan"] > 0 and strong["score"] == pytest.approx((strong["stargan"] + strong["attgan"]) / 2)
    weak = score_factors(_victims(3.0), x, attrs, {"stargan": 0.5, "attgan": 0.5}, cmua=cmua, search=search)
    assert weak["score"] < strong["score"]
    again = score_factors(_victims(3.0), x, attrs, {"stargan": 10.0, "attgan": 10.0}, cmua=cmua, search=search)
    assert again == strong


@pytest.mark.parametrize("bad", [{"trials": -1}, {"batch_size": 0}, {"eval_images": 0}, {"low": 5.0, "high": 5.0},
                                 {"low": -1.0}])
def test_bad_search_settings_are_refused(bad):
    with pytest.raises(ValueError, match="CMUASearchConfig"):
        CMUASearchConfig(**bad)
