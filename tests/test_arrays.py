"""2-D array modalities: precomputed spectrograms / MFCC frames as .npy files or nested lists."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bss_cli.data.manifest import load_manifest
from bss_cli.errors import ManifestError
from bss_cli.training.config import TrainConfig
from bss_cli.training.trainer import train


def _array_manifest(tmp_path, n=48, lengths=None, metadata=None, inline=False):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    (tmp_path / "mfcc").mkdir(exist_ok=True)
    frames, paths = [], []
    for i in range(n):
        t = lengths[i] if lengths is not None else 20
        a = (rng.normal(size=(13, t)) + y[i]).astype(np.float32)  # [features, time]: time on axis 1
        frames.append(a)
        np.save(tmp_path / "mfcc" / f"{i}.npy", a)
        paths.append(f"mfcc/{i}.npy")
    cols = {"sample_id": pa.array([f"s{i}" for i in range(n)]), "label": pa.array(y),
            "split": pa.array(["train" if i % 4 < 2 else ("val" if i % 4 == 2 else "test") for i in range(n)]),
            "audio": pa.array([a.tolist() for a in frames]) if inline else pa.array(paths),
            "other": pa.array([list(rng.normal(size=4) + y[i]) for i in range(n)])}
    table = pa.table(cols)
    if metadata:
        table = table.replace_schema_metadata({"bss.arrays": json.dumps(metadata)})
    pq.write_table(table, tmp_path / "m.parquet")
    return tmp_path / "m.parquet", frames


@pytest.mark.parametrize("inline", [False, True])
def test_2d_arrays_keep_their_shape_and_are_padded_or_cropped_along_time(tmp_path, inline):
    lengths = [10 + (i % 5) * 6 for i in range(48)]  # 10..34 frames
    path, frames = _array_manifest(tmp_path, lengths=lengths, metadata={"audio": {"length": 20, "time_axis": 1}},
                                   inline=inline)
    m = load_manifest(path)
    assert m.modalities["audio"].kind == "array" and m.modalities["audio"].shape == [13, 20]
    x = m.features["audio"].reshape(48, 13, 20)
    short = frames[0]  # 10 frames: zero-padded at the end
    assert np.array_equal(x[0, :, :10], short) and not x[0, :, 10:].any()
    long = frames[4]  # 34 frames: cropped
    assert np.array_equal(x[4], long[:, :20])


def test_ragged_2d_arrays_without_a_length_are_refused_by_name(tmp_path):
    path, _ = _array_manifest(tmp_path, lengths=[10 + (i % 3) for i in range(48)])
    with pytest.raises(ManifestError, match=r"column 'audio' holds 2-D arrays of shapes .* set the manifest "
                                            r"metadata bss.arrays"):
        load_manifest(path)


@pytest.mark.parametrize("encoder", ["mlp", "resnet18"])
def test_array_modality_trains_through_either_encoder(tmp_path, encoder):
    path, _ = _array_manifest(tmp_path)
    r = train(TrainConfig(manifest=str(path), out=str(tmp_path / encoder), epochs=2, hidden=4, batch_size=8,
                          array_encoder=encoder, scheduler="curriculum", quiet=True))
    assert 0 <= r.test["acc"] <= 1
    import torch

    state = torch.load(tmp_path / encoder / "best.pt", weights_only=True)["model"]
    conv = [k for k in state if k.startswith("encoders.audio") and state[k].ndim == 4]
    assert bool(conv) == (encoder == "resnet18")  # a one-channel map through convolutions, or a flat MLP
    if encoder == "resnet18":
        assert state[conv[0]].shape[1] == 1


@pytest.mark.slow
def test_digits_av_through_two_resnets_at_small_width(tmp_path):
    """The paper's setup in miniature: MFCC frames and images, each a one-channel map through a ResNet-18."""
    from conftest import SAMPLE

    path = SAMPLE / "digits-av.parquet"
    if not path.exists() or b"bss.arrays" not in (pq.read_schema(path).metadata or {}):
        pytest.skip("make setup builds sample_data/digits-av.parquet")
    table = pq.read_table(path)
    small = table.take(pa.array(np.arange(0, 3000, 6)))  # 500 rows, every class and split
    pq.write_table(small.replace_schema_metadata(table.schema.metadata), tmp_path / "digits.parquet")
    m = load_manifest(tmp_path / "digits.parquet")
    assert m.modalities["audio"].shape == [32, 13] and m.modalities["image"].shape == [28, 28]
    r = train(TrainConfig(manifest=str(tmp_path / "digits.parquet"), out=str(tmp_path / "run"), epochs=2, t_grow=2,
                          hidden=4, batch_size=32, array_encoder="resnet18", scheduler="curriculum", quiet=True))
    assert r.history[0]["subset_size"] < r.history[1]["subset_size"] and 0 <= r.test["acc"] <= 1
