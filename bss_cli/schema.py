"""Column names, artifact kinds and metadata keys, declared once.

Writers build against these names; readers check against them. Every artifact is a Parquet file
whose schema metadata holds ``bss.kind`` and ``bss.format_version`` plus kind-specific provenance
under ``bss.*`` keys (values are UTF-8 strings; structured values are JSON).
"""

from __future__ import annotations

# --- manifest -------------------------------------------------------------------------------
SAMPLE_ID = "sample_id"
LABEL = "label"
SPLIT = "split"
REQUIRED_MANIFEST_COLUMNS = (SAMPLE_ID, LABEL, SPLIT)
SPLITS = ("train", "val", "test")

# --- artifact kinds and metadata keys ---------------------------------------------------------
KIND_MANIFEST = "manifest"
KIND_SCORES = "scores"
KIND_PREDICTIONS = "predictions"
KIND_SCHEDULE = "schedule"
KIND_METRICS = "metrics"
KIND_TIMINGS = "timings"
KIND_STUDY = "study"

FORMAT_VERSION = "1"
# Kinds whose format moved on: the version written now, and every version still read.
# schedule 2: random orders are sorts by counter-based keys of (seed, epoch, manifest row)
#   (scheduling/keys.py; bss.draw names the generator). Version 1 files drew from a numpy stream
#   per (seed, epoch); their written epochs read as before, epochs past them are not drawn.
KIND_VERSIONS = {KIND_SCHEDULE: ("2", ("1", "2"))}
META_DRAW = "bss.draw"


def format_version(kind: str) -> str:
    """The format version bss writes for ``kind``."""
    return KIND_VERSIONS.get(kind, (FORMAT_VERSION,))[0]


def readable_versions(kind: str) -> tuple[str, ...]:
    """The format versions of ``kind`` this bss reads."""
    return KIND_VERSIONS.get(kind, (FORMAT_VERSION, (FORMAT_VERSION,)))[1]

META_KIND = "bss.kind"
META_FORMAT_VERSION = "bss.format_version"
META_BSS_VERSION = "bss.version"
META_CRITERION = "bss.criterion"
META_SOURCE = "bss.prediction_source"
META_SOURCE_FINGERPRINT = "bss.prediction_source_fingerprint"
META_MANIFEST_FINGERPRINT = "bss.manifest_fingerprint"
META_SCORES_FINGERPRINT = "bss.scores_fingerprint"
META_SEED = "bss.seed"
META_MODALITIES = "bss.modalities"
META_CLASSES = "bss.classes"
META_LOSS_WEIGHTS = "bss.loss_weights"
META_SCHEDULER = "bss.scheduler"
META_SCHEDULER_PARAMS = "bss.scheduler_params"
META_EPOCHS = "bss.epochs"
META_N_SAMPLES = "bss.n_samples"
META_SCORED_SPLIT = "bss.scored_split"

# --- scores ---------------------------------------------------------------------------------
ROW = "row"  # the sample's row index in the manifest
BALANCE = "balance"  # higher = more balanced, in [-1, 1] for the pairs
RANK = "rank"  # 0 = most balanced
NORM_SUFFIX = "_norm"
LOSS_PREFIX = "loss_"  # per-modality loss column: loss_<modality>
PTRUE_PREFIX = "p_true_"  # per-modality true-class probability: p_true_<modality>
FUSED = "fused"

# --- predictions file (written by bss or any other trainer) ---------------------------------
LOGITS_PREFIX = "logits_"  # logits_<modality>: list<float> of length C, one per modality
FUSED_LOGITS = "logits_fused"  # optional fused-head logits
EMBEDDING_PREFIX = "embedding_"  # optional embedding_<modality>: list<float>
GRAD_NORM = "grad_norm"  # optional per-sample gradient norm

# --- schedule -------------------------------------------------------------------------------
EPOCH = "epoch"
POSITION = "position"
PROBABILITY = "probability"
