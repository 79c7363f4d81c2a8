"""MTCNN (facenet-pytorch 2.6.0 P-/R-/O-Net, weights shipped inside that wheel) behind the ``Detector`` interface.

``detect`` runs facenet-pytorch's full cascade (``detect_face``) on the 8-bit quantised image. ``raw``,
``features`` and ``refine`` are differentiable views built from the same networks:

* ``raw``: P-Net face probability and calibrated boxes at every cell of a fixed image pyramid (scales
  ``12/min_face_size * factor**k`` while the short side stays >= 12 px, as MTCNN computes them), levels
  resized with ``interpolate(mode="area")`` like facenet's ``imresample``;
* ``features``: P-Net maps at the first pyramid scale after conv1+PReLU+pool, conv2+PReLU, conv3+PReLU;
* ``refine``: R-Net (24x24) and O-Net (48x48) face probabilities of given boxes, cropped from the input
  with ``roi_align`` (bilinear; facenet crops integer boxes and area-resizes them).

Network input: MTCNN normalises 0..255 RGB as ``(v - 127.5) / 128``; for ``x`` in ``[-1,1]`` that is
``x * 127.5 / 128`` (about ``0.996 * x``).
"""

from __future__ import annotations

from pathlib import Path

import facenet_pytorch
import numpy as np
import torch
from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
from facenet_pytorch.models.utils.detect_face import detect_face
from torch import Tensor
from torch.nn import functional as F
from torchvision.ops import roi_align

from tsdf_pipeline.models.detectors.base import (
    Detections,
    Detector,
    DetectorOutput,
    RawDetections,
    select_detections,
)
from tsdf_pipeline.models.detectors.weights import load_state_dict_exact, read_state_dict

PACKAGED_WEIGHTS_DIR = Path(facenet_pytorch.__file__).resolve().parent / "data"
PNET_STRIDE = 2
PNET_CELL = 12


def pyramid_scales(height: int, width: int, min_face_size: int = 20, factor: float = 0.709) -> list[float]:
    """MTCNN's image pyramid: ``m = 12 / min_face_size``, scales ``m * factor**k`` while ``min(h,w)*scale >= 12``."""
    scale = PNET_CELL / min_face_size
    side = min(height, width) * scale
    scales = []
    while side >= PNET_CELL:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


class MTCNNDetector(Detector):
    """MTCNN on ``[N,3,H,W]`` RGB in ``[-1,1]``; ``thresholds`` are the P/R/O-Net cascade thresholds."""

    name = "mtcnn"

    def __init__(self, min_face_size: int = 20, factor: float = 0.709,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)) -> None:
        super().__init__()
        self.min_face_size = min_face_size
        self.factor = factor
        self.thresholds = tuple(thresholds)
        self.pnet = PNet(pretrained=False)
        self.rnet = RNet(pretrained=False)
        self.onet = ONet(pretrained=False)
        self.eval()

    def load_packaged_weights(self, weights_dir: str | Path = PACKAGED_WEIGHTS_DIR) -> None:
        """Load ``pnet.pt`` / ``rnet.pt`` / ``onet.pt`` from ``weights_dir`` (default: inside facenet-pytorch)."""
        for name, net in (("pnet", self.pnet), ("rnet", self.rnet), ("onet", self.onet)):
            path = Path(weights_dir) / f"{name}.pt"
            if not path.is_file():
                raise FileNotFoundError(
                    f"MTCNN weights not found at {path}: expected {name}.pt as shipped inside the "
                    "facenet-pytorch==2.6.0 wheel (facenet_pytorch/data/)"
                )
            load_state_dict_exact(net, read_state_dict(path), source=str(path))

    def preprocess(self, x: Tensor) -> Tensor:
        """RGB ``[-1,1]`` -> MTCNN's ``(v - 127.5) / 128`` of 0..255 RGB, i.e. ``x * 127.5 / 128``."""
        return x * (127.5 / 128.0)

    def _pnet_maps(self, net_input: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """P-Net on one pyramid level: the three conv maps, logits ``[N,2,h,w]``, regression ``[N,4,h,w]``."""
        p = self.pnet
        f1 = p.pool1(p.prelu1(p.conv1(net_input)))
        f2 = p.prelu2(p.conv2(f1))
        f3 = p.prelu3(p.conv3(f2))
        return [f1, f2, f3], p.conv4_1(f3), p.conv4_2(f3)

    def _level_input(self, net_input: Tensor, scale: float) -> Tensor:
        height, width = net_input.shape[-2:]
        size = (int(height * scale + 1), int(width * scale + 1))
        return F.interpolate(net_input, size=size, mode="area")

    def forward(self, x: Tensor) -> DetectorOutput:
        net_input = self.preprocess(x)
        n = x.shape[0]
        scores, boxes, logits, features = [], [], [], []
        for level, scale in enumerate(pyramid_scales(*x.shape[-2:], self.min_face_size, self.factor)):
            maps, level_logits, reg = self._pnet_maps(self._level_input(net_input, scale))
            if level == 0:
                features = maps
            h, w = level_logits.shape[-2:]
            rows, cols = torch.meshgrid(
                torch.arange(h, dtype=x.dtype, device=x.device),
                torch.arange(w, dtype=x.dtype, device=x.device), indexing="ij",
            )
            grid = torch.stack([cols, rows], dim=-1).reshape(-1, 2)
            top_left = torch.floor((PNET_STRIDE * grid + 1) / scale)
            bottom_right = torch.floor((PNET_STRIDE * grid + PNET_CELL) / scale)
            size = (bottom_right - top_left).repeat(1, 2)
            cells = torch.cat([top_left, bottom_right], dim=1)
            reg = reg.permute(0, 2, 3, 1).reshape(n, -1, 4)
            boxes.append(cells + reg * size)
            level_logits = level_logits.permute(0, 2, 3, 1).reshape(n, -1, 2)
            logits.append(level_logits)
            scores.append(torch.softmax(level_logits, dim=-1)[..., 1])
        raw = RawDetections(scores=torch.cat(scores, 1), boxes=torch.cat(boxes, 1), logits=torch.cat(logits, 1))
        return DetectorOutput(raw=raw, features=features, extras={})

    def raw(self, x: Tensor) -> RawDetections:
        return self.forward(x).raw

    def features(self, x: Tensor) -> list[Tensor]:
        scale = pyramid_scales(*x.shape[-2:], self.min_face_size, self.factor)[0]
        return self._pnet_maps(self._level_input(self.preprocess(x), scale))[0]

    def refine(self, x: Tensor, boxes: list[Tensor]) -> tuple[Tensor, Tensor]:
        """R-Net and O-Net face probabilities ``[K]`` of the boxes (``N`` tensors ``[K_i,4]`` xyxy pixels).

        Crops are squared around each box centre (as MTCNN's ``rerec``) and sampled from ``x`` with
        ``roi_align``, so the probabilities are differentiable w.r.t. ``x``. Returns the concatenation over
        images in order.
        """
        net_input = self.preprocess(x)
        rois = []
        for i, b in enumerate(boxes):
            centre = (b[:, :2] + b[:, 2:]) / 2
            half = (b[:, 2:] - b[:, :2]).amax(dim=1, keepdim=True) / 2
            square = torch.cat([centre - half, centre + half], dim=1)
            rois.append(torch.cat([torch.full_like(square[:, :1], i), square], dim=1))
        rois = torch.cat(rois, dim=0).to(net_input.dtype)
        rnet_prob = self.rnet(roi_align(net_input, rois, (24, 24), aligned=True))[1][:, 1]
        onet_prob = self.onet(roi_align(net_input, rois, (48, 48), aligned=True))[2][:, 1]
        return rnet_prob, onet_prob

    @torch.no_grad()
    def detect(self, x: Tensor, score_threshold: float = 0.5, nms_threshold: float = 0.3,
               top_k: int = 750) -> Detections:
        """facenet-pytorch's MTCNN cascade on the 8-bit image ``round((x+1)*127.5)``.

        Cascade boxes (O-Net probability above ``thresholds[2]``) are then kept when their probability is
        ``> score_threshold`` and pass a final IoU NMS at ``nms_threshold``; at most ``top_k`` per image.
        """
        img255 = ((x.detach().float() + 1.0) * 127.5).round().clamp(0, 255)
        batch_boxes, _ = detect_face(
            img255.permute(0, 2, 3, 1), self.min_face_size, self.pnet, self.rnet, self.onet,
            list(self.thresholds), self.factor, x.device,
        )
        result = Detections(boxes=[], scores=[])
        for found in batch_boxes:
            found = torch.from_numpy(np.asarray(found, dtype=np.float32).reshape(1, -1, 5)).to(x.device)
            kept = select_detections(found[..., 4], found[..., :4], score_threshold, nms_threshold, top_k)
            result.boxes += kept.boxes
            result.scores += kept.scores
        return result
