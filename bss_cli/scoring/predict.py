"""Predictions from a bss model: inference-mode forward passes and per-sample gradient norms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from bss_cli.artifacts import fingerprint_text
from bss_cli.data.datasets import ManifestData
from bss_cli.data.manifest import Manifest
from bss_cli.errors import ConfigError
from bss_cli.models.devices import autocast
from bss_cli.models.fusion import ModelConfig, build_model, check_outputs, joint_loss
from bss_cli.scoring.criteria import (
    LossWeights,
    Predictions,
    RowParts,
    get_criterion,
    row_parts,
)

Progress = Callable[[int, int], None]  # (done, total)



@torch.inference_mode()
def _forward_pass(model, data: ManifestData, rows: np.ndarray, batch_size: int, progress: Progress | None,
                  embeddings: bool):
    """Logits (and embeddings when asked) of ``rows``, float32, kept on the device until the end:
    one host transfer per output, no sync per batch."""
    device = next(model.parameters()).device
    logits = {m: [] for m in data.names}
    fused, emb = [], {m: [] for m in data.names}
    done = 0
    for xb, _ in data.iter_batches(rows, batch_size):
        xb = {m: v.to(device, non_blocking=True) for m, v in xb.items()}
        out = model(xb)
        for m in data.names:
            logits[m].append(out.logits[m].float())
            if embeddings:
                emb[m].append(out.embeddings[m].float())
        if out.fused is not None:
            fused.append(out.fused.float())
        done += len(next(iter(xb.values())))
        if progress:
            progress(done, len(rows))
    cat = lambda parts: torch.cat(parts).cpu().numpy()  # noqa: E731
    return ({m: cat(v) for m, v in logits.items()}, cat(fused) if fused else None,
            {m: cat(v) for m, v in emb.items() if v and v[0].ndim == 2})


def per_sample_grad_norms(model, data: ManifestData, rows: np.ndarray, weights: LossWeights,
                          chunk: int = 64) -> np.ndarray:
    """||dL_i/dtheta||_2 for every sample, vectorised with torch.func (no batch-size-1 loop)."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(p, x, y):
        out = functional_call(model, (p, buffers), ({m: v.unsqueeze(0) for m, v in x.items()},))
        return joint_loss(out, y.unsqueeze(0), weights.fused, weights.unimodal).sum()

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))
    norms = []
    for start in range(0, len(rows), chunk):
        xb, yb = data.batch(rows[start:start + chunk])
        dev = next(iter(params.values())).device
        g = per_sample(params, {m: v.to(dev) for m, v in xb.items()}, yb.to(dev))
        sq = sum(t.reshape(t.shape[0], -1).pow(2).sum(1) for t in g.values())
        norms.append(sq.sqrt().cpu())
    return torch.cat(norms).numpy().astype(np.float64)


def predict(model, data: ManifestData, rows: np.ndarray, *, weights: LossWeights, batch_size: int = 512,
            grad_norm: bool = False, embeddings: bool = False, progress: Progress | None = None,
            amp: bool = False) -> Predictions:
    """Model outputs (float32 logits) for manifest ``rows`` in eval mode (BatchNorm and dropout frozen).

    ``embeddings``/``grad_norm``: also collect those (only feature-sim and gradient criteria need
    them). ``amp``: bf16 autocast for the forward pass (CUDA only).
    """
    was_training = model.training
    model.eval()
    try:
        with autocast(next(model.parameters()).device, amp):
            logits, fused, emb = _forward_pass(model, data, rows, batch_size, progress, embeddings)
        gn = per_sample_grad_norms(model, data, rows, weights) if grad_norm else None
    finally:
        model.train(was_training)
    labels = data.y.cpu().numpy()[rows]
    return Predictions(labels=labels, logits=logits, fused_logits=fused, embeddings=emb, grad_norm=gn)


def predict_parts(model, data: ManifestData, rows: np.ndarray, info, *, criterion: str, weights: LossWeights,
                  **kwargs) -> RowParts:
    """Per-sample scoring parts of manifest ``rows`` (see :class:`RowParts`), ``rows`` sharded over
    the ranks of ``info``: rank r predicts rows r, r + W, ..., reduces them to parts, and one tensor
    all_gather of those few floats per sample gives every rank the whole result, identical to one
    process's. Embeddings and gradient norms are computed only when the criterion needs them."""
    from bss_cli.models.distributed import gather_strided

    parts = get_criterion(criterion).parts
    mine = rows[info.rank::info.world_size]
    p = predict(model, data, mine, weights=weights, grad_norm="grad_norm" in parts,
                embeddings="feat_sim" in parts, **kwargs)
    local = row_parts(p, criterion, weights)
    if not info.enabled:
        return local
    return local.from_matrix(gather_strided(local.to_matrix(), len(rows), info))


@dataclass
class ModelSource:
    """Which model produces the predictions: a fresh seeded model, a checkpoint, or a warm-up."""

    kind: str = "init"  # init | checkpoint | warmup
    checkpoint: str | None = None
    warmup_epochs: int = 0
    seed: int = 0
    hidden: int = 64
    lr: float = 0.01
    batch_size: int = 64
    model: str | None = None  # the --model plug-in the user named (never taken from a file)
    # how a warm-up trains: the run's optimiser and clipping (bss train passes its own settings)
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    clip_grad: float = 0.0
    model_settings: dict | None = None  # the run's encoders, layers, dropout (ModelConfig fields)

    def describe(self) -> str:
        if self.kind == "checkpoint":
            return f"checkpoint:{self.checkpoint}"
        if self.kind == "warmup":
            return f"warmup:{self.warmup_epochs}"
        return "init"


def fresh_model(manifest: Manifest, data: ManifestData, seed: int, hidden: int = 64, factory: str | None = None,
                **model_settings):
    """The seeded, freshly initialised late-fusion model with train-split standardisation."""
    if manifest.text:  # each text modality's tokenizer settings and padding id (and a local HF model)
        model_settings["extra"] = {**model_settings.get("extra", {}), "text": manifest.text}
    cfg = ModelConfig(modalities=data.dims, n_classes=manifest.n_classes, hidden=hidden, kinds=data.kinds,
                      **model_settings)
    torch.manual_seed(seed)
    model = build_model(cfg, factory).to(data.device)
    if hasattr(model, "set_standardisation"):
        model.set_standardisation(data.standardisation(manifest.indices("train")))
    check_model(model, data, manifest, f"--model {factory}" if factory else "the built-in model")
    return model, cfg


def check_model(model, data: ManifestData, manifest: Manifest, where: str) -> None:
    """One forward pass on two samples (no RNG drawn), refusing outputs training cannot use."""
    xb, _ = data.batch(manifest.indices("train")[:2])
    device = next(model.parameters()).device
    check_outputs(model, {m: v.to(device) for m, v in xb.items()}, manifest.n_classes, where)


def model_for_source(source: ModelSource, manifest: Manifest, data: ManifestData, weights: LossWeights,
                     info=None, progress: Progress | None = None):
    """Build (and for a warm-up, train) the model a source names; return it and its fingerprint.

    Under torchrun (``info``), rank 0's warm-up weights are broadcast, so every rank scores with
    the same model even where a GPU's kernels are not deterministic.
    """
    if source.kind == "checkpoint":
        from bss_cli.models.checkpoints import model_from_checkpoint

        model, cfg, fp = model_from_checkpoint(source.checkpoint, source.model)
        if cfg.modalities != data.dims or cfg.n_classes != manifest.n_classes:
            raise ConfigError(
                f"--checkpoint {source.checkpoint}: model expects modalities {cfg.modalities} and "
                f"{cfg.n_classes} classes, the manifest has {data.dims} and {manifest.n_classes}; "
                "use a checkpoint trained on this data set"
            )
        model = model.to(data.device)
        check_model(model, data, manifest, f"--checkpoint {source.checkpoint}")
        return model, fp
    if source.kind not in ("init", "warmup"):
        raise ConfigError(f"unknown model source {source.kind!r}; choose init, checkpoint or warmup")
    model, cfg = fresh_model(manifest, data, source.seed, source.hidden, source.model, **(source.model_settings or {}))
    if source.kind == "warmup":
        if source.warmup_epochs < 1:
            raise ConfigError("--warmup must be at least 1 epoch")
        from bss_cli.models.step import OptimConfig, make_optimizer, train_epoch

        opt = make_optimizer(model, OptimConfig(source.optimizer, source.lr, source.momentum, source.weight_decay))
        gen = np.random.default_rng([source.seed, 1])
        train_rows = manifest.indices("train")
        for epoch in range(source.warmup_epochs):
            train_epoch(model, opt, data, gen.permutation(train_rows), batch_size=source.batch_size, weights=weights,
                        clip=source.clip_grad)
            if progress:
                progress(epoch + 1, source.warmup_epochs)
        if info is not None and info.enabled:
            import torch.distributed as dist

            for tensor in model.state_dict().values():
                dist.broadcast(tensor, src=0)
    trained = f"|{source.optimizer},{source.lr},{source.momentum},{source.weight_decay},{source.clip_grad}" \
        if source.kind == "warmup" else ""
    fp = fingerprint_text(f"{source.describe()}|seed={source.seed}|{cfg.to_dict()}|{manifest.fingerprint}{trained}")
    return model, fp
