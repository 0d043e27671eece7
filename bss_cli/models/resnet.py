"""ResNet-18 encoders written with torch alone (torchvision has no CPU build here).

The paper's audio-visual encoders, trained from scratch: one for log spectrograms (one input
channel) and one for video frames, whose frames go through the trunk as a batch and are then
pooled over time and space together (as the authors' visual net does with a 3-D average pool).
``width`` is the first stage's channel count (64 = the standard ResNet-18; smaller for tests).
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class ResNet18Trunk(nn.Module):
    """Stem + four stages of two basic blocks; returns the last feature map [B, 8*width, h, w]."""

    def __init__(self, in_channels: int, width: int = 64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages, c = [], width
        for i, c_out in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if i == 0 else 2
            stages += [BasicBlock(c, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c = c_out
        self.stages = nn.Sequential(*stages)
        self.out_dim = c
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class AudioResNet18(nn.Module):
    """[B, F, T] log spectrogram -> [B, 8*width]."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.trunk = ResNet18Trunk(1, width)
        self.out_dim = self.trunk.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x.unsqueeze(1)).mean(dim=(2, 3))


class VisualResNet18(nn.Module):
    """[B, K, C, H, W] frames (C 3, or 1 for depth) -> [B, 8*width], pooled over frames and space."""

    def __init__(self, width: int = 64, channels: int = 3):
        super().__init__()
        self.trunk = ResNet18Trunk(channels, width)
        self.out_dim = self.trunk.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, k = x.shape[:2]
        fmap = self.trunk(x.flatten(0, 1))  # [B*K, C, h, w]
        return fmap.view(b, k, *fmap.shape[1:]).mean(dim=(1, 3, 4))


class Bottleneck(nn.Module):
    """torchvision's ResNet-50 block, with its parameter names (so its ImageNet weights load as they are)."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int):
        super().__init__()
        c_out = width * self.expansion
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50Trunk(nn.Module):
    """The ResNet-50 of the paper's image-text settings, laid out and named as torchvision's
    (``conv1``, ``bn1``, ``layer1`` ... ``layer4``; no ``fc``), so ``--encoder-weights
    image=resnet50.pth`` takes torchvision's ImageNet state_dict file; [B, 3, H, W] -> [B, 32*width, h, w]."""

    def __init__(self, in_channels: int = 3, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c = width
        for i, (blocks, w) in enumerate(zip((3, 4, 6, 3), (width, 2 * width, 4 * width, 8 * width))):
            layer = []
            for b in range(blocks):
                layer.append(Bottleneck(c, w, 2 if b == 0 and i > 0 else 1))
                c = w * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.out_dim = c
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class VisualResNet50(nn.Module):
    """[B, K, 3, H, W] frames -> [B, 32*width], pooled over frames and space."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.trunk = ResNet50Trunk(3, width)
        self.out_dim = self.trunk.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, k = x.shape[:2]
        fmap = self.trunk(x.flatten(0, 1))
        return fmap.view(b, k, *fmap.shape[1:]).mean(dim=(1, 3, 4))


class Video3D(nn.Module):
    """A small 3-D CNN for video-like volumes (optical flow, depth arrays): [B, C, T, H, W] ->
    [B, 4*width]. A stem (3x7x7, spatial stride 2, max-pool) and three stages of 3x3x3
    convolutions (spatial stride 2), then an average over time and space. Trained from scratch;
    the paper's pretrained Inception-I3D is a --model plug-in (docs/settings.md)."""

    def __init__(self, channels: int, width: int = 64):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv3d(channels, width, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
                                   nn.BatchNorm3d(width), nn.ReLU(inplace=True),
                                   nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))]
        c = width
        for c_out in (width, 2 * width, 4 * width):
            layers += [nn.Conv3d(c, c_out, 3, (1, 2, 2), 1, bias=False), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True)]
            c = c_out
        self.net = nn.Sequential(*layers)
        self.out_dim = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(dim=(2, 3, 4))
