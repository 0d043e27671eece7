import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bss_cli import schema as S
from bss_cli.data.manifest import load_manifest
from bss_cli.errors import PredictionsError
from bss_cli.scoring.criteria import CRITERIA, LossWeights, Predictions
from bss_cli.scoring.predictions import predictions_table
from bss_cli.scoring.scores import read_scores, score_from_predictions, score_manifest, write_scores


def fake_predictions(manifest_path, seed=0, split="train", c=3):
    m = load_manifest(manifest_path, load_features=False)
    rows = m.indices(split)
    rng = np.random.default_rng(seed)
    p = Predictions(labels=m.labels[rows], logits={"a": rng.normal(size=(len(rows), c)), "b": rng.normal(size=(len(rows), c))},
                    fused_logits=rng.normal(size=(len(rows), c)), grad_norm=rng.gamma(2.0, size=len(rows)))
    return m, rows, p


def test_scores_from_predictions_file_in_any_row_order(tiny_manifest, tmp_path):
    m, rows, p = fake_predictions(tiny_manifest)
    table = predictions_table(m.sample_ids.take(pa.array(rows)), p)
    perm = np.random.default_rng(0).permutation(len(rows))
    pq.write_table(table.take(pa.array(perm)), tmp_path / "shuffled.parquet")
    pq.write_table(table, tmp_path / "preds.parquet")
    a = score_from_predictions(m, tmp_path / "preds.parquet", criterion="prediction-sim+gradient", weights=LossWeights())
    b = score_from_predictions(m, tmp_path / "shuffled.parquet", criterion="prediction-sim+gradient", weights=LossWeights())
    assert a.table.equals(b.table)
    assert a.rows.tolist() == rows.tolist()
    cols = a.table.column_names
    for c in ["sample_id", "row", "label", "split", "pred_sim", "grad_norm", "pred_sim_norm", "grad_norm_norm",
              "balance", "rank", "loss_a", "p_true_a", "loss_b", "p_true_b", "loss_fused", "p_true_fused"]:
        assert c in cols
    assert sorted(a.table["rank"].to_pylist()) == list(range(len(rows)))


def test_scores_artifact_metadata_and_roundtrip(tiny_manifest, tmp_path):
    m, rows, p = fake_predictions(tiny_manifest)
    pq.write_table(predictions_table(m.sample_ids.take(pa.array(rows)), p), tmp_path / "p.parquet")
    s = score_from_predictions(m, tmp_path / "p.parquet", criterion="prediction-sim+loss", weights=LossWeights(0.1, 0.9))
    write_scores(s, tmp_path / "s.parquet")
    back = read_scores(tmp_path / "s.parquet")
    meta = back.metadata
    assert meta["bss.kind"] == "scores" and meta["bss.format_version"] == "1"
    assert meta["bss.criterion"] == "prediction-sim+loss"
    assert meta["bss.manifest_fingerprint"] == m.fingerprint
    assert meta["bss.prediction_source"] == "predictions:p.parquet" and len(meta["bss.prediction_source_fingerprint"]) == 16
    assert meta["bss.loss_weights"] == '{"fused": 0.1, "unimodal": 0.9}'
    # readable with no help from bss
    plain = pq.read_table(tmp_path / "s.parquet").to_pydict()
    assert len(plain["balance"]) == len(rows)


def test_predictions_file_problems(tiny_manifest, tmp_path):
    m, rows, p = fake_predictions(tiny_manifest)
    table = predictions_table(m.sample_ids.take(pa.array(rows)), p)
    path = tmp_path / "p.parquet"
    pq.write_table(table.slice(1), path)
    with pytest.raises(PredictionsError, match="no prediction for 1 sample\\(s\\) of split 'train'.*'s000' \\(manifest row 0\\)"):
        score_from_predictions(m, path, criterion="loss", weights=LossWeights())
    bad = p.logits["a"].copy()
    bad[4, 1] = np.nan
    p.logits["a"] = bad
    pq.write_table(predictions_table(m.sample_ids.take(pa.array(rows)), p), path)
    with pytest.raises(PredictionsError, match="row 4: column 'logits_a' holds NaN or infinite values"):
        score_from_predictions(m, path, criterion="loss", weights=LossWeights())
    pq.write_table(pa.table({"sample_id": ["nope"], "logits_a": [[1.0]], "logits_b": [[1.0]]}), path)
    with pytest.raises(PredictionsError, match="row 0: sample_id 'nope' is not in the manifest"):
        score_from_predictions(m, path, criterion="loss", weights=LossWeights())
    pq.write_table(pa.table({"sample_id": ["s000"], "logits_a": [[1.0]]}), path)
    with pytest.raises(PredictionsError, match="found 1 unimodal logits column"):
        score_from_predictions(m, path, criterion="loss", weights=LossWeights())


def test_scoring_from_predictions_does_not_import_torch(tiny_manifest, tmp_path):
    m, rows, p = fake_predictions(tiny_manifest)
    pq.write_table(predictions_table(m.sample_ids.take(pa.array(rows)), p), tmp_path / "p.parquet")
    code = (
        "import sys\n"
        "from bss_cli.cli.app import app\n"
        f"try:\n    app(['score', {str(tiny_manifest)!r}, '-o', {str(tmp_path / 's.parquet')!r}, '--predictions', "
        f"{str(tmp_path / 'p.parquet')!r}])\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "s.parquet").exists()


@pytest.mark.parametrize("criterion", list(CRITERIA))
def test_every_criterion_from_a_fresh_model(tiny_manifest, criterion):
    s = score_manifest(tiny_manifest, criterion=criterion)
    b = s.balance
    assert len(b) == 36 and np.isfinite(b).all()
    assert s.metadata["bss.prediction_source"] == "init"


def test_fresh_model_scores_are_reproducible(tiny_manifest, tmp_path):
    write_scores(score_manifest(tiny_manifest), tmp_path / "a.parquet")
    write_scores(score_manifest(tiny_manifest), tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_per_sample_grad_norms_match_a_batch_size_one_loop(tiny_manifest):
    import torch

    from bss_cli.data.datasets import ManifestData
    from bss_cli.models.fusion import joint_loss
    from bss_cli.scoring.predict import fresh_model, per_sample_grad_norms

    m = load_manifest(tiny_manifest)
    data = ManifestData(m)
    model, _ = fresh_model(m, data, seed=0)
    model.eval()
    rows = m.indices("train")[:10]
    fast = per_sample_grad_norms(model, data, rows, LossWeights(0.1, 0.9), chunk=4)
    slow = []
    for r in rows:
        model.zero_grad()
        xb, yb = data.batch([r])
        joint_loss(model(xb), yb, 0.1, 0.9).sum().backward()
        slow.append(torch.sqrt(sum((q.grad ** 2).sum() for q in model.parameters())).item())
    np.testing.assert_allclose(fast, slow, rtol=1e-5)


def test_warmup_and_checkpoint_sources(tiny_manifest, tmp_path):
    from bss_cli.data.datasets import ManifestData
    from bss_cli.models.checkpoints import MODEL_CONFIG, MODEL_STATE, save_checkpoint
    from bss_cli.scoring.predict import ModelSource, fresh_model

    init = score_manifest(tiny_manifest)
    warm = score_manifest(tiny_manifest, source=ModelSource(kind="warmup", warmup_epochs=3))
    assert warm.metadata["bss.prediction_source"] == "warmup:3"
    assert warm.table["loss"].to_numpy().mean() < init.table["loss"].to_numpy().mean()
    m = load_manifest(tiny_manifest)
    model, cfg = fresh_model(m, ManifestData(m), seed=0)
    save_checkpoint(tmp_path / "c.pt", {MODEL_STATE: model.state_dict(), MODEL_CONFIG: cfg.to_dict()})
    ck = score_manifest(tiny_manifest, source=ModelSource(kind="checkpoint", checkpoint=str(tmp_path / "c.pt")))
    np.testing.assert_allclose(ck.balance, init.balance, atol=1e-6)
    assert ck.metadata[S.META_SOURCE].startswith("checkpoint:")


@pytest.mark.slow
@pytest.mark.parametrize("source", [(), ("--warmup", "1")])
def test_score_under_torchrun_equals_one_process(tiny_manifest, tmp_path, source):
    """Two gloo ranks each score half the rows; rank 0 writes a file identical to one process's."""
    import os
    import socket
    import subprocess
    import sys

    from conftest import ROOT

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = ["score", str(tiny_manifest), "--device", "cpu", "--quiet", *source]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "bss_cli", *args, "-o", str(tmp_path / "one.parquet")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                          "127.0.0.1", "--master_port", str(port), "-m", "bss_cli", *args, "-o",
                          str(tmp_path / "two.parquet")], capture_output=True, text=True, env=env, timeout=240)
    assert two.returncode == 0, two.stderr[-3000:]
    assert (tmp_path / "one.parquet").read_bytes() == (tmp_path / "two.parquet").read_bytes()
