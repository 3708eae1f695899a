"""AKD's RL controller as an Optuna sampler: a recurrent policy emits one token per search decision and is
trained with PPO to maximise the KD-guided reward.

The policy (an LSTM cell; the embedding of each emitted token is the next step's input) samples whole
candidates. Every ``BATCH`` complete trials it takes ``PPO_EPOCHS`` steps of Adam on the clipped surrogate
objective, with advantages against a moving-average baseline (scaled by the batch's reward spread) and an
entropy bonus. Its weights, optimiser state and baseline are saved in the study's user attributes after every
update, so a resumed search, or another worker on the same storage, continues the same policy.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import optuna
import torch
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.search_space import IntersectionSearchSpace
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from torch import Tensor, nn

from edgekd.strategies import Strategy, register_strategy
from edgekd.strategies.distinct import DRAWN_KEY, DistinctSampler

HIDDEN, LR, BATCH, PPO_EPOCHS = 32, 0.02, 5, 4
CLIP, ENTROPY_WEIGHT, BASELINE_DECAY = 0.2, 0.05, 0.8
"""With an entropy weight of 0.01 the policy had collapsed onto one candidate by about 50 trials of the tabular
benchmark (its best reward stopped moving); 0.05 keeps it exploring. Settings were compared on search seeds
the benchmark does not report (benchmarks/search_efficiency.py)."""
STATE_KEY = "rl_controller"
LOGP_KEY = "rl_logp"


def ppo_loss(new_logp: Tensor, old_logp: Tensor, advantage: Tensor, entropy: Tensor,
             clip: float = CLIP, entropy_weight: float = ENTROPY_WEIGHT) -> Tensor:
    """PPO's clipped surrogate, negated for gradient descent: -mean(min(r·A, clip(r, 1±ε)·A)) - β·mean(H)."""
    ratio = torch.exp(new_logp - old_logp)
    surrogate = torch.minimum(ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage)
    return -(surrogate.mean() + entropy_weight * entropy.mean())


class Controller(nn.Module):
    """An LSTM policy over a sequence of categorical decisions of the given sizes."""

    def __init__(self, sizes: list[int], hidden: int = HIDDEN) -> None:
        super().__init__()
        self.start = nn.Parameter(torch.zeros(1, hidden))
        self.cell = nn.LSTMCell(hidden, hidden)
        self.embed = nn.ModuleList(nn.Embedding(n, hidden) for n in sizes)
        self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in sizes)

    def forward(self, actions: Tensor | None = None, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """Sample one token sequence (or score ``actions``, [batch, decisions]): actions, log-probs, entropies."""
        batch = 1 if actions is None else actions.shape[0]
        x, state = self.start.expand(batch, -1), None
        taken, logp, entropy = [], torch.zeros(batch), torch.zeros(batch)
        for i, head in enumerate(self.heads):
            state = self.cell(x, state)
            dist = torch.distributions.Categorical(logits=head(state[0]))
            a = torch.multinomial(dist.probs, 1, generator=generator)[:, 0] if actions is None else actions[:, i]
            logp, entropy = logp + dist.log_prob(a), entropy + dist.entropy()
            taken.append(a)
            x = self.embed[i](a)
        return torch.stack(taken, 1), logp, entropy


def _pack(obj: Any) -> str:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return base64.b64encode(buffer.getvalue()).decode()


def _unpack(text: str) -> Any:
    return torch.load(io.BytesIO(base64.b64decode(text)), weights_only=True)


def policy_sampled(trial: FrozenTrial) -> bool:
    """Whether the policy sampled ``trial``'s candidate (PPO learns from its own samples only)."""
    return LOGP_KEY in trial.system_attrs and DRAWN_KEY not in trial.system_attrs


class PPOControllerSampler(optuna.samplers.BaseSampler):
    def __init__(self, seed: int | None = None, batch: int = BATCH) -> None:
        self.batch = batch
        self._generator = torch.Generator().manual_seed(seed or 0)
        self._space = IntersectionSearchSpace()
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._names: list[str] = []
        self._policy: Controller | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._baseline: float | None = None
        self._used: set[int] = set()
        self.version = 0
        """How many PPO updates the policy has had (0: freshly initialised)."""

    def reseed_rng(self) -> None:
        self._random.reseed_rng()
        self._generator.seed()

    @property
    def policy(self) -> Controller | None:
        return self._policy

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {name: d for name, d in self._space.calculate(study).items() if isinstance(d, CategoricalDistribution)}

    def _sync(self, study: optuna.Study, space: dict[str, BaseDistribution]) -> None:
        """Build the policy on first use; load the study's saved policy when it is newer than this one."""
        if self._policy is None:
            self._names = sorted(space)
            with torch.random.fork_rng():
                torch.manual_seed(0)  # every worker starts from the same policy
                self._policy = Controller([len(space[n].choices) for n in self._names])
            self._optimizer = torch.optim.Adam(self._policy.parameters(), lr=LR)
        saved = study.user_attrs.get(STATE_KEY)
        if saved and saved["version"] > self.version:
            state = _unpack(saved["weights"])
            self._policy.load_state_dict(state["policy"])
            self._optimizer.load_state_dict(state["optimizer"])
            self._baseline, self._used, self.version = saved["baseline"], set(saved["used"]), saved["version"]

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        self._sync(study, search_space)
        with torch.no_grad():
            actions, logp, _ = self._policy(generator=self._generator)
        study._storage.set_trial_system_attr(trial._trial_id, LOGP_KEY, float(logp[0]))
        return {n: search_space[n].choices[a] for n, a in zip(self._names, actions[0].tolist(), strict=True)}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: list[float] | None
                    ) -> None:
        if self._policy is None or state != TrialState.COMPLETE or not policy_sampled(trial):
            return
        space = {n: trial.distributions[n] for n in self._names}
        self._sync(study, space)
        # This trial is not yet COMPLETE in the storage when after_trial runs.
        done = [(t, t.value) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if policy_sampled(t) and t.number not in self._used and t.number != trial.number]
        batch = [*done, (trial, values[0])]
        if len(batch) < self.batch:
            return
        self._update(study, space, batch)

    def _update(self, study: optuna.Study, space: dict[str, BaseDistribution],
                batch: list[tuple[FrozenTrial, float]]) -> None:
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        rewards = torch.tensor([sign * value for _, value in batch])
        actions = torch.tensor([[space[n].choices.index(t.params[n]) for n in self._names] for t, _ in batch])
        old_logp = torch.tensor([t.system_attrs[LOGP_KEY] for t, _ in batch])
        baseline = float(rewards.mean()) if self._baseline is None else self._baseline
        advantage = (rewards - baseline) / (rewards.std() + 1e-8)
        for _ in range(PPO_EPOCHS):
            _, logp, entropy = self._policy(actions=actions)
            loss = ppo_loss(logp, old_logp, advantage, entropy)
            self._optimizer.zero_grad()
            loss.backward()
            self._optimizer.step()
        self._baseline = BASELINE_DECAY * baseline + (1 - BASELINE_DECAY) * float(rewards.mean())
        self._used |= {t.number for t, _ in batch}
        self.version += 1
        weights = _pack({"policy": self._policy.state_dict(), "optimizer": self._optimizer.state_dict()})
        study.set_user_attr(STATE_KEY, {"weights": weights, "baseline": self._baseline,
                                        "used": sorted(self._used), "version": self.version})


@register_strategy("rl")
def rl(seed: int, max_epochs: int) -> Strategy:
    return Strategy(DistinctSampler(PPOControllerSampler(seed=seed), seed))
