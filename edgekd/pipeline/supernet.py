"""A weight-sharing supernet over a layer-wise space (``mbv2``), trained one sampled path at a time (SPOS).

Every slot of the space holds one ``Block`` per operator; a path (the space's choice dict) runs one of them per
slot, or none for ``skip``. Any path is extracted as a stand-alone network with its inherited weights
(``extract``), which is exactly ``build(space.decode(path))`` loaded with the supernet's weights. BatchNorm
statistics are shared by all paths during training, so a path is scored after recalibrating them on training
images (``recalibrate_bn``), as SPOS does.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from edgekd.errors import ConfigError
from edgekd.pipeline.arch import ArchSpec, Block, Network, build, conv_bn_act
from edgekd.pipeline.data import Data
from edgekd.pipeline.space import SKIP, Choices, MBV2Space, SearchSpace


class Supernet(nn.Module):
    """stem -> fixed first block -> one operator per slot -> head -> pool -> classifier, weights shared."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        if not isinstance(space, MBV2Space):
            raise ConfigError(f"one-shot evaluators need a layer-wise space (mbv2), not {space.name!r}")
        self.space = space
        self.stem = conv_bn_act(space.in_channels, space.stem_channels, 3, space.stem_stride)
        self.first = Block(space.stem_channels, space.first)
        self.slots = nn.ModuleDict({
            slot.name: nn.ModuleDict({op: Block(slot.in_channels, space.block_of(slot, op))
                                      for op in slot.ops if op != SKIP})
            for slot in space.slots
        })
        self.head = conv_bn_act(space.slots[-1].out_channels, space.head_channels, 1)
        self.classifier = nn.Linear(space.head_channels, space.num_classes)
        self.to(memory_format=torch.channels_last)  # 3x faster depthwise convolutions on CPU

    def layers(self, path: Choices) -> list[nn.Module]:
        """The modules ``path`` runs, in order (stem first, the head last; skipped slots left out)."""
        chosen = [self.slots[s.name][path[s.name]] for s in self.space.slots if path[s.name] != SKIP]
        return [self.stem, self.first, *chosen, self.head]

    def forward(self, x: Tensor, path: Choices) -> Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        for layer in self.layers(path):
            x = layer(x)
        return self.classifier(x.mean((2, 3)))

    def extract(self, path: Choices) -> tuple[Network, ArchSpec]:
        """``path`` as a stand-alone network with the supernet's weights, and its ArchSpec."""
        spec = self.space.decode(path)
        net = build(spec)
        sources = self.layers(path)
        targets = [net.stem, *net.blocks, net.head]
        for src, dst in zip(sources, targets, strict=True):
            dst.load_state_dict(src.state_dict())
        net.classifier.load_state_dict(self.classifier.state_dict())
        return net, spec


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Tensor]) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them (cumulative average) on ``batches``."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    for x in batches:
        model(x)
    for bn in norms:
        bn.momentum = 0.1
    model.eval()


def calibration_batches(data: Data, images: int = 256, batch_size: int = 64) -> list[Tensor]:
    """The first ``images`` mini-train images (a fixed set, so every path is calibrated alike)."""
    out, seen = [], 0
    for x, _, _ in data.batches("mini_train", batch_size):
        out.append(x)
        seen += len(x)
        if seen >= images:
            break
    return out


@torch.no_grad()
def path_logits(supernet: Supernet, path: Choices, calibration: list[Tensor], images: Tensor) -> Tensor:
    """Logits of ``path`` with inherited weights, after recalibrating its BatchNorm statistics."""
    net, _ = supernet.extract(path)
    recalibrate_bn(net, calibration)
    return net(images)
