"""metrics (core layer: torch/numpy/pillow only): interruption, image quality and face-detection metrics."""

from tsdf_pipeline.metrics.detection import (
    ImageDetection,
    aggregate_detection,
    box_iou,
    filter_boxes,
    greedy_match,
    image_detection,
)
from tsdf_pipeline.metrics.disruption import (
    edit_mask,
    l0_norm,
    l1,
    l2_mask,
    lneg_inf_norm,
    mse,
    ruiz_success,
    success_rate_mask,
)
from tsdf_pipeline.metrics.evaluate_detection import detection_examples, evaluate_detection
from tsdf_pipeline.metrics.evaluate_interruption import (
    aggregate_rows,
    collect_examples,
    evaluate_interruption,
    evaluate_interruption_methods,
)
from tsdf_pipeline.metrics.image_quality import (
    denorm,
    ms_ssim,
    ms_ssim_num_scales,
    psnr,
    quantize_8bit,
    ssim,
)
from tsdf_pipeline.metrics.purification import PURIFICATIONS, apply_purification, gaussian_blur, jpeg, protect

__all__ = [
    "PURIFICATIONS",
    "ImageDetection",
    "aggregate_rows",
    "apply_purification",
    "collect_examples",
    "detection_examples",
    "evaluate_detection",
    "evaluate_interruption",
    "evaluate_interruption_methods",
    "gaussian_blur",
    "jpeg",
    "protect",
    "aggregate_detection",
    "box_iou",
    "denorm",
    "edit_mask",
    "filter_boxes",
    "greedy_match",
    "image_detection",
    "l0_norm",
    "l1",
    "l2_mask",
    "lneg_inf_norm",
    "ms_ssim",
    "ms_ssim_num_scales",
    "mse",
    "psnr",
    "quantize_8bit",
    "ruiz_success",
    "ssim",
    "success_rate_mask",
]
