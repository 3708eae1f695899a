"""A weight-sharing supernet over a layer-wise space (``mbv2``), trained one sampled path at a time (SPOS).

Every slot of the space holds its MBConv operators in one set of weights (``ElasticMBConv``, Once-for-All's
weight entanglement); a path (the space's choice dict) runs one operator per slot, or none for ``skip``. Any path
is extracted as a stand-alone network with its inherited weights (``extract``): ``build(space.decode(path))``
loaded with the supernet's weights. BatchNorm statistics are shared by all paths during training, so a path is
scored after recalibrating them on training images (``recalibrate_bn``), as SPOS does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.core.arch import ArchSpec, Block, Network, build, conv_bn_act
from edgekd.core.config import KDConfig
from edgekd.core.errors import ConfigError
from edgekd.data import Data
from edgekd.evaluators import EpochReport
from edgekd.spaces import Choices, SearchSpace
from edgekd.spaces.mbv2 import EXPANDS, KERNELS, SKIP, LayerSlot, MBV2Space
from edgekd.train import calibration_batches, evaluate, recalibrate_bn
from edgekd.train.evaluation import model_device


def layerwise(space: SearchSpace) -> MBV2Space:
    """``space`` if the one-shot evaluators can build a supernet of it, else a ConfigError."""
    if not isinstance(space, MBV2Space):
        raise ConfigError(f"one-shot evaluators need a layer-wise space (mbv2), not {space.name!r}")
    return space


class Supernet(nn.Module):
    """stem -> fixed first block -> one operator per slot -> head -> pool -> classifier, weights shared."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = layerwise(space)
        self.stem = conv_bn_act(space.in_channels, space.stem_channels, 3, space.stem_stride)
        self.first = Block(space.stem_channels, space.first)
        self.slots = nn.ModuleDict({slot.name: ElasticMBConv(slot) for slot in space.slots})
        self.head = conv_bn_act(space.slots[-1].out_channels, space.head_channels, 1)
        self.classifier = nn.Linear(space.head_channels, space.num_classes)
        self.to(memory_format=torch.channels_last)  # 3x faster depthwise convolutions on CPU

    def run_slot(self, name: str, op: str, x: Tensor) -> Tensor:
        return x if op == SKIP else self.slots[name](x, op)

    def forward(self, x: Tensor, path: Choices) -> Tensor:
        return self._through(x, lambda name, op, y: self.run_slot(name, op, y) if op == path[name] else None)

    def mixed(self, x: Tensor, weights: Mapping[str, Mapping[str, Tensor]]) -> Tensor:
        """A continuous relaxation: every slot outputs Σ weights[slot][op] · op(x) over the operators named in
        ``weights[slot]`` (all of them, DARTS; one sampled operator with its straight-through weight, GDAS)."""
        return self._through(x, lambda name, op, y: None if (w := weights[name].get(op)) is None
                             else w * self.run_slot(name, op, y))

    def _through(self, x: Tensor, term: Callable[[str, str, Tensor], Tensor | None]) -> Tensor:
        """stem -> first block -> per slot the sum of ``term(slot, op, x)`` over its operators -> classifier."""
        x = self.first(self.stem(x.contiguous(memory_format=torch.channels_last)))
        for slot in self.space.slots:
            x = sum(t for op in slot.ops if (t := term(slot.name, op, x)) is not None)
        return self.classifier(self.head(x).mean((2, 3)))

    def extract(self, path: Choices) -> tuple[Network, ArchSpec]:
        """``path`` as a stand-alone network with the supernet's weights, and its ArchSpec."""
        spec = self.space.decode(path)
        net = build(spec)
        for src, dst in ((self.stem, net.stem), (self.first, net.blocks[0]), (self.head, net.head)):
            dst.load_state_dict(src.state_dict())
        chosen = [s.name for s in self.space.slots if path[s.name] != SKIP]
        for name, block in zip(chosen, net.blocks[1:], strict=True):
            self.slots[name].copy_into(block, path[name])
        net.classifier.load_state_dict(self.classifier.state_dict())
        return net, spec


class ElasticMBConv(nn.Module):
    """Every MBConv of a slot in one set of weights (Once-for-All's weight entanglement): those of the largest
    kernel and expansion, of which a smaller kernel uses the centre and a smaller expansion the first channels.
    All operators of a layer then share one feature basis, which lets a sampled-path supernet train in few
    epochs; an operator is still run (and extracted) as the plain MBConv ``Block`` it stands for."""

    def __init__(self, slot: LayerSlot) -> None:
        super().__init__()
        hidden, kernel = slot.in_channels * max(EXPANDS), max(KERNELS)
        self.slot = slot
        self.expand = conv_bn_act(slot.in_channels, hidden, 1)
        self.depthwise = conv_bn_act(hidden, hidden, kernel, slot.stride, groups=hidden)
        self.project = conv_bn_act(hidden, slot.out_channels, 1, act=False)
        self.residual = slot.stride == 1 and slot.in_channels == slot.out_channels

    def stages(self, op: str) -> list[tuple[nn.Sequential, Tensor, slice, int]]:
        """(conv-BN-act module, its sliced conv weight, the BN channels used, groups) per layer of ``op``'s Block."""
        kernel, expand = (int(part[1:]) for part in op.split("_"))
        hidden = self.slot.in_channels * expand
        crop = slice((max(KERNELS) - kernel) // 2, (max(KERNELS) + kernel) // 2)
        stages = [(self.expand, self.expand[0].weight[:hidden], slice(0, hidden), 1)] if expand != 1 else []
        stages.append((self.depthwise, self.depthwise[0].weight[:hidden, :, crop, crop], slice(0, hidden), hidden))
        stages.append((self.project, self.project[0].weight[:, :hidden], slice(None), 1))
        return stages

    def forward(self, x: Tensor, op: str) -> Tensor:
        y = x
        for module, weight, channels, groups in self.stages(op):
            conv, bn = module[0], module[1]
            y = F.conv2d(y, weight, None, conv.stride, weight.shape[-1] // 2, 1, groups)
            y = F.batch_norm(y, bn.running_mean[channels], bn.running_var[channels], bn.weight[channels],
                             bn.bias[channels], self.training, bn.momentum or 0.0, bn.eps)
            if len(module) > 2:
                y = module[2](y)
        return x + y if self.residual else y

    def copy_into(self, block: Block, op: str) -> None:
        """Load ``op``'s slices into ``block`` (the stand-alone Block of the same operator)."""
        for (module, weight, channels, _), target in zip(self.stages(op), block.body, strict=True):
            bn, dst = module[1], target[1]
            target[0].weight.data.copy_(weight)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(dst, name).data.copy_(getattr(bn, name)[channels])


@torch.no_grad()
def extract_calibrated(supernet: Supernet, path: Choices, calibration: list[Tensor]) -> Network:
    """``path`` as a stand-alone network with inherited weights, its BatchNorm statistics recalibrated."""
    net, _ = supernet.extract(path)
    recalibrate_bn(net.to(model_device(supernet)), calibration)
    return net


class SupernetEvaluator:
    """Mini-val accuracy of the candidate's path with the supernet's weights (BatchNorm recalibrated on
    mini-train first), for a supernet trained by EnNAS or single-path (SPOS) training. ``kd`` is not used."""

    budget = 1

    def __init__(self, supernet: Supernet, data: Data, workers: int = 0) -> None:
        self.supernet, self.data, self.workers = supernet, data, workers
        self.calibration = calibration_batches(data)

    def evaluate(self, spec: ArchSpec, report: EpochReport | None = None, kd: KDConfig | None = None) -> float:
        net = extract_calibrated(self.supernet, self.supernet.space.encode(spec), self.calibration)
        acc = evaluate(net, self.data, "mini_val", workers=self.workers)
        if report:
            report(1, acc)
        return acc
