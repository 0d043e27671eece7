"""The paper's Sarcasm model as a ``bss train --model`` plug-in: pretrained ResNet-50 and BERT from
local files, each branch projected to 768, **one classifier shared by both unimodal branches**, and
a fused classifier on their concatenation (the authors' Sarcasm script). The built-in late-fusion
model gives each modality its own head; this is the one thing it cannot express.

    bss build-manifest sarcasm ROOT -o sarcasm.parquet
    PYTHONPATH=examples bss train sarcasm.parquet --out runs/sarcasm --model sarcasm_model:build \\
        --encoder-weights image=resnet50-0676ba61.pth --text-model ./bert-base-uncased \\
        --optimizer adam --lr 1e-5 --epochs 100 --batch-size 32 --scheduler learned

The image weights are torchvision's ImageNet ResNet-50 state_dict file (read as tensors only, every
shape checked); the text model is a folder written by ``save_pretrained`` (safetensors only; bss
never downloads). Both must be on disk before the run.
"""

from __future__ import annotations

import torch
from torch import nn

from bss_cli.models.fusion import FusionOutput, HFTextEncoder, ModelConfig, load_encoder_weights
from bss_cli.models.resnet import ResNet50Trunk

PROJECTION = 768


class ImageBranch(nn.Module):
    """ResNet-50 -> the ImageNet classifier's 1000 logits (as the script keeps them) -> 768."""

    def __init__(self, width: int):
        super().__init__()
        self.trunk = ResNet50Trunk(3, width)
        self.fc = nn.Linear(self.trunk.out_dim, 1000)  # torchvision's fc: its weights load with the trunk's
        self.project = nn.Linear(1000, PROJECTION)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:  # [B, K, 3, S, S]
        b, k = frames.shape[:2]
        fmap = self.trunk(frames.flatten(0, 1)).mean(dim=(2, 3))
        return self.project(self.fc(fmap).view(b, k, -1).mean(1))


class SarcasmModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        kinds = {m: cfg.kind(m) for m in cfg.modalities}
        self.image = next((m for m, k in kinds.items() if k == "image"), None)
        self.text = next((m for m, k in kinds.items() if k == "text"), None)
        if self.image is None or self.text is None or len(kinds) != 2:
            raise ValueError(f"the Sarcasm model takes one image and one text modality, the manifest has {kinds}")
        spec = cfg.extra["text"][self.text]
        if not spec.get("model"):
            raise ValueError("the Sarcasm model encodes text with BERT: give --text-model PATH")
        self.image_branch = ImageBranch(cfg.hidden)
        if self.image in cfg.encoder_weights:  # torchvision's file: the trunk's tensors, and its fc
            path = cfg.encoder_weights[self.image]
            load_encoder_weights(self.image_branch.trunk, self.image, path)  # tensors only, every shape checked
            state = torch.load(path, map_location="cpu", weights_only=True)
            fc = {k[3:]: v for k, v in state.items() if k.startswith("fc.")}
            if fc:
                self.image_branch.fc.load_state_dict(fc)  # a shape mismatch raises
        self.text_branch = HFTextEncoder(spec["model"], int(spec.get("pad_id", 0)))
        self.text_project = nn.Linear(self.text_branch.out_dim, PROJECTION)
        self.shared_head = nn.Linear(PROJECTION, cfg.n_classes)  # both unimodal branches
        self.fused = nn.Linear(2 * PROJECTION, cfg.n_classes)

    def forward(self, inputs: dict[str, torch.Tensor]) -> FusionOutput:
        e_img = self.image_branch(inputs[self.image])
        e_txt = self.text_project(self.text_branch(inputs[self.text]))
        logits = {self.image: self.shared_head(e_img), self.text: self.shared_head(e_txt)}
        return FusionOutput(logits, self.fused(torch.cat([e_img, e_txt], dim=1)),
                            {self.image: e_img, self.text: e_txt})


def build(cfg: ModelConfig) -> nn.Module:
    return SarcasmModel(cfg)
