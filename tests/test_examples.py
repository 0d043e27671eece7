import importlib.util

import pytest
from conftest import ROOT


def load_example():
    spec = importlib.util.spec_from_file_location("external_trainer", ROOT / "examples" / "external_trainer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow  # the example script in a fresh interpreter per way: 4 s each
@pytest.mark.parametrize("via", ["sampler", "pipe"])
def test_external_trainer_takes_its_order_from_bss(htad, via):
    result = load_example().main([str(htad), "--via", via, "--epochs", "2"])
    hist = result["history"]
    assert [h["epoch"] for h in hist] == [0, 1]
    if via == "sampler":  # the curriculum grows: a prefix first, then all 970 train samples
        assert hist[0]["samples"] < hist[1]["samples"] == 970
    else:
        assert all(h["samples"] == 970 for h in hist)
    assert hist[-1]["val_acc"] > 0.5


@pytest.mark.slow
def test_gpu_check_dry_runs_on_cpu(tmp_path):
    """The GPU check is ready to run: its CPU dry run goes through every step and writes its figures."""
    import json
    import subprocess
    import sys

    out = tmp_path / "gpu.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny",
                        "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["cuda_tests"]["exit_code"] == 0 and set(res["train"]) >= {"learned_pass", "learned_online"}
    assert res["rescoring_overhead"]["pass_over_none"] > 0 and res["train"]["learned_pass"]["score_seconds"] > 0
