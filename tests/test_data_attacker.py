"""The attacker's data chain: protect, publish (save/load), face crops, crop alignment with the clean branch."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tsdf_pipeline.data.attacker import (
    PreparedSet,
    crop_grid,
    crop_iou,
    load_photos,
    preparation_stats,
    prepare_crops,
    protect,
    save_photos,
)
from tsdf_pipeline.data.crops import crop_windows
from tsdf_pipeline.metrics import box_iou, quantize_8bit


@dataclass
class StandInDetections:
    boxes: list[torch.Tensor]
    scores: list[torch.Tensor]


class BrightSquareDetector:
    """"Detects" the bounding box of pixels brighter than 0.5 (score 0.9), plus a weaker decoy box (0.6)."""

    name = "bright_square"

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def detect(self, x: torch.Tensor, score_threshold: float = 0.5) -> StandInDetections:
        self.batch_sizes.append(x.shape[0])
        boxes, scores = [], []
        for image in x:
            ys, xs = (image.mean(0) > 0.5).nonzero(as_tuple=True)
            if len(xs) == 0:
                found_boxes, found_scores = torch.zeros(0, 4), torch.zeros(0)
            else:
                square = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                found_boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [float(v) for v in square]])
                found_scores = torch.tensor([0.6, 0.9])
            keep = found_scores > score_threshold
            boxes.append(found_boxes[keep])
            scores.append(found_scores[keep])
        return StandInDetections(boxes, scores)


class PresetDetector:
    """Returns preset boxes/scores per photo position (ignores the threshold, as a sloppy detector could)."""

    name = "preset"

    def __init__(self, per_photo: list[list[tuple[tuple[float, float, float, float], float]]]) -> None:
        self.per_photo = per_photo
        self.seen = 0

    def detect(self, x: torch.Tensor, score_threshold: float = 0.5) -> StandInDetections:
        rows = self.per_photo[self.seen : self.seen + x.shape[0]]
        self.seen += x.shape[0]
        boxes = [torch.tensor([b for b, _ in row], dtype=torch.float32).view(-1, 4) for row in rows]
        scores = [torch.tensor([s for _, s in row], dtype=torch.float32) for row in rows]
        return StandInDetections(boxes, scores)


def _photos(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Quantised dark photos ``[n,3,size,size]`` with texture in [-1,-0.2]."""
    g = torch.Generator().manual_seed(seed)
    return quantize_8bit(torch.rand(n, 3, size, size, generator=g) * 0.8 - 1)


def _coordinate_photo(size: int = 100) -> torch.Tensor:
    """``[1,3,size,size]`` whose channel 0 encodes the column and channel 1 the row (exact 8-bit values)."""
    idx = torch.arange(size, dtype=torch.float32)
    photo = torch.zeros(1, 3, size, size)
    photo[0, 0] = idx.view(1, -1).expand(size, size)
    photo[0, 1] = idx.view(-1, 1).expand(size, size)
    return photo / 255 * 2 - 1


def test_no_face_photo_is_dropped_and_most_confident_box_kept() -> None:
    photos = _photos(3)
    photos[0, :, 10:30, 20:40] = 1.0
    photos[2, :, 30:50, 5:25] = 1.0
    prepared = prepare_crops(photos, BrightSquareDetector(), score_threshold=0.5, margin=0.0, out_size=20)
    assert prepared.dropped == [1]
    assert prepared.kept_index.tolist() == [0, 2]
    assert prepared.crops.shape == (2, 3, 20, 20)
    torch.testing.assert_close(prepared.boxes[0], torch.tensor([20.0, 10.0, 40.0, 30.0]))
    torch.testing.assert_close(prepared.boxes[2], torch.tensor([5.0, 30.0, 25.0, 50.0]))
    assert torch.isnan(prepared.boxes[1]).all() and torch.isnan(prepared.windows[1]).all()
    assert math.isnan(prepared.scores[1]) and prepared.scores[0] == pytest.approx(0.9)
    assert (prepared.crops == 1.0).all()  # margin 0: the crop is exactly the bright square


def test_score_threshold_is_applied_even_if_the_detector_ignores_it() -> None:
    photos = _photos(3)
    detector = PresetDetector([
        [((10, 10, 30, 30), 0.6), ((40, 40, 60, 60), 0.9)],
        [((10, 10, 30, 30), 0.7)],
        [((5, 5, 9, 9), 0.99), ((0, 0, 0, 20), 0.999), ((1, 1, math.nan, 8), 0.999)],  # degenerate boxes ignored
    ])
    prepared = prepare_crops(photos, detector, score_threshold=0.8, margin=0.0, out_size=8)
    assert prepared.dropped == [1]
    torch.testing.assert_close(prepared.boxes[0], torch.tensor([40.0, 40.0, 60.0, 60.0]))
    torch.testing.assert_close(prepared.boxes[2], torch.tensor([5.0, 5.0, 9.0, 9.0]))
    assert prepared.scores[2] == pytest.approx(0.99)


def test_crop_window_margin_and_squaring() -> None:
    box = torch.tensor([[40.0, 30.0, 60.0, 70.0]])  # 20 wide, 40 high, centre (50, 50)
    assert crop_windows(box, 0.25, square=True).tolist() == [[20, 20, 80, 80]]
    assert crop_windows(box, 0.25, square=False).tolist() == [[35, 20, 65, 80]]
    assert crop_windows(box, 0.0, square=True).tolist() == [[30, 30, 70, 70]]
    # fractional box: side 7.5 * 1.4 = 10.5 -> 11 pixels, start floor(5.75 - 5.5 + 0.5) = 0
    assert crop_windows(torch.tensor([[2.0, 2.0, 9.5, 9.5]]), 0.2).tolist() == [[0, 0, 11, 11]]
    with pytest.raises(ValueError, match="margin"):
        crop_windows(box, -0.1)


def test_crop_cuts_the_expected_window() -> None:
    photo = _coordinate_photo()
    detector = PresetDetector([[((40.0, 30.0, 60.0, 70.0), 0.9)]])
    prepared = prepare_crops(photo, detector, score_threshold=0.5, margin=0.25, out_size=60)
    assert prepared.windows[0].tolist() == [20, 20, 80, 80]
    assert torch.equal(prepared.crops[0], photo[0, :, 20:80, 20:80])  # same size: resize is the identity


def test_crop_past_the_border_replicates_edge_pixels() -> None:
    photo = _coordinate_photo()
    detector = PresetDetector([[((0.0, 0.0, 20.0, 20.0), 0.9)]])
    prepared = prepare_crops(photo, detector, score_threshold=0.5, margin=0.5, out_size=40)
    assert prepared.windows[0].tolist() == [-10, -10, 30, 30]
    expected = F.pad(photo, (10, 0, 10, 0), mode="replicate")[0, :, :40, :40]
    assert torch.equal(prepared.crops[0], expected)
    assert (prepared.crops[0, 0, :, :11] == photo[0, 0, 0, 0]).all()  # columns left of the photo repeat col 0


def test_crop_resize_is_antialiased_bilinear_on_the_8bit_grid() -> None:
    photo = _photos(1, size=100, seed=3)
    detector = PresetDetector([[((20.0, 20.0, 80.0, 80.0), 0.9)]])
    prepared = prepare_crops(photo, detector, score_threshold=0.5, margin=0.0, out_size=16)
    expected = F.interpolate(photo[:, :, 20:80, 20:80], size=(16, 16), mode="bilinear", antialias=True)
    assert torch.equal(prepared.crops, quantize_8bit(expected))


def test_one_detect_call_per_batch_and_batching_does_not_change_results() -> None:
    photos = _photos(5)
    for i in range(5):
        photos[i, :, 5 + 3 * i : 25 + 3 * i, 10:30] = 1.0
    small, whole = BrightSquareDetector(), BrightSquareDetector()
    a = prepare_crops(photos, small, score_threshold=0.5, margin=0.2, out_size=16, batch_size=2)
    b = prepare_crops(photos, whole, score_threshold=0.5, margin=0.2, out_size=16, batch_size=8)
    assert small.batch_sizes == [2, 2, 1] and whole.batch_sizes == [5]
    assert torch.equal(a.crops, b.crops) and torch.equal(a.windows, b.windows)


def test_detector_returning_wrong_number_of_images_is_named() -> None:
    detector = PresetDetector([[((0, 0, 5, 5), 0.9)]])
    with pytest.raises(ValueError, match="preset"):
        prepare_crops(_photos(2), detector, score_threshold=0.5, margin=0.0, out_size=8, batch_size=2)


def _preset_set(boxes: list[tuple[float, float, float, float] | None]) -> PreparedSet:
    detector = PresetDetector([[] if b is None else [(b, 0.9)] for b in boxes])
    return prepare_crops(_photos(len(boxes)), detector, score_threshold=0.5, margin=0.0, out_size=8)


def test_crop_iou_bookkeeping() -> None:
    clean = _preset_set([(20, 20, 60, 60), (20, 20, 60, 60), (20, 20, 60, 60), None, (10, 10, 30, 30)])
    branch = _preset_set([(20, 20, 60, 60), (30, 20, 70, 60), None, (5, 5, 25, 25), (40, 10, 60, 30)])

    same = crop_iou(clean, clean)
    assert same[[0, 1, 2, 4]].tolist() == [1.0, 1.0, 1.0, 1.0] and math.isnan(same[3])

    iou = crop_iou(branch, clean)
    assert iou[0] == 1.0
    assert iou[1].item() == pytest.approx(30 * 40 / (2 * 1600 - 30 * 40))  # 10-pixel shift of a 40-pixel box
    assert math.isnan(iou[2]) and math.isnan(iou[3])  # dropped by the branch / by the clean pipeline
    assert iou[4] == 0.0
    torch.testing.assert_close(iou[1], box_iou(branch.windows[1:2], clean.windows[1:2])[0, 0])

    stats = preparation_stats(branch, clean, n_photos=5)
    assert stats["kept"] == 4 and stats["dropped"] == 1 and stats["kept_fraction"] == pytest.approx(0.8)
    assert stats["compared"] == 3 and stats["kept_clean_dropped"] == 1
    assert stats["crop_iou_mean"] == pytest.approx((1.0 + 0.6 + 0.0) / 3)
    assert stats["crop_iou_median"] == pytest.approx(0.6)
    assert stats["misaligned_fraction"] == pytest.approx(1 / 3)

    assert preparation_stats(clean, clean, n_photos=10)["kept_fraction"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="same photos"):
        crop_iou(branch, _preset_set([(0, 0, 5, 5)]))


def test_stats_when_nothing_can_be_compared_are_nan() -> None:
    stats = preparation_stats(_preset_set([None, None]), _preset_set([(0, 0, 5, 5), None]))
    assert stats["kept"] == 0 and stats["dropped"] == 2 and stats["compared"] == 0
    assert math.isnan(stats["crop_iou_mean"]) and math.isnan(stats["misaligned_fraction"])


def test_protect_selection_is_deterministic_and_shared_by_all_perturbations() -> None:
    photos = _photos(20, size=8)
    universal = torch.full((1, 3, 8, 8), 0.1)
    per_image = torch.randn(20, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 0.05
    _, mask_u = protect(photos, universal, 0.3, seed=7)
    _, mask_p = protect(photos, per_image, 0.3, seed=7)
    _, mask_none = protect(photos, None, 0.3, seed=7)
    _, mask_again = protect(photos, universal, 0.3, seed=7)
    _, mask_other = protect(photos, universal, 0.3, seed=8)
    assert mask_u.sum() == 6
    assert torch.equal(mask_u, mask_p) and torch.equal(mask_u, mask_none) and torch.equal(mask_u, mask_again)
    assert not torch.equal(mask_u, mask_other)
    assert protect(photos, universal, seed=0)[1].all()  # default: every photo is protected
    assert not protect(photos, universal, 0.0, seed=0)[1].any()


def test_protect_adds_clamps_and_quantises() -> None:
    photos = _photos(6, size=8) + 0.003  # off the 8-bit grid
    delta = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 0.5
    delta[:, :, 0, 0] = 5.0  # far past the range: must clamp to 1
    out, mask = protect(photos, delta, 0.5, seed=3)
    assert out.min() >= -1 and out.max() <= 1
    levels = (out + 1) / 2 * 255
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)
    assert torch.equal(out[mask], quantize_8bit(photos[mask] + delta[mask]))
    assert torch.equal(out[~mask], quantize_8bit(photos[~mask]))
    assert (out[mask][:, :, 0, 0] == 1.0).all()
    with pytest.raises(ValueError, match="perturbation"):
        protect(photos, torch.zeros(1, 3, 4, 4), seed=0)
    with pytest.raises(ValueError, match="fraction"):
        protect(photos, None, 1.5, seed=0)


def test_png_round_trip_is_lossless(tmp_path) -> None:
    photos = protect(_photos(4, size=16) * -1, torch.full((1, 3, 16, 16), 0.02), seed=0)[0]
    paths = save_photos(photos, ["000001.jpg", "000002.jpg", 3, "x4"], tmp_path / "published")
    assert [p.name for p in paths] == ["000001.png", "000002.png", "3.png", "x4.png"]
    assert all(Image.open(p).format == "PNG" for p in paths)
    assert torch.equal(load_photos(paths), photos)


def test_jpeg_path(tmp_path) -> None:
    idx = torch.linspace(-0.8, 0.8, 32)
    smooth = quantize_8bit(torch.stack([idx.view(1, -1).expand(32, 32)] * 3).unsqueeze(0).repeat(2, 1, 1, 1))
    paths = save_photos(smooth, ["a", "b"], tmp_path / "jpeg", fmt="jpeg", jpeg_quality=90)
    assert [p.suffix for p in paths] == [".jpg", ".jpg"] and Image.open(paths[0]).format == "JPEG"
    loaded = load_photos(paths)
    assert loaded.shape == smooth.shape
    assert (loaded - smooth).abs().mean() < 0.02
    with pytest.raises(ValueError, match="jpeg_quality"):
        save_photos(smooth, ["a", "b"], tmp_path / "bad", fmt="jpeg")
    with pytest.raises(ValueError, match="jpeg_quality"):
        save_photos(smooth, ["a", "b"], tmp_path / "bad", fmt="png", jpeg_quality=90)


def test_save_is_atomic(tmp_path, monkeypatch) -> None:
    photos = _photos(4, size=8)
    folder = tmp_path / "published"
    save_photos(photos[:2], ["old1", "old2"], folder)
    real_save = Image.Image.save
    calls = {"n": 0}

    def failing_save(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (injected)")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="injected"):
        save_photos(photos, ["a", "b", "c", "d"], tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["published"]  # no partial folder, no temp left

    calls["n"] = 0
    with pytest.raises(OSError, match="injected"):
        save_photos(photos, ["a", "b", "c", "d"], folder)
    assert sorted(p.name for p in folder.iterdir()) == ["old1.png", "old2.png"]  # older folder untouched
    monkeypatch.undo()

    save_photos(photos, ["a", "b", "c", "d"], folder)
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "b.png", "c.png", "d.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["published"]


def test_bad_ids_and_files_are_named(tmp_path) -> None:
    photos = _photos(2, size=8)
    with pytest.raises(ValueError, match="'a.jpg' and 'a.png'"):
        save_photos(photos, ["a.jpg", "a.png"], tmp_path / "x")
    with pytest.raises(ValueError, match="plain file name"):
        save_photos(photos, ["ok", "../escape"], tmp_path / "x")
    small = save_photos(photos, ["p", "q"], tmp_path / "small")
    big = save_photos(_photos(1, size=16), ["r"], tmp_path / "big")
    with pytest.raises(ValueError, match="r.png: size 16x16"):
        load_photos([*small, *big])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_photos([tmp_path / "missing.png"])


def test_crop_grid() -> None:
    photos = _photos(5)
    for i in range(5):
        photos[i, :, 10:30, 10:30] = 1.0
    prepared = prepare_crops(photos, BrightSquareDetector(), score_threshold=0.5, margin=0.1, out_size=8)
    grid = crop_grid(prepared, n=4)
    assert grid.shape == (3, 2 * 10 + 2, 2 * 10 + 2)  # 2x2 tiles of 8 px with 2 px padding
    assert grid.min() >= 0 and grid.max() <= 1
    torch.testing.assert_close(grid[:, 2:10, 2:10], (prepared.crops[0] + 1) / 2)
    empty = crop_grid(_preset_set([None]))
    assert empty.shape == (3, 8, 8) and (empty == 0).all()  # one black tile (make_grid: no padding)
