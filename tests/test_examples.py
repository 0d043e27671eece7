import importlib.util

import pytest
from conftest import ROOT


def load_example():
    spec = importlib.util.spec_from_file_location("external_trainer", ROOT / "examples" / "external_trainer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
