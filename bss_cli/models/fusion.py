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
    kinds: dict[str, str] = field(default_factory=dict)  # modality -> vector | array | audio | image | text
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
        return VisualResNet18(cfg.hidden, channels=int(shape[1]) if isinstance(shape, list) and len(shape) == 4 else 3)
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


class TextConvEncoder(nn.Module):
    """Token ids [B, L] (float, as features travel) -> [B, width]: an embedding of the hashed-word
    vocabulary, two 1-D convolutions (width 3) and a max over the non-padding tokens. Small and
    trained from scratch (the built-in text encoder)."""

    def __init__(self, vocab: int, width: int, pad_id: int = 0, dropout: float = 0.1):
        super().__init__()
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab, width, padding_idx=pad_id)
        self.convs = nn.Sequential(nn.Conv1d(width, width, 3, padding=1), nn.ReLU(),
                                   nn.Conv1d(width, width, 3, padding=1), nn.ReLU())
        self.drop = nn.Dropout(dropout)
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x.long()
        mask = (ids != self.pad_id).unsqueeze(1)  # [B, 1, L]
        h = self.convs(self.embed(ids).transpose(1, 2))  # [B, W, L]
        h = h.masked_fill(~mask, float("-inf")).amax(dim=2)
        return self.drop(torch.where(torch.isfinite(h), h, torch.zeros_like(h)))  # an empty text: zeros


class HFTextEncoder(nn.Module):
    """A Hugging Face encoder from a local folder (safetensors only): token ids [B, L] -> the first
    token's final hidden state ([CLS] for BERT-like models), [B, hidden_size]. Fine-tuned with the
    rest of the model, as the paper fine-tunes BERT."""

    def __init__(self, folder: str, pad_id: int):
        super().__init__()
        from bss_cli.data.text import local_model_folder

        local_model_folder(folder)
        try:
            from transformers import AutoModel
        except ImportError:
            raise ConfigError("--text-model needs transformers: pip install 'bss[hf]'") from None
        try:
            self.model = AutoModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)
        except Exception as exc:
            raise ConfigError(f"--text-model {folder}: the model cannot be loaded ({type(exc).__name__}: "
                              f"{str(exc)[:300]})") from None
        self.pad_id = pad_id
        self.out_dim = int(self.model.config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x.long()
        return self.model(input_ids=ids, attention_mask=(ids != self.pad_id).long()).last_hidden_state[:, 0]


def text_encoder(modality: str, shape, cfg: ModelConfig) -> nn.Module:
    """The text modality's encoder: the local Hugging Face model its tokens came from, else the
    built-in convolutional one."""
    from bss_cli.data.text import VOCAB

    spec = (cfg.extra.get("text") or {}).get(modality, {})
    if spec.get("model"):
        return HFTextEncoder(spec["model"], int(spec.get("pad_id", 0)))
    return TextConvEncoder(VOCAB, cfg.hidden, int(spec.get("pad_id", 0)), cfg.dropout)


def resnet50_encoder(shape: int | list[int], kind: str, cfg: ModelConfig) -> nn.Module:
    """ResNet-50 (torchvision's layout and names) for image modalities: the paper's image-text encoder."""
    from bss_cli.models.resnet import VisualResNet50

    if kind != "image":
        raise ConfigError(f"encoder 'resnet50' takes image modalities, not {kind}")
    return VisualResNet50(cfg.hidden)


def video3d_encoder(shape: int | list[int], kind: str, cfg: ModelConfig) -> nn.Module:
    """A small 3-D CNN for volume modalities ([C, T, H, W] arrays: optical flow)."""
    from bss_cli.models.resnet import Video3D

    if kind != "volume":
        raise ConfigError(f"encoder 'video3d' takes volume modalities (.npy [C, T, H, W] arrays), not {kind}")
    return Video3D(int(shape[0]), cfg.hidden)


# name -> builder(input shape, modality kind, config) -> module with attribute out_dim.
ENCODERS: dict[str, Callable[[int | list[int], str, ModelConfig], nn.Module]] = {
    "mlp": mlp_encoder,
    "resnet18": resnet18_encoder,
    "resnet50": resnet50_encoder,
    "video3d": video3d_encoder,
}
DEFAULT_ENCODERS = {"audio": "resnet18", "image": "resnet18", "volume": "video3d"}


def load_encoder_weights(module: nn.Module, modality: str, path: str) -> None:
    """A state_dict file (read safely: tensors and plain values only) into the encoder, or into its
    ``trunk`` (a torchvision-style file has no ``trunk.`` prefix); every tensor it names must have
    the encoder's shape, and most of the encoder must be covered (a trunk without its head is fine)."""
    from bss_cli.artifacts import require_regular_file

    where = f"--encoder-weights {modality}={path}"
    require_regular_file(path, f"--encoder-weights {modality}=")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a missing, foreign or code-carrying file
        raise ConfigError(f"{where}: cannot be read as tensors only ({str(exc)[:300]})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{where}: not a state_dict (a mapping of names to tensors)")
    targets = [module] + ([module.trunk] if isinstance(getattr(module, "trunk", None), nn.Module) else [])
    target = max(targets, key=lambda t: len(set(state) & set(t.state_dict())))
    own = target.state_dict()
    common = set(state) & set(own)
    if not common:
        raise ConfigError(f"{where}: no tensor name matches the {modality} encoder (it expects names like "
                          f"{next(iter(own))!r}, the file has {next(iter(state), 'none')!r})")
    wrong = [f"{k}: file {list(state[k].shape)}, encoder {list(own[k].shape)}" for k in sorted(common)
             if state[k].shape != own[k].shape]
    if wrong:
        raise ConfigError(f"{where}: {len(wrong)} tensor(s) have another shape than the {modality} encoder's ("
                          + "; ".join(wrong[:3]) + "); the file is for another architecture or width (--hidden "
                          "sets the encoders' width: 64 is the standard network)")
    params = [k for k in own if not k.endswith("num_batches_tracked")]
    covered = sum(k in common for k in params)
    if covered < len(params) // 2:
        raise ConfigError(f"{where}: covers {covered} of the {modality} encoder's {len(params)} tensors; a file for "
                          "this encoder covers most of them")
    target.load_state_dict({k: state[k] for k in common}, strict=False)


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
            if kind == "text":
                encoders[m] = text_encoder(m, shape, cfg)
                if m in cfg.encoder_weights:
                    load_encoder_weights(encoders[m], m, cfg.encoder_weights[m])
                continue
            name = cfg.encoder if kind == "vector" else cfg.array_encoder if kind == "array" else \
                cfg.extra.get("image_encoder", "resnet18") if kind == "image" else DEFAULT_ENCODERS[kind]
            if name not in ENCODERS:
                raise ConfigError(f"unknown encoder {name!r} for {m}; choose one of: {', '.join(ENCODERS)}")
            encoders[m] = ENCODERS[name](shape, cfg.kind(m), cfg)
            if m in cfg.encoder_weights:
                load_encoder_weights(encoders[m], m, cfg.encoder_weights[m])
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
            if m not in self.vector_names:  # token ids, raw media: not standardised
                continue
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
    if not callable(fn):
        raise ConfigError(f"--model {factory!r}: {fn_name} is a {type(fn).__name__}, not a function that builds a model")
    model = fn(cfg)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"--model {factory!r} returned {type(model).__name__}, expected a torch.nn.Module (the "
                          "model it builds from the ModelConfig it is given)")
    return model


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
