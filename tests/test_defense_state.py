"""Run-state helpers: the content digest that names cached jobs and artifacts."""

from __future__ import annotations

import hashlib

import torch

from tsdf_pipeline.defense.state import tensor_digest


def test_tensor_digest_reads_the_bytes_of_any_dtype():
    t = torch.arange(6, dtype=torch.float32).view(2, 3)
    assert tensor_digest(t) == hashlib.sha256(t.numpy().tobytes()).hexdigest()  # job keys of earlier runs hold
    assert tensor_digest(t.t()) != tensor_digest(t)
    assert tensor_digest(t.bfloat16()) != tensor_digest(t.half())
