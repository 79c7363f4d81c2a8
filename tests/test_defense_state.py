"""Run state and the outer loop: the content digest that names cached jobs and artifacts, epoch planning, resume."""

from __future__ import annotations

import hashlib

import torch

from tsdf_pipeline.defense.loop import LoopSettings, run_loop
from tsdf_pipeline.defense.state import tensor_digest


def test_tensor_digest_reads_the_bytes_of_any_dtype():
    t = torch.arange(6, dtype=torch.float32).view(2, 3)
    assert tensor_digest(t) == hashlib.sha256(t.numpy().tobytes()).hexdigest()  # job keys of earlier runs hold
    assert tensor_digest(t.t()) != tensor_digest(t)
    assert tensor_digest(t.bfloat16()) != tensor_digest(t.half())


def test_the_loop_plans_each_epoch_once_before_reading_the_previous_one_and_resumes(tmp_path):
    """``start_epoch(e)`` runs once per epoch, for ``e > 0`` before epoch ``e - 1``'s records reach the host (its
    host work overlaps the device's); a resumed run plans its first epoch again and ends in the same state."""
    events: list[tuple[str, int]] = []

    def step(epoch, batch, x, attrs, tensors):
        tensors["w"] = tensors["w"] + x.sum()
        return [{"w": tensors["w"]}]

    def run(epochs: int, resume: bool = True):
        events.clear()
        return run_loop(torch.ones(4, 1), torch.zeros(4, 40), {"w": torch.zeros(())},
                        settings=LoopSettings("test", epochs, 2, progress=False), step=step,
                        start_epoch=lambda e: events.append(("plan", e)), fingerprint={"f": 1},
                        checkpoint_path=tmp_path / "state.pt", resume=resume,
                        callback=lambda i, rec: events.append(("record", int(rec["epoch"]))))

    full = run(3, resume=False)
    assert events == [("plan", 0), ("plan", 1), ("record", 0), ("record", 0), ("plan", 2), ("record", 1),
                      ("record", 1), ("record", 2), ("record", 2)]
    (tmp_path / "state.pt").unlink()
    run(2, resume=False)
    resumed = run(3)  # continues at epoch 2 from the checkpoint
    assert events == [("plan", 2), ("record", 2), ("record", 2)]
    assert torch.equal(resumed.tensors["w"], full.tensors["w"]) and resumed.history == full.history
