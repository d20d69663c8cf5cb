"""ResNet-20 (He et al. 2016, CIFAR, shortcut option A) in plain PyTorch: the benchmark's reference.

Layer for layer our ``resnet20`` with ``shortcut="A"``: 3x3 convolutions without
bias, batch norm (epsilon 1.001e-5, Torch momentum 0.1 = Keras 0.9), option A
shortcuts that subsample and append zero channels at the end (as our
``ZeroPadShortcut`` does), global average pooling and a 10-way linear layer:
269,722 trainable parameters. It takes the same raw uint8 NHWC pixels and
scales them by 1/255 inside, as our ``Preprocess`` layer does.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

EPSILON = 1.001e-5


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, eps=EPSILON)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=EPSILON)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        skip = x
        if self.stride > 1 or self.extra:
            skip = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra))
        return F.relu(y + skip)


class ResNet20(nn.Module):
    def __init__(self, num_classes: int = 10, blocks_per_stage: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16, eps=EPSILON)
        blocks, cin = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for index in range(blocks_per_stage):
                blocks.append(BasicBlock(cin, width, stride if index == 0 else 1))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, pixels):
        x = pixels.permute(0, 3, 1, 2).float() / 255.0  # NHWC uint8 -> NCHW float, as Preprocess scales
        x = F.relu(self.bn(self.conv(x)))
        x = self.blocks(x)
        return self.fc(x.mean((2, 3)))


def trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
