"""On a CUDA GPU: bf16 training, exact resume, scoring (benchmarks/gpu_check.py runs these)."""

import pytest
import torch

from bss_cli.training.config import TrainConfig
from bss_cli.training.trainer import Callbacks, train

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_cuda_training_with_bf16_is_finite_and_selects_on_val(tiny_manifest, tmp_path):
    r = train(TrainConfig(manifest=str(tiny_manifest), out=str(tmp_path / "r"), epochs=3, device="cuda",
                          amp=True, scheduler="learned", quiet=True))
    assert r.best_epoch in (0, 1, 2) and 0 <= r.test["acc"] <= 1


def test_cuda_resume_after_a_kill_matches_an_uninterrupted_run(tiny_manifest, tmp_path):
    base = dict(manifest=str(tiny_manifest), epochs=3, device="cuda", amp=False, scheduler="learned", quiet=True)
    straight = train(TrainConfig(out=str(tmp_path / "a"), **base))

    class Kill(Exception):
        pass

    def die(epoch, n, loss):
        if epoch == 1:
            raise Kill

    with pytest.raises(Kill):
        train(TrainConfig(out=str(tmp_path / "b"), **base), Callbacks(on_batch=die))
    resumed = train(TrainConfig(out=str(tmp_path / "b"), resume=True, **base))
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    assert resumed.best_epoch == straight.best_epoch


def test_cuda_scores_agree_with_cpu(tiny_manifest):
    from bss_cli.scoring.scores import score_manifest

    cpu = score_manifest(tiny_manifest, device="cpu").balance
    gpu = score_manifest(tiny_manifest, device="cuda").balance
    assert abs(cpu - gpu).max() < 1e-3
