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

import torch
from torch import nn

from bss_cli.errors import ConfigError


class FusionOutput(NamedTuple):
    logits: dict[str, torch.Tensor]  # modality -> [B, C]
    fused: torch.Tensor | None  # [B, C]
    embeddings: dict[str, torch.Tensor]  # modality -> [B, D]


@dataclass
class ModelConfig:
    modalities: dict[str, int]  # modality -> input length
    n_classes: int
    encoder: str = "mlp"
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.1
    extra: dict = field(default_factory=dict)  # encoder-specific settings

    def to_dict(self) -> dict:
        return asdict(self)


def mlp_encoder(in_dim: int, cfg: ModelConfig) -> nn.Module:
    """``layers`` Linear-ReLU(-Dropout) blocks of width ``hidden``; output [B, hidden]."""
    blocks: list[nn.Module] = []
    width = in_dim
    for _ in range(max(1, cfg.layers)):
        blocks += [nn.Linear(width, cfg.hidden), nn.ReLU()]
        if cfg.dropout > 0:
            blocks.append(nn.Dropout(cfg.dropout))
        width = cfg.hidden
    return nn.Sequential(*blocks)


# name -> builder(input length, config) returning a module with output [B, cfg.hidden].
ENCODERS: dict[str, Callable[[int, ModelConfig], nn.Module]] = {"mlp": mlp_encoder}


class LateFusion(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.encoder not in ENCODERS:
            raise ConfigError(f"unknown encoder {cfg.encoder!r}; choose one of: {', '.join(ENCODERS)}")
        self.cfg = cfg
        self.names = list(cfg.modalities)
        self.encoders = nn.ModuleDict({m: ENCODERS[cfg.encoder](d, cfg) for m, d in cfg.modalities.items()})
        self.heads = nn.ModuleDict({m: nn.Linear(cfg.hidden, cfg.n_classes) for m in cfg.modalities})
        self.fused = nn.Linear(cfg.hidden * len(cfg.modalities), cfg.n_classes)
        for m, d in cfg.modalities.items():
            self.register_buffer(f"mean_{m}", torch.zeros(d))
            self.register_buffer(f"std_{m}", torch.ones(d))

    def set_standardisation(self, stats: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        for m, (mean, std) in stats.items():
            getattr(self, f"mean_{m}").copy_(mean)
            getattr(self, f"std_{m}").copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def forward(self, inputs: dict[str, torch.Tensor]) -> FusionOutput:
        emb = {}
        for m in self.names:
            x = (inputs[m] - getattr(self, f"mean_{m}")) / getattr(self, f"std_{m}")
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
