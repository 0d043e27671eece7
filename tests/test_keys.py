"""Counter-based keys (scheduling/keys.py): Philox4x32-10 as published, keys that depend on the
row alone (so blocks and partitions give the same order), and the learned draw's law."""

import itertools
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from bss_cli import schema as S
from bss_cli.errors import ConfigError
from bss_cli.scheduling import keys
from bss_cli.scheduling.schedule_io import ScheduleFile, ScheduleJob, write_schedule
from bss_cli.scheduling.schedulers import ScheduleConfig, make_scheduler
from bss_cli.scoring.scores import score_manifest

# Random123's known-answer vectors for Philox4x32-10 (its tests/kat_vectors)
KAT = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
       ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
       ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox_known_answers(counter, key, expected):
    assert tuple(int(x) for x in keys.philox4x32(counter, key)) == expected


def test_a_rows_key_does_not_depend_on_the_other_rows():
    rows = np.random.default_rng(0).permutation(10_000)
    whole = keys.uniform(7, 3, rows)
    for blocks in (1, 2, 4, 7):
        parts = np.array_split(np.arange(len(rows)), blocks)
        assert np.array_equal(np.concatenate([keys.uniform(7, 3, rows[p]) for p in parts]), whole)
    assert (whole > 0).all() and (whole < 1).all()
    assert not np.array_equal(keys.uniform(7, 4, rows), whole) and not np.array_equal(keys.uniform(8, 3, rows), whole)
    assert abs(whole.mean() - 0.5) < 0.01 and abs(whole.var() - 1 / 12) < 0.002


@pytest.mark.parametrize("name", ["learned", "curriculum", "random", "paced-random"])
def test_an_order_is_the_same_from_any_subset_order_of_the_rows(name):
    """The scheduler over rows given in another order (another partitioning, concatenated) draws the
    same samples in the same order: the keys follow the rows, ties go by row."""
    rng = np.random.default_rng(1)
    n = 500
    balance = np.round(rng.uniform(-1, 1, n), 2)  # rounded: ties in balance, broken by row
    rows = np.arange(1000, 1000 + n)
    cfg = ScheduleConfig(scheduler=name, seed=3, t_grow=4)
    ref = make_scheduler(balance, cfg, rows=rows)
    shuffled = rng.permutation(n)
    other = make_scheduler(balance[shuffled], cfg, rows=rows[shuffled])
    for e in range(5):
        a, _ = ref.epoch(e)
        b, _ = other.epoch(e)
        assert np.array_equal(rows[a], rows[shuffled][b])


def _perm_probabilities(p):
    """Exact law of a draw without replacement (successive sampling) over every permutation."""
    out = {}
    for perm in itertools.permutations(range(len(p))):
        prob, left = 1.0, 1.0
        for i in perm:
            prob *= p[i] / left
            left -= p[i]
        out[perm] = prob
    return out


def _chi2(counts: dict, exact: dict, n: int) -> float:
    return sum((counts.get(k, 0) - n * q) ** 2 / (n * q) for k, q in exact.items())


def test_the_keyed_draw_has_the_law_of_torch_multinomial_without_replacement():
    """Every permutation of 4 weighted samples, over 40,000 epochs: the keyed draw and
    torch.multinomial(p, 4, replacement=False) both fit the exact successive-sampling law
    (chi-square, 23 degrees of freedom: 99.99 % quantile 55.5)."""
    p = np.array([0.1, 0.2, 0.3, 0.4])
    exact = _perm_probabilities(p)
    n = 40_000
    rows = np.arange(4)
    epochs = np.arange(n)[:, None]
    drawn = np.argsort(keys.exponential(11, epochs, rows[None, :]) / p, axis=1)  # every epoch at once
    for e in range(0, n, 997):  # the same keys as the one-epoch path
        assert np.array_equal(drawn[e], keys.weighted_order(p, 11, e, rows))
    ours: dict = {}
    for perm in map(tuple, drawn.tolist()):
        ours[perm] = ours.get(perm, 0) + 1
    g = torch.Generator().manual_seed(0)
    draws = torch.multinomial(torch.tensor(p).expand(n, 4), 4, replacement=False, generator=g)
    theirs: dict = {}
    for perm in map(tuple, draws.tolist()):
        theirs[perm] = theirs.get(perm, 0) + 1
    assert _chi2(ours, exact, n) < 55.5
    assert _chi2(theirs, exact, n) < 55.5
    # and the first position alone: P(first = i) = p_i
    first = np.array([sum(c for k, c in ours.items() if k[0] == i) for i in range(4)]) / n
    assert np.abs(first - p).max() < 4 * math.sqrt(0.25 / n)


def test_schedules_are_format_2_and_format_1_files_still_read(tiny_manifest, tmp_path):
    job = ScheduleJob(score_manifest(tiny_manifest), ScheduleConfig(scheduler="learned", seed=2), [0, 1])
    write_schedule(job, tmp_path / "s.parquet")
    f = ScheduleFile(tmp_path / "s.parquet")
    assert f.metadata[S.META_FORMAT_VERSION] == "2" and f.metadata[S.META_DRAW] == keys.DRAW
    assert f.epoch(5)["sample_id"].to_pylist() == next(ScheduleJob(job.scores, job.config, [5]).tables())[
        "sample_id"].to_pylist()  # drawn past the file by its own rule
    t = pq.read_table(tmp_path / "s.parquet")
    meta = dict(t.schema.metadata)
    meta[S.META_FORMAT_VERSION.encode()] = b"1"
    del meta[S.META_DRAW.encode()]
    pq.write_table(t.replace_schema_metadata(meta), tmp_path / "old.parquet", row_group_size=len(t) // 2)
    old = ScheduleFile(tmp_path / "old.parquet")
    assert old.epoch(1)["row"].to_pylist() == f.epoch(1)["row"].to_pylist()
    with pytest.raises(ConfigError, match="format 1 schedule, drawn by an earlier generator"):
        old.epoch(5)
