"""PAMKD: the GRS loss on a hand-computed group, the performance scrutiny on recorded teaching pairs, stage 3
lowering the validation loss, each stage's gradient reaching only its own parameters, and the search stage."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
import torch.nn.functional as F

from edgekd.core.config import PAMKDConfig, TrainConfig
from edgekd.core.errors import ConfigError
from edgekd.data import load_data
from edgekd.evaluators.pamkd import CostTable, Group, grs_loss, teachers_of, teaching_pairs, train_pamkd
from edgekd.pipeline.search.oneshot import space_macs
from edgekd.spaces import make_space

TEACHER = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
"""Cosine similarities 1 (0,1), 0 (0,2), -1 (0,3), 0 (1,2), -1 (1,3), 0 (2,3)."""


def test_grs_matches_a_hand_computed_group():
    # The student's four examples are orthogonal: every anchor's relative similarities are uniform (1/3 each).
    # With gamma = 1, anchors 0 and 1 see similarities (1, 0, -1) to the others, anchor 2 sees (0, 0, 0) and
    # anchor 3 sees (-1, -1, 0). KL(P || uniform) = sum P log P + log 3:
    #   (1, 0, -1):   P = (e, 1, 1/e) / 4.0861613 = (0.6652410, 0.2447285, 0.0900306) -> KL 0.2662146
    #   (0, 0, 0):    KL 0
    #   (-1, -1, 0):  P = (1/e, 1/e, 1) / 1.7357589 = (0.2119416, 0.2119416, 0.5761169) -> KL 0.1232925
    # GRS = (2 x 0.2662146 + 0 + 0.1232925) / 4 = 0.1639304
    student = torch.eye(4)
    assert float(grs_loss(TEACHER, student, group_size=4, gamma=1.0)) == pytest.approx(0.1639304, abs=1e-6)


def test_grs_depends_only_on_relative_similarities_within_groups():
    gen = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(10, 6, generator=gen), torch.randn(10, 6, generator=gen)
    loss = grs_loss(teacher, student)
    assert float(grs_loss(teacher, teacher)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss) > 0.01
    scaled = student * torch.rand(10, 1, generator=gen).add(0.5)  # each example's logits scaled: cosines unchanged
    assert float(grs_loss(teacher, scaled)) == pytest.approx(float(loss), rel=1e-5)
    # two groups of 4 (rows 8 and 9 are left over): changing a left-over row changes nothing, a grouped one does
    assert float(grs_loss(teacher, torch.cat([student[:8], -student[8:]]))) == pytest.approx(float(loss), rel=1e-6)
    moved = student.clone()
    moved[5] = -moved[5]
    assert float(grs_loss(teacher, moved)) != pytest.approx(float(loss), rel=1e-3)
    with pytest.raises(ConfigError, match="at least 4"):
        grs_loss(teacher, student, group_size=3)


def test_teachers_are_strictly_better_learners_with_scrutiny_and_everyone_without():
    acc, loss = [0.8, 0.9, 0.8, 0.5], [0.5, 0.4, 0.6, 1.0]
    assert teachers_of(acc, loss, scrutiny=True) == [[1], [], [0, 1], [0, 1, 2]]  # tie 0/2 broken by loss
    assert teachers_of(acc, loss, scrutiny=False) == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]


@pytest.fixture(scope="module")
def tiny():
    data = load_data("synthetic", resolution=8)
    space = make_space("mbv2", 8, 3, 10, width=0.25)
    return data, space, CostTable.of(space_macs(space), space, target=0.3)


def _trained(tiny, scrutiny: bool, tmp_path=None):
    data, space, costs = tiny
    torch.manual_seed(0)
    group = Group(space, 3, costs, "gdas", seed=0)
    cfg = PAMKDConfig(scrutiny=scrutiny, kd_from_epoch=0)
    checkpoint = tmp_path / "pamkd.pt" if tmp_path else None
    return train_pamkd(group, data, TrainConfig(epochs=3, batch_size=32), cfg, seed=0, checkpoint=checkpoint)


def test_a_worse_learner_never_teaches_a_better_one(tiny, tmp_path):
    history, final = _trained(tiny, scrutiny=True, tmp_path=tmp_path)
    pairs_seen = 0
    for record in [h.metrics for h in history] + [final]:
        pairs = teaching_pairs(record)
        for j, k in pairs:  # every recorded pair: the teacher's V was better on mini-val
            assert (record[f"v_acc_{j}"], -record[f"v_loss_{j}"]) > (record[f"v_acc_{k}"], -record[f"v_loss_{k}"])
        best = max(range(3), key=lambda i: (record[f"v_acc_{i}"], -record[f"v_loss_{i}"]))
        assert all(k != best for _, k in pairs)  # the best learner is taught by no one
        assert len(pairs) == 3  # three distinct scores: a strict order, so every better one teaches
        pairs_seen += len(pairs)
    assert pairs_seen == 12
    assert [h.epoch for h in history] == [1, 2, 3] and all(len(h.metrics) > 10 for h in history)
    resumed, _ = _trained(tiny, scrutiny=True, tmp_path=tmp_path)  # finished: read back, not trained again
    assert [h.metrics for h in resumed] == [h.metrics for h in history]


def test_without_scrutiny_every_learner_teaches_every_other(tiny):
    history, _ = _trained(tiny, scrutiny=False)
    for h in history:
        assert sorted(teaching_pairs(h.metrics)) == [(j, k) for j in range(3) for k in range(3) if j != k]


def _val_loss(group, x, y):
    return sum(F.cross_entropy(z, y) for z in group(x, x, draw=0)[2])


def test_stage_three_lowers_the_validation_loss_and_only_moves_operator_logits(tiny):
    data, space, costs = tiny
    torch.manual_seed(0)
    group = Group(space, 2, costs, "darts", seed=0)  # the mixture: a deterministic function of the logits
    x, y = data.tensors("mini_val", limit=32)
    weights_before = {n: p.detach().clone() for n, p in group.named_parameters() if "alphas" not in n}
    alphas = [p for n, p in group.named_parameters() if "alphas" in n]
    opt = torch.optim.Adam(alphas, lr=0.1)
    with torch.no_grad():
        before = float(_val_loss(group, x, y))
    for _ in range(8):
        opt.zero_grad()
        loss = _val_loss(group, x, y)
        loss.backward()
        assert all(p.grad is None for n, p in group.named_parameters() if "alphas" not in n)  # W held fixed
        opt.step()
    with torch.no_grad():
        after = float(_val_loss(group, x, y))
    assert after < before - 0.05
    for n, p in group.named_parameters():
        if "alphas" not in n:
            assert torch.equal(p, weights_before[n])


def test_each_stage_trains_only_its_own_parameters(tiny):
    data, space, costs = tiny
    group = Group(space, 2, costs, "gdas", seed=0)
    x, y = data.tensors("mini_train", limit=16)
    z_v, z_w, z_val, cost = group(x, x, draw=3, temperature=2.0)

    def touched(loss):
        group.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        return {n.split(".")[2] if "alphas" not in n else "alphas"
                for n, p in group.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}

    assert touched(F.cross_entropy(z_v[0], y)) == {"v"}
    assert touched(F.cross_entropy(z_w[1], y) + F.kl_div(z_w[1].log_softmax(1), z_v[0].detach().log_softmax(1),
                                                         log_target=True, reduction="batchmean")) == {"w"}
    assert touched(F.cross_entropy(z_val[0], y)) == {"alphas"}
    assert touched(cost.sum()) == {"alphas"}


def test_expected_cost_is_the_table_cost_of_a_certain_architecture(tiny):
    _, space, costs = tiny
    macs = space_macs(space)
    for seed in range(3):
        path = space.sample(random.Random(seed))
        onehot = {s.name: F.one_hot(torch.tensor(s.ops.index(path[s.name])), len(s.ops)).float()
                  for s in space.slots}
        assert float(costs.expected(onehot)) == pytest.approx(macs.of(path), rel=1e-5)


def test_pamkd_search_stage_picks_a_learner_architecture_and_resumes(tmp_path, make_tiny_config, monkeypatch):
    from edgekd.pipeline.opening import open_run
    from edgekd.pipeline.run import run_search

    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    cfg = make_tiny_config(search={
        "space": "mbv2", "space_width": 0.25, "evaluator": "pamkd", "target_mmacs": 0.3,
        "oneshot": {"train": {"epochs": 2}, "pamkd": {"learners": 2}}})
    ctx = open_run(cfg, tmp_path / "runs")
    result = run_search(ctx)
    out = ctx.stage_dir("search")
    trials = json.loads((out / "trials.json").read_text())
    assert [t["learner"] for t in trials] == [0, 1] and all(t["evaluator"] == "pamkd" for t in trials)
    under = [t for t in trials if t["mmacs"] <= 0.3]
    best = json.loads((out / "best.json").read_text())
    if under:
        assert best["acc"] == max(t["acc"] for t in under) and best["mmacs"] <= 0.3
    assert ctx.space.decode(best["choices"]) == result.best_arch
    assert all(math.isclose(sum(p.values()), 1, abs_tol=1e-3) for p in best["op_weights"].values())
    record = json.loads((out / "pamkd.json").read_text())
    assert len(record["epochs"]) == 2 and "v_acc_1" in record["final"]
    mtime = (out / "pamkd.pt").stat().st_mtime
    assert run_search(open_run(cfg, tmp_path / "runs")).best == result.best
    assert (out / "pamkd.pt").stat().st_mtime == mtime  # resumed: the group is not trained again
