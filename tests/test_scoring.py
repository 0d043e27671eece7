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
from bss_cli.scoring.scores import (
    read_scores,
    score_from_predictions,
    score_manifest,
    write_scores,
)


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
    import subprocess
    import sys

    from conftest import ROOT, free_port, run_processes

    args = ["score", str(tiny_manifest), "--device", "cpu", "--quiet", *source]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "bss_cli", *args, "-o", str(tmp_path / "one.parquet")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert one.returncode == 0, one.stderr
    two = run_processes([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                         "127.0.0.1", "--master_port", str(free_port()), "-m", "bss_cli", *args, "-o",
                         str(tmp_path / "two.parquet")], env=env, timeout=240)
    assert two.returncode == 0, two.stderr[-6000:]
    assert (tmp_path / "one.parquet").read_bytes() == (tmp_path / "two.parquet").read_bytes()


def _collective_worker(rank, world, port, out):
    import torch.distributed as dist

    from bss_cli.models.distributed import DistInfo, gather_strided, merge_owned

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    info = DistInfo(rank, world)
    n = 10  # not a multiple of 3: shards of 4, 3, 3 rows
    full = np.arange(n * 2, dtype=np.float64).reshape(n, 2) + 0.25
    gathered = gather_strided(full[rank::world], n, info)
    # Rank r "saw" rows r, r + 3, ... and row 0 too (padding repeats a row); row 9 nobody saw.
    seen = np.zeros(n, bool)
    seen[rank::world] = True
    seen[0] = True
    seen[9] = False
    local = np.where(seen[:, None], full + 100 * rank, -1.0)
    merged = merge_owned(local, seen, info)
    if rank == 0:
        out.put((gathered, merged))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_tensor_collectives_gather_rows_in_order_and_merge_by_owner():
    """The scoring collectives under 3 gloo ranks: strided shards come back in row order; rows
    seen by several ranks take the highest rank's values, rows nobody saw rank 0's."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_collective_worker, args=(r, 3, port, queue)) for r in range(3)]
    for p in procs:
        p.start()
    gathered, merged = queue.get(timeout=90)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    full = np.arange(20, dtype=np.float64).reshape(10, 2) + 0.25
    np.testing.assert_array_equal(gathered, full)
    owner = np.array([2, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    owner[9] = 0
    expected = full + 100 * owner[:, None]
    expected[9] = -1.0  # rank 0's value for the row nobody saw
    np.testing.assert_array_equal(merged, expected)


@pytest.mark.parametrize("criterion", ["prediction-sim+loss", "feature-sim+loss", "gradient"])
def test_model_scoring_equals_scoring_its_predictions_and_collects_only_what_the_criterion_needs(
        tiny_manifest, tmp_path, criterion):
    """Scoring a model equals writing its predictions and scoring that file; the forward pass keeps
    embeddings and gradient norms only for the criteria that read them."""
    from bss_cli.data.datasets import ManifestData
    from bss_cli.scoring.predict import fresh_model, predict

    m = load_manifest(tiny_manifest)
    data = ManifestData(m)
    model, _ = fresh_model(m, data, seed=0)
    rows = m.indices("train")
    parts = CRITERIA[criterion].parts
    p = predict(model, data, rows, weights=LossWeights(), embeddings="feat_sim" in parts,
                grad_norm="grad_norm" in parts)
    assert bool(p.embeddings) == ("feat_sim" in parts) and (p.grad_norm is not None) == ("grad_norm" in parts)
    assert all(z.dtype == np.float32 for z in p.logits.values())
    direct = score_manifest(tiny_manifest, criterion=criterion)
    pq.write_table(predictions_table(m.sample_ids.take(pa.array(rows)), p), tmp_path / "p.parquet")
    via_file = score_from_predictions(m, tmp_path / "p.parquet", criterion=criterion, weights=LossWeights())
    assert direct.table.column_names == via_file.table.column_names
    assert direct.table.select([S.SAMPLE_ID, S.SPLIT]).equals(via_file.table.select([S.SAMPLE_ID, S.SPLIT]))
    for col in set(direct.table.column_names) - {S.SAMPLE_ID, S.SPLIT}:
        np.testing.assert_allclose(direct.table[col].to_numpy(), via_file.table[col].to_numpy(), rtol=1e-6, atol=1e-9)


def test_streamed_scoring_is_the_same_whatever_the_batches_and_the_file_order(tiny_manifest, tmp_path, monkeypatch):
    """Row groups of 7 rows, output chunks of 5: the in-order file (one pass, no id table), the
    whole-manifest file, a file in order until its last rows (discovered mid-file) and a shuffled
    one all give the same scores file, byte for byte, as one in-memory pass."""
    import bss_cli.scoring.predictions as P
    import bss_cli.scoring.scores as SC

    m, rows, p = fake_predictions(tiny_manifest)
    ids = m.sample_ids.take(pa.array(rows))
    table = predictions_table(ids, p)
    pq.write_table(table, tmp_path / "one.parquet")  # one row group
    reference = score_from_predictions(m, tmp_path / "one.parquet", criterion="prediction-sim+loss",
                                       weights=LossWeights())
    write_scores(reference.to_scores(), tmp_path / "reference.parquet")

    monkeypatch.setattr(P, "BATCH_ROWS", 7)
    monkeypatch.setattr(SC, "CHUNK_ROWS", 5)
    monkeypatch.setattr(P, "SPILL_ROWS", 1)  # files in manifest order keep their parts in temporary files
    n = len(rows)
    late = np.r_[np.arange(n - 2), n - 1, n - 2]
    every = np.arange(m.n)
    others = np.setdiff1d(every, rows)
    rng = np.random.default_rng(1)
    whole = pa.concat_tables([table.drop_columns(["grad_norm"]), predictions_table(
        m.sample_ids.take(pa.array(others)),
        Predictions(labels=m.labels[others], logits={k: rng.normal(size=(len(others), 3)) for k in ("a", "b")},
                    fused_logits=rng.normal(size=(len(others), 3))))])
    order = np.argsort(np.r_[rows, others], kind="stable")  # back to manifest order
    files = {"in-order": table, "late-swap": table.take(pa.array(late)),
             "shuffled": table.take(pa.array(rng.permutation(n))),
             "whole-manifest": whole.take(pa.array(order))}
    align = P._align
    aligned_through_ids = []
    monkeypatch.setattr(P, "_align", lambda *a: aligned_through_ids.append(a[0].stem) or align(*a))
    for name, t in files.items():
        pq.write_table(t, tmp_path / f"{name}.parquet", row_group_size=7)
        s = SC.score_from_predictions(m, tmp_path / f"{name}.parquet", criterion="prediction-sim+loss",
                                      weights=LossWeights())
        SC.write_scores(s, tmp_path / f"{name}-scores.parquet")
        assert isinstance(s.parts.raw["loss"], P.SpilledColumn) == (name in ("in-order", "whole-manifest")), name
        assert pq.ParquetFile(tmp_path / f"{name}-scores.parquet").metadata.num_row_groups == -(-n // 5)
        assert pq.read_table(tmp_path / f"{name}-scores.parquet").equals(pq.read_table(tmp_path / "reference.parquet")), name
        assert read_scores(tmp_path / f"{name}-scores.parquet").metadata == reference.metadata | {
            "bss.prediction_source": f"predictions:{name}.parquet",
            "bss.prediction_source_fingerprint": s.metadata["bss.prediction_source_fingerprint"]}
    assert aligned_through_ids == ["late-swap", "shuffled"]  # files in manifest order need no id table


def test_streamed_problems_name_the_file_row(tiny_manifest, tmp_path, monkeypatch):
    import bss_cli.scoring.predictions as P

    monkeypatch.setattr(P, "BATCH_ROWS", 4)
    m, rows, p = fake_predictions(tiny_manifest)
    p.logits["b"][9, 2] = np.inf
    table = predictions_table(m.sample_ids.take(pa.array(rows)), p)
    for name, t in {"in-order": table, "reversed": table.take(pa.array(np.arange(len(rows))[::-1]))}.items():
        pq.write_table(t, tmp_path / "p.parquet", row_group_size=4)
        row = 9 if name == "in-order" else len(rows) - 1 - 9
        with pytest.raises(PredictionsError, match=f"row {row}: column 'logits_b' holds NaN or infinite values"):
            score_from_predictions(m, tmp_path / "p.parquet", criterion="loss", weights=LossWeights())


def test_row_ranges_index_like_the_rows_they_stand_for():
    from bss_cli.data.manifest import RowRange, compact_rows

    rows = np.arange(5, 12)
    r = compact_rows(rows)
    assert isinstance(r, RowRange) and len(r) == 7
    for key in (slice(2, 5), slice(None), np.array([0, 6, 3]), rows % 2 == 0):
        np.testing.assert_array_equal(r[key], rows[key])
    assert np.asarray(r).tolist() == r.tolist() == rows.tolist()
    gaps = np.array([1, 2, 4])
    assert compact_rows(gaps) is gaps


@pytest.mark.parametrize("codes", [[0, 0, 0, 1, 1, 2], [1, 0, 0, 0, 2], [0, 1, 0, 0, 2], [1, 1, 2], [2, 0]])
def test_a_manifest_gives_a_splits_rows_compactly_and_the_same_as_its_indices(tiny_manifest, codes):
    from bss_cli.data.manifest import RowRange

    m = load_manifest(tiny_manifest, load_features=False)
    m.split_codes = np.array(codes, np.int8)
    m.labels = np.zeros(len(codes), np.int64)
    for split in ("train", "val", "test", "all"):
        got, want = m.compact_indices(split), m.indices(split)
        assert m.count(split) == len(want)
        np.testing.assert_array_equal(np.asarray(got[slice(None)]), want)
        consecutive = len(want) > 0 and want[-1] - want[0] + 1 == len(want)
        assert isinstance(got, RowRange) == consecutive, (codes, split)


def test_ordered_map_keeps_the_order_and_raises_in_order():
    """Work done by a pool comes back in the items' order (later items finish first here), and
    the first failing item's exception is the one raised, after the results before it."""
    import time

    from bss_cli.artifacts import ordered_map

    def slow_for_early(i):
        time.sleep(0.002 * (10 - i))
        if i == 6:
            raise ValueError("item 6")
        if i == 8:
            raise KeyError("item 8")
        return i * i

    for workers in (1, 2, 4):
        assert list(ordered_map(lambda i: -i, range(12), workers)) == [-i for i in range(12)]
        got = []
        with pytest.raises(ValueError, match="item 6"):
            for v in ordered_map(slow_for_early, range(10), workers):
                got.append(v)
        assert got == [i * i for i in range(6)]


@pytest.mark.parametrize("spill", [False, True])
def test_scoring_on_a_pool_of_threads_writes_the_same_bytes(tmp_path, monkeypatch, spill):
    """Batches reduced on worker threads (as on machines with 4 cores or more) give the same
    scores file, byte for byte, as reducing them in order on one thread; in manifest order, shuffled
    and with a predictions file that fails in its fifth batch (the same error either way); with the
    parts in memory, and appended to temporary files in arrival order (as from 4M rows on)."""
    import bss_cli.scoring.predictions as P
    import bss_cli.scoring.scores as SC
    from conftest import make_manifest_table

    monkeypatch.setattr(P, "BATCH_ROWS", 6)
    if spill:
        monkeypatch.setattr(P, "SPILL_ROWS", 10)
    manifest = tmp_path / "m.parquet"
    pq.write_table(make_manifest_table(n=80), manifest, row_group_size=9)
    m, rows, p = fake_predictions(manifest, split="train")
    table = predictions_table(m.sample_ids.take(pa.array(rows)), p)
    files = {"in-order": table, "shuffled": table.take(pa.array(np.random.default_rng(4).permutation(len(rows))))}
    bad = table.to_pydict()
    bad["logits_a"][27] = [float("nan")] * len(bad["logits_a"][27])
    files["bad"] = pa.table(bad, schema=table.schema)
    for name, t in files.items():
        pq.write_table(t, tmp_path / f"{name}.parquet", row_group_size=11)
        out = {}
        for threads in (1, 3):  # the reduction inline, or on a pool; pyarrow's decoding threads off, then on
            monkeypatch.setattr(P, "SCORE_THREADS", threads)
            monkeypatch.setattr(P, "DECODE_THREADS", threads > 1)
            try:
                SC.write_scores(SC.score_manifest(manifest, predictions=tmp_path / f"{name}.parquet"),
                                tmp_path / f"{threads}.parquet")
                out[threads] = (tmp_path / f"{threads}.parquet").read_bytes()
            except PredictionsError as exc:
                out[threads] = str(exc)
        assert out[1] == out[3], name
        assert isinstance(out[1], str) == (name == "bad") and (name != "bad" or "row 27" in out[1]), out[1]


def test_scores_read_their_ids_back_from_a_parquet_manifest_and_write_the_same_bytes(tmp_path, monkeypatch):
    """`bss score --predictions` on a Parquet manifest lets the ids go once every one is checked,
    and reads them back from the file when it writes the scores: the same file, byte for byte, as
    keeping them in memory (row groups of 7, output chunks of 5, every split, a file in order and
    a shuffled one). A manifest changed on disk before the write is named, and nothing is written."""
    import os

    import bss_cli.scoring.predictions as P
    import bss_cli.scoring.scores as SC
    from bss_cli.data.manifest import StoredIds
    from bss_cli.errors import ManifestError
    from conftest import make_manifest_table

    monkeypatch.setattr(P, "BATCH_ROWS", 7)
    monkeypatch.setattr(SC, "CHUNK_ROWS", 5)
    manifest = tmp_path / "m.parquet"
    pq.write_table(make_manifest_table(n=61), manifest, row_group_size=7)
    for split in ("train", "val", "all"):
        m, rows, p = fake_predictions(manifest, split=split)
        table = predictions_table(m.sample_ids.take(pa.array(rows)), p)
        files = {"in-order": table, "shuffled": table.take(pa.array(np.random.default_rng(2).permutation(len(rows))))}
        for name, t in files.items():
            pq.write_table(t, tmp_path / f"{name}.parquet", row_group_size=7)
            kept = score_from_predictions(load_manifest(manifest, load_features=False), tmp_path / f"{name}.parquet",
                                          criterion="prediction-sim+loss", weights=LossWeights(), split=split)
            SC.write_scores(kept, tmp_path / "kept.parquet")
            stored = SC.score_manifest(manifest, predictions=tmp_path / f"{name}.parquet", split=split)
            assert isinstance(stored.manifest.sample_ids, StoredIds) and not isinstance(kept.manifest.sample_ids, StoredIds)
            SC.write_scores(stored, tmp_path / "stored.parquet")
            assert (tmp_path / "stored.parquet").read_bytes() == (tmp_path / "kept.parquet").read_bytes(), (split, name)

    stored = SC.score_manifest(manifest, predictions=tmp_path / "in-order.parquet", split="all")
    later = manifest.stat().st_mtime_ns + 10**9
    os.utime(manifest, ns=(later, later))
    with pytest.raises(ManifestError, match="(?s)m.parquet.*changed while it was being scored"):
        SC.write_scores(stored, tmp_path / "after.parquet")
    assert not (tmp_path / "after.parquet").exists() and not list(tmp_path.glob("*.tmp*"))


def test_a_large_score_set_lets_its_balance_go_and_gives_the_same_table(tiny_manifest, tmp_path, monkeypatch):
    """From CHUNK_ROWS samples on, the balance array is let go once sorted and recomputed a chunk
    at a time for the file: the same table, balance and rank, bit for bit, as keeping it."""
    import bss_cli.scoring.scores as SC

    m, rows, p = fake_predictions(tiny_manifest)
    pq.write_table(predictions_table(m.sample_ids.take(pa.array(rows)), p), tmp_path / "preds.parquet")
    kept = score_from_predictions(m, tmp_path / "preds.parquet", criterion="prediction-sim+loss",
                                  weights=LossWeights())
    assert kept._balance is not None
    monkeypatch.setattr(SC, "CHUNK_ROWS", 3)
    large = score_from_predictions(m, tmp_path / "preds.parquet", criterion="prediction-sim+loss",
                                   weights=LossWeights())
    assert large._balance is None  # not kept
    assert large.to_scores().table.equals(kept.to_scores().table)
    assert np.array_equal(large.rank, kept.rank) and large.balance.tobytes() == kept.balance.tobytes()
    assert np.array_equal(np.argsort(large.rank), np.argsort(-kept.balance, kind="stable"))
