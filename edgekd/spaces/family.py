"""AutoKD's student families (seed 001, after NAGO): a trial's decisions are the hyper-parameters of a hierarchical
random-graph generator, and a student is one network drawn from that family with a seed.

Three levels of graphs, each from a random-graph model (networkx): Erdős-Rényi (edge probability p),
Watts-Strogatz (k neighbours, rewiring probability p) or Barabási-Albert (k/2 edges per new node). The top level
wires the cells: one graph of ``top_nodes`` cells is drawn, its cells split into three stages in topological order
by ``stage_ratio`` (edges across stages dropped: a stage takes the previous one's output); the middle level wires
the modules of every cell and the bottom level the conv units (ReLU, 3x3 depthwise-separable conv, BN) of every
module. Undirected edges point from the lower to the higher node index; a node without a lower neighbour takes
its graph's input. Stage channels grow by ``channel_ratio``. The decisions and the seed are part of the
student's ArchSpec (and its id): ``encode`` reads them back.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from edgekd.core.arch import ArchSpec, FamilyGraph, Wiring
from edgekd.core.errors import ConfigError
from edgekd.spaces import Choices, SearchSpace, downsampling_stages, register_space, round_channels

MODELS = ("er", "ws", "ba")
LEVELS = ("top", "mid", "bottom")
STAGE_RATIOS = ("1:1:1", "1:2:1", "2:1:1", "1:1:2")


def draw_wiring(model: str, n: int, p: float, k: int, seed: int) -> Wiring:
    """A DAG of ``n`` nodes from random-graph ``model`` (edges from lower to higher index)."""
    import networkx as nx

    if n == 1:
        return ((-1,),)
    if model == "er":
        g = nx.erdos_renyi_graph(n, p, seed=seed)
    elif model == "ws":
        g = nx.watts_strogatz_graph(n, min(k, n - 1), p, seed=seed)
    elif model == "ba":
        g = nx.barabasi_albert_graph(n, min(max(1, k // 2), n - 1), seed=seed)
    else:
        raise ConfigError(f"unknown random-graph model {model!r}; expected one of {MODELS}")
    return tuple(tuple(sorted(j for j in g.neighbors(i) if j < i)) or (-1,) for i in range(n))


def split_stages(wiring: Wiring, ratio: str) -> tuple[Wiring, ...]:
    """The cells of ``wiring`` in three consecutive stages sized by ``ratio`` (each at least one cell), each
    stage's wiring re-indexed, edges from earlier stages replaced by the stage's input."""
    weights = [int(w) for w in ratio.split(":")]
    n = len(wiring)
    if n < len(weights):
        raise ConfigError(f"{n} cells cannot fill {len(weights)} stages")
    sizes = [1] * len(weights)
    for _ in range(n - len(weights)):  # the next cell to the stage furthest below its share
        s = max(range(len(weights)), key=lambda i: weights[i] / sum(weights) * n - sizes[i])
        sizes[s] += 1
    stages, start = [], 0
    for size in sizes:
        local = [tuple(p - start for p in preds if p >= start) or (-1,) for preds in wiring[start:start + size]]
        stages.append(tuple(local))
        start += size
    return tuple(stages)


@register_space("family")
class FamilySpace(SearchSpace):
    """AutoKD's families: the decisions of a hierarchical random-graph generator; ``decode`` draws the student
    with seed ``seed`` (``member`` with any other)."""

    NODES: ClassVar[dict[str, tuple[int, ...]]] = {"top": (3, 4, 5, 6), "mid": (1, 2, 3, 4), "bottom": (1, 2, 3, 4)}
    seed = 0

    def __init__(self, resolution: int, in_channels: int, num_classes: int, width: float = 1.0) -> None:
        if width <= 0:
            raise ConfigError(f"width must be > 0, got width={width}")
        self.resolution, self.in_channels, self.num_classes, self.width = resolution, in_channels, num_classes, width
        self.choices: dict[str, tuple[Any, ...]] = {}
        for level in LEVELS:
            self.choices |= {f"{level}_model": MODELS, f"{level}_nodes": self.NODES[level],
                             f"{level}_p": (0.2, 0.4, 0.6, 0.8), f"{level}_k": (2, 4)}
        self.choices |= {"stage_ratio": STAGE_RATIOS, "channel_ratio": (1.5, 2.0, 2.5)}
        down = downsampling_stages(resolution, ("stem", 1, 2))
        self.stem_stride = 2 if "stem" in down else 1
        self.downsample = (False, 1 in down, 2 in down)
        self.base = round_channels(64 * width)

    def member(self, choices: Choices, seed: int) -> ArchSpec:
        """The student drawn with ``seed`` from the family ``choices`` describe."""
        self.check(choices)
        rng = random.Random(f"{sorted(choices.items())}:{seed}")
        wiring = {level: draw_wiring(choices[f"{level}_model"], choices[f"{level}_nodes"], choices[f"{level}_p"],
                                     choices[f"{level}_k"], rng.randrange(2**31)) for level in LEVELS}
        channels = tuple(round_channels(self.base * choices["channel_ratio"] ** s) for s in range(3))
        graph = FamilyGraph(top=split_stages(wiring["top"], choices["stage_ratio"]), mid=wiring["mid"],
                            bottom=wiring["bottom"], channels=channels, downsample=self.downsample,
                            family=tuple(sorted(choices.items())), seed=seed)
        return ArchSpec(resolution=self.resolution, in_channels=self.in_channels, num_classes=self.num_classes,
                        stem_channels=self.base, stem_stride=self.stem_stride, blocks=(),
                        head_channels=round_channels(4 * channels[-1]), graph=graph)

    def decode(self, choices: Choices) -> ArchSpec:
        return self.member(choices, self.seed)

    def encode(self, spec: ArchSpec) -> Choices:
        if spec.graph is None or not spec.graph.family:
            raise ConfigError(f"architecture {spec.id} is not a family student")
        choices = dict(spec.graph.family)
        if self.member(choices, spec.graph.seed) != spec:
            raise ConfigError(f"architecture {spec.id} is not a member of space {self.name!r}")
        return choices
