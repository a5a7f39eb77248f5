"""The CIFAR ResNets of He et al. (2016), section 4.2, written for oddkit.

Depth ``6n + 2``: a 3x3 convolution stem with 16 channels (+ BN + ReLU), three stages of
``n`` basic blocks with 16, 32 and 64 channels (the first block of stages 2 and 3 halves
the resolution with a stride-2 convolution), global average pooling and one linear layer
(64 -> classes). ResNet-20/32/44/56 have n = 3, 5, 7, 9.

Shortcuts are the paper's "option A": when a block changes the shape, the identity is
subsampled with stride 2 and zero channels are added, half before and half after the
existing ones, so the shortcut has no parameters. The module names (``conv1``, ``bn1``,
``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}``, ``linear``) follow the layout of the widely
shared CIFAR-10 checkpoints (``../shared/weights``), so those load with ``strict=True``.

Reference: K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image
Recognition", CVPR 2016.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: blocks per stage for each supported depth (depth = 6 n + 2)
DEPTHS: dict[int, int] = {20: 3, 32: 5, 44: 7, 56: 9}
STAGE_WIDTHS: tuple[int, int, int] = (16, 32, 64)


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with a parameter-free ("option A") shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.stride = stride
        self.extra_channels = out_ch - in_ch

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Identity, or stride-2 subsampling plus zero channels split evenly on both sides."""
        if self.stride == 1 and self.extra_channels == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        before = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, before, self.extra_channels - before))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """A CIFAR ResNet of depth ``6 n + 2`` (He et al., CVPR 2016, section 4.2).

    ``forward(x)`` returns logits; :meth:`forward_features` returns the pooled 64-d
    penultimate features (after the last ReLU), so ``logits = linear(features)``.
    """

    def __init__(self, depth: int = 20, num_classes: int = 10) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth!r}.")
        n = DEPTHS[depth]
        w1, w2, w3 = STAGE_WIDTHS
        self.depth = depth
        self.conv1 = _conv3x3(3, w1)
        self.bn1 = nn.BatchNorm2d(w1)
        self.stem_relu = nn.ReLU()  # a module (no parameters) so that hooks can read the stem
        self.layer1 = self._stage(w1, w1, n, stride=1)
        self.layer2 = self._stage(w1, w2, n, stride=2)
        self.layer3 = self._stage(w2, w3, n, stride=2)
        self.linear = nn.Linear(w3, num_classes)
        self._init_weights()

    @staticmethod
    def _stage(in_ch: int, out_ch: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_ch, out_ch, stride)]
        blocks += [BasicBlock(out_ch, out_ch, 1) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def _init_weights(self) -> None:
        """He (Kaiming) normal initialisation of convolutions and the linear layer."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features, shape ``(n, 64)``."""
        out = self.stem_relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return out.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.forward_features(x))
