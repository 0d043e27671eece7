"""The late-fusion model of method.md section 2, and the encoder registry.

One encoder per modality gives a feature e_m; a linear head per modality gives unimodal logits
z_m; a fused linear head on the concatenated features gives z_mm. Inputs are standardised with
train-split statistics stored as buffers, so a checkpoint carries everything it needs.

Plug-in contract (``--model module:function``): ``function(config: ModelConfig) -> nn.Module``
whose ``forward(inputs: dict[str, Tensor]) -> FusionOutput``, with one entry in
``FusionOutput.logits`` per modality of the manifest and ``fused`` either logits or None.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import nn

from bss_cli.errors import ConfigError


class FusionOutput(NamedTuple):
    logits: dict[str, torch.Tensor]  # modality -> [B, C]
    fused: torch.Tensor | None  # [B, C]
    embeddings: dict[str, torch.Tensor]  # modality -> [B, D]


@dataclass
class ModelConfig:
    modalities: dict[str, int | list[int]]  # modality -> input length (vector) or shape (audio, image)
    n_classes: int
    encoder: str = "mlp"  # encoder of vector modalities; audio and image take DEFAULT_ENCODERS
    array_encoder: str = "mlp"  # encoder of 2-D array modalities: mlp (flattened) or resnet18 (one-channel map)
    hidden: int = 64  # MLP width; ResNet-18 first-stage width (64 = the standard network)
    layers: int = 2
    dropout: float = 0.1
    kinds: dict[str, str] = field(default_factory=dict)  # modality -> vector | audio | image
    encoder_weights: dict[str, str] = field(default_factory=dict)  # modality -> state_dict file
    extra: dict = field(default_factory=dict)  # encoder-specific settings

    def to_dict(self) -> dict:
        return asdict(self)

    def kind(self, modality: str) -> str:
        return self.kinds.get(modality, "vector")


def mlp_encoder(shape: int | list[int], kind: str, cfg: ModelConfig) -> nn.Module:
    """``layers`` Linear-ReLU(-Dropout) blocks of width ``hidden``; output [B, hidden].

    A 2-D array modality arrives flattened, so the MLP sees its A * B values."""
    if kind not in ("vector", "array"):
        raise ConfigError(f"encoder 'mlp' takes vector or array modalities, not {kind}")
    blocks: list[nn.Module] = []
    width = int(np.prod(shape)) if kind == "array" else int(shape)
    for _ in range(max(1, cfg.layers)):
        blocks += [nn.Linear(width, cfg.hidden), nn.ReLU()]
        if cfg.dropout > 0:
            blocks.append(nn.Dropout(cfg.dropout))
        width = cfg.hidden
    net = nn.Sequential(*blocks)
    net.out_dim = cfg.hidden
    return net


def resnet18_encoder(shape: int | list[int], kind: str, cfg: ModelConfig) -> nn.Module:
    """ResNet-18 from scratch: spectrograms (audio) or pooled video frames (image)."""
    from bss_cli.models.resnet import AudioResNet18, VisualResNet18

    if kind == "audio":
        return AudioResNet18(cfg.hidden)
    if kind == "image":
        return VisualResNet18(cfg.hidden)
    if kind == "array":
        return ArrayResNet18(list(shape), cfg.hidden)
    raise ConfigError(f"encoder 'resnet18' takes audio, image or array modalities, not {kind}")


class ArrayResNet18(nn.Module):
    """A flattened [B, A * B] 2-D array as a one-channel [A, B] map through a ResNet-18."""

    def __init__(self, shape: list[int], width: int = 64):
        super().__init__()
        from bss_cli.models.resnet import AudioResNet18

        self.shape = shape
        self.net = AudioResNet18(width)
        self.out_dim = self.net.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.view(len(x), *self.shape))


# name -> builder(input shape, modality kind, config) -> module with attribute out_dim.
ENCODERS: dict[str, Callable[[int | list[int], str, ModelConfig], nn.Module]] = {
    "mlp": mlp_encoder,
    "resnet18": resnet18_encoder,
}
DEFAULT_ENCODERS = {"audio": "resnet18", "image": "resnet18"}


def _load_encoder_weights(module: nn.Module, modality: str, path: str) -> None:
    from bss_cli.artifacts import require_regular_file

    require_regular_file(path, f"--encoder-weights {modality}=")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a missing or foreign file
        raise ConfigError(f"--encoder-weights {modality}={path}: cannot be read ({exc})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not set(state) & set(module.state_dict()):
        raise ConfigError(f"--encoder-weights {modality}={path}: no key matches the {modality} encoder "
                          f"(expected keys like {next(iter(module.state_dict()))!r})")
    module.load_state_dict(state, strict=False)  # a partial match (a trunk without its head) is fine


class LateFusion(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.encoder not in ENCODERS:
            raise ConfigError(f"unknown encoder {cfg.encoder!r}; choose one of: {', '.join(ENCODERS)}")
        self.cfg = cfg
        self.names = list(cfg.modalities)
        encoders = {}
        for m, shape in cfg.modalities.items():
            kind = cfg.kind(m)
            name = cfg.encoder if kind == "vector" else cfg.array_encoder if kind == "array" else DEFAULT_ENCODERS[kind]
            if name not in ENCODERS:
                raise ConfigError(f"unknown encoder {name!r} for {m}; choose one of: {', '.join(ENCODERS)}")
            encoders[m] = ENCODERS[name](shape, cfg.kind(m), cfg)
            if m in cfg.encoder_weights:
                _load_encoder_weights(encoders[m], m, cfg.encoder_weights[m])
        self.encoders = nn.ModuleDict(encoders)
        self.heads = nn.ModuleDict({m: nn.Linear(e.out_dim, cfg.n_classes) for m, e in encoders.items()})
        self.fused = nn.Linear(sum(e.out_dim for e in encoders.values()), cfg.n_classes)
        self.vector_names = [m for m in self.names if cfg.kind(m) in ("vector", "array")]  # standardised inputs
        for m in self.vector_names:
            size = int(np.prod(cfg.modalities[m]))
            self.register_buffer(f"mean_{m}", torch.zeros(size))
            self.register_buffer(f"std_{m}", torch.ones(size))

    def set_standardisation(self, stats: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        for m, (mean, std) in stats.items():
            getattr(self, f"mean_{m}").copy_(mean)
            getattr(self, f"std_{m}").copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def forward(self, inputs: dict[str, torch.Tensor]) -> FusionOutput:
        emb = {}
        for m in self.names:
            x = inputs[m]
            if m in self.vector_names:
                x = (x - getattr(self, f"mean_{m}")) / getattr(self, f"std_{m}")
            emb[m] = self.encoders[m](x)
        logits = {m: self.heads[m](emb[m]) for m in self.names}
        fused = self.fused(torch.cat([emb[m] for m in self.names], dim=1))
        return FusionOutput(logits, fused, emb)


def joint_loss(out: FusionOutput, y: torch.Tensor, fused_weight: float, unimodal_weight: float) -> torch.Tensor:
    """Per-sample L = w_mm * CE(z_mm, y) + w_uni * sum_m CE(z_m, y); shape [B]."""
    ce = nn.functional.cross_entropy
    loss = unimodal_weight * sum(ce(z, y, reduction="none") for z in out.logits.values())
    if out.fused is not None and fused_weight:
        loss = loss + fused_weight * ce(out.fused, y, reduction="none")
    return loss


def build_model(cfg: ModelConfig, factory: str | None = None) -> nn.Module:
    """The built-in late-fusion model, or ``factory`` ('module:function') called with ``cfg``."""
    if not factory:
        return LateFusion(cfg)
    import importlib

    module_name, _, fn_name = factory.partition(":")
    if not module_name or not fn_name:
        raise ConfigError(f"--model {factory!r}: expected 'module:function', e.g. 'mypkg.models:build'")
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--model {factory!r}: cannot load it ({exc}); is the module on PYTHONPATH?") from None
    return fn(cfg)


def check_outputs(model: nn.Module, inputs: dict[str, torch.Tensor], n_classes: int, where: str) -> None:
    """Run ``model`` once on a small batch and refuse outputs that training cannot use.

    Catches a plug-in (or a checkpoint) whose ``forward`` returns the wrong type, the wrong heads or
    the wrong shapes before any training step, with a message saying what was expected.
    """
    batch = len(next(iter(inputs.values())))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(inputs)
    except Exception as exc:  # a plug-in's forward can fail in any way; say where
        raise ConfigError(f"{where}: the model's forward pass failed on a batch of {batch} "
                          f"({type(exc).__name__}: {str(exc)[:300]})") from None
    finally:
        model.train(was_training)
    expected = f"[{batch}, {n_classes}]"
    if not isinstance(out, FusionOutput):
        raise ConfigError(f"{where}: forward returned {type(out).__name__}; expected "
                          "bss_cli.models.FusionOutput(logits={modality: [B, C]}, fused=[B, C] or None, embeddings=...)")
    problems = []
    if not isinstance(out.logits, dict) or set(out.logits) != set(inputs):
        got = sorted(out.logits) if isinstance(out.logits, dict) else type(out.logits).__name__
        problems.append(f"logits for modalities {got}, expected one [B, C] tensor for each of {sorted(inputs)}")
    else:
        for m, z in out.logits.items():
            if not isinstance(z, torch.Tensor) or tuple(z.shape) != (batch, n_classes) or not z.is_floating_point():
                problems.append(f"logits[{m!r}] {_shape(z)}, expected a float tensor {expected}")
    if out.fused is not None and (not isinstance(out.fused, torch.Tensor) or tuple(out.fused.shape) != (batch, n_classes)):
        problems.append(f"fused {_shape(out.fused)}, expected None or a float tensor {expected}")
    if not isinstance(out.embeddings, dict):
        problems.append(f"embeddings {type(out.embeddings).__name__}, expected a dict modality -> [B, D]")
    if problems:
        raise ConfigError(f"{where}: the model's outputs do not fit {n_classes} classes and modalities "
                          f"{sorted(inputs)}: " + "; ".join(problems))


def _shape(z) -> str:
    return f"shape {list(z.shape)}" if isinstance(z, torch.Tensor) else f"of type {type(z).__name__}"
