"""Evaluator kinds (``--evaluator NAME``): how the search stage prepares what rates its candidates.

``proxy`` trains every candidate briefly with KD (AKD, AutoKD); the one-shot kinds (``ennas``, ``spos``,
``dna``, in oneshot.py) train one supernet first and rate candidates with its weights; ``pamkd`` (pamkd.py) trains
a group of differentiable supernets that teach each other and picks among their arg-max architectures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgekd.core.config import SearchConfig
from edgekd.core.errors import ConfigError
from edgekd.core.registry import Registry
from edgekd.evaluators import Evaluator
from edgekd.evaluators.proxy import KDProxyEvaluator

if TYPE_CHECKING:  # the run context imports this registry to check --evaluator early
    from edgekd.pipeline.context import RunContext
    from edgekd.pipeline.reward import Reward
    from edgekd.pipeline.search.records import SearchResult


@dataclass(frozen=True)
class EvaluatorKind:
    prepare: Callable[[RunContext], Evaluator]
    """The run's evaluator; a one-shot kind trains (or resumes) its supernet here, on every torchrun rank."""
    one_shot: bool = False
    """Rates candidates with one trained model: trained data-parallel under torchrun, then rank 0 alone searches;
    KD settings are not searched and candidates are not rated side by side (``--jobs``)."""
    pick: Callable[[RunContext, Reward, Evaluator], SearchResult] | None = None
    """Chooses the architecture directly instead of sampling trials (DNA's ranking of block paths)."""


EVALUATORS: Registry[EvaluatorKind] = Registry("evaluators", "evaluator", ("edgekd.pipeline.search.oneshot",
                                                                          "edgekd.pipeline.search.pamkd"))


def evaluator_kind(cfg_search: SearchConfig) -> EvaluatorKind:
    """The kind ``--evaluator`` names, checked against the search settings it cannot combine with."""
    kind = EVALUATORS.get(cfg_search.evaluator)
    if kind.one_shot and (cfg_search.search_kd or cfg_search.jobs > 1):
        raise ConfigError(f"the {cfg_search.evaluator} evaluator rates candidates with one trained supernet: "
                          "--search-kd and --jobs > 1 apply to proxy training only")
    return kind


def _proxy(ctx: RunContext) -> KDProxyEvaluator:
    s = ctx.cfg.search
    return KDProxyEvaluator(ctx.data, ctx.teacher_signal, s.proxy, ctx.cfg.kd, ctx.cfg.seed, ctx.runtime)


EVALUATORS.add("proxy", EvaluatorKind(_proxy))
