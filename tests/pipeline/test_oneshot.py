"""One-shot evaluators: the mbv2 space and supernet, EnNAS's ensemble teacher and diversity sampling, DNA's
teacher split, path rating and exact constrained pick, and the search stage through the CLI."""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from edgekd.core.arch import build
from edgekd.core.config import TrainConfig
from edgekd.core.errors import ConfigError
from edgekd.data import load_data
from edgekd.evaluators.dna import (
    BlockwiseStudent,
    TeacherBlocks,
    rate_paths,
    select_additive,
    select_under_constraint,
    stage_cuts,
    teacher_targets,
    train_blockwise,
)
from edgekd.evaluators.ennas import DiversitySampler, ensemble_weights, train_supernet, uniform_expected_diversity
from edgekd.evaluators.supernet import Supernet
from edgekd.latency_models.flops import count_macs_params
from edgekd.pipeline.search.oneshot import space_macs
from edgekd.pipeline.teacher import default_teacher_arch
from edgekd.spaces import make_space


def test_mbv2_space_rejects_architectures_of_another_space():
    mnas = make_space("mnas", 16, 1, 10, width=0.25)
    with pytest.raises(ConfigError):
        make_space("mbv2", 16, 1, 10, width=0.25).encode(mnas.decode(mnas.sample(random.Random(0))))


def test_extracted_subnet_computes_what_the_supernet_path_computes():
    space = make_space("mbv2", 16, 1, 10, width=0.25)
    supernet = Supernet(space).eval()
    x = torch.randn(4, 1, 16, 16)
    for seed in range(3):
        path = space.sample(random.Random(seed))
        net, spec = supernet.extract(path)
        assert spec == space.decode(path)
        torch.testing.assert_close(net.eval()(x), supernet(x, path))


def test_supernet_rejects_a_space_that_is_not_layer_wise():
    with pytest.raises(ConfigError, match="mbv2"):
        Supernet(make_space("mnas", 16, 1, 10, width=0.25))


def _ce(w, z, y):
    return float(F.cross_entropy(torch.tensordot(torch.as_tensor(w, dtype=torch.float64), z.double(), 1), y))


def test_ensemble_weights_reach_the_known_optimum_and_stay_on_the_simplex():
    y = torch.arange(10).repeat(3)
    right, wrong = F.one_hot(y, 10).float() * 5, F.one_hot((y + 1) % 10, 10).float() * 5
    w = ensemble_weights(torch.stack([wrong, right, wrong]), y)
    torch.testing.assert_close(w, torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    gen = torch.Generator().manual_seed(0)
    z, y = torch.randn(3, 40, 5, generator=gen) * 2, torch.randint(5, (40,), generator=gen)
    w = ensemble_weights(z, y)
    assert float(w.min()) >= 0 and abs(float(w.sum()) - 1) < 1e-6
    grid = [(a / 100, b / 100, 1 - (a + b) / 100) for a in range(101) for b in range(101 - a)]
    assert _ce(w, z, y) <= min(_ce(g, z, y) for g in grid) + 1e-6


def test_diversity_sampling_keeps_marginals_uniform_and_raises_diversity():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (6, 6))
    zeta = (a + a.T) / 2
    np.fill_diagonal(zeta, 0)
    sampler = DiversitySampler(zeta, m=4)
    for marginal in sampler.marginals:
        np.testing.assert_allclose(marginal, 1 / 6, atol=1e-9)
    assert abs(sampler.probabilities.sum() - 1) < 1e-9
    assert sampler.expected_diversity() > uniform_expected_diversity(zeta) + 0.02
    draws = np.array([sampler.draw(random.Random(i)) for i in range(6000)])
    np.testing.assert_allclose(np.bincount(draws[:, 3], minlength=6) / len(draws), 1 / 6, atol=0.02)


def test_ennas_training_uses_the_ensemble_after_warm_up_and_resumes(tmp_path):
    data = load_data("synthetic", resolution=8)
    space = make_space("mbv2", 8, 3, 10, width=0.25)
    cfg = TrainConfig(epochs=2, batch_size=64)
    torch.manual_seed(0)
    first = train_supernet(Supernet(space), data, cfg, m=2, kd_from_epoch=1, checkpoint=tmp_path / "s.pt")
    assert "teacher_acc" not in first[0].metrics and "teacher_acc" in first[1].metrics
    assert first[1].metrics["logit_distance"] > 0
    again = train_supernet(Supernet(space), data, cfg, m=2, kd_from_epoch=1, checkpoint=tmp_path / "s.pt")
    assert [asdict(h) for h in again] == [asdict(h) for h in first]  # resumed from the checkpoint: nothing retrained
    with pytest.raises(ConfigError, match="at least 2"):
        train_supernet(Supernet(space), data, cfg, m=1, teacher="ensemble")


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "efficientnet_b0"])
def test_dna_split_of_torchvision_teachers_chains_to_the_teacher_output(name):
    model = torchvision.models.get_model(name, num_classes=10).eval()
    gm, cuts = stage_cuts(model, torch.randn(2, 3, 64, 64))
    assert [c.resolution for c in cuts][:4] == [32, 16, 8, 4]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(TeacherBlocks(gm, cuts).eval()(x)[-1], model(x))


def test_dna_split_of_the_quickstart_teacher_and_rating_of_paths():
    data = load_data("digits", resolution=16)
    teacher = build(default_teacher_arch(data)).eval()
    gm, cuts = stage_cuts(teacher, torch.randn(2, 1, 16, 16))
    blocks = TeacherBlocks(gm, cuts).eval()
    x = data.tensors("val")[0][:8]
    with torch.no_grad():
        torch.testing.assert_close(blocks(x)[-1], teacher(x))
    torch.manual_seed(0)
    student = BlockwiseStudent(Supernet(make_space("mbv2", 16, 1, 10, width=0.25)), cuts)
    assert [c.resolution for c in student.cuts] == [16, 8, 4]
    history = train_blockwise(student, blocks, data, TrainConfig(epochs=1, batch_size=128))
    assert len(history[0]) == 3
    images = data.tensors("mini_val")[0][:32]
    (last,) = rate_paths(student, blocks, images, blocks=[2])
    assert len(last) == 9 * 10 * 9
    path = make_space("mbv2", 16, 1, 10, width=0.25).sample(random.Random(1))
    key = tuple(path[s.name] for s in student.block_slots(2))
    student.train()
    with torch.no_grad():
        target = teacher_targets(blocks, student, images)
        direct = float(F.mse_loss(student.block(2, target[1], path), target[2])) / float(target[2].var())
    assert last[key] == pytest.approx(direct, rel=1e-4)


def test_constrained_selection_returns_the_enumerated_optimum():
    rng = random.Random(3)
    ratings = [{(f"b{b}o{i}",): rng.uniform(0, 1) for i in range(6)} for b in range(3)]
    cost_of = {k: rng.uniform(1, 5) for r in ratings for k in r}

    def cost(parts):
        return sum(cost_of[p] for p in parts)

    for limit in (7.0, 9.0, 11.0):
        feasible = [(sum(r[p] for r, p in zip(ratings, combo, strict=True)), combo)
                    for combo in itertools.product(*ratings) if cost(combo) <= limit]
        best = min(feasible)
        for chosen in (select_under_constraint(ratings, cost, limit),
                       select_additive(ratings, lambda _b, part: cost_of[part], 0.0, limit)):
            assert chosen.parts == best[1] and chosen.loss == pytest.approx(best[0]) and chosen.cost <= limit
    with pytest.raises(ConfigError, match="raise the target"):
        select_under_constraint(ratings, cost, 0.5)
    with pytest.raises(ConfigError, match="raise the target"):
        select_additive(ratings, lambda _b, part: cost_of[part], 0.0, 0.5)


def test_a_paths_macs_are_the_sum_of_its_layer_operators_macs():
    space = make_space("mbv2", 16, 1, 10, width=0.25)
    macs = space_macs(space)
    for seed in range(5):
        path = space.sample(random.Random(seed))
        spec = space.decode(path)
        expected = count_macs_params(build(spec), spec.input_shape)[0]
        assert macs.of(path) == pytest.approx(expected, rel=1e-9)


def test_dna_refuses_blocks_too_large_to_rate_exhaustively():
    data = load_data("synthetic", resolution=8)
    _, cuts = stage_cuts(build(default_teacher_arch(data)), torch.randn(2, 3, 8, 8))
    with pytest.raises(ConfigError, match="paths"):
        BlockwiseStudent(Supernet(make_space("mbv2", 8, 3, 10, width=0.25)), cuts)


def test_ennas_search_stage_trains_the_supernet_once_and_searches_with_inherited_weights(
        tmp_path, make_tiny_config, monkeypatch):
    from edgekd.pipeline.opening import open_run
    from edgekd.pipeline.run import run_search

    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    cfg = make_tiny_config(search={
        "space": "mbv2", "space_width": 0.25, "trials": 4, "strategy": "evolution", "evaluator": "ennas",
        "target_mmacs": 5.0, "oneshot": {"train": {"epochs": 2}, "subnets": 2, "kd_from_epoch": 1}})
    ctx = open_run(cfg, tmp_path / "runs")
    result = run_search(ctx)
    out = ctx.stage_dir("search")
    history = json.loads((out / "supernet.json").read_text())
    assert len(history) == 2 and history[1]["metrics"]["teacher_acc"] > 0
    space = ctx.space
    assert space.decode(space.encode(result.best_arch)) == result.best_arch
    trials = json.loads((out / "trials.json").read_text())
    assert len(trials) == 4 and all(0 <= t["acc"] <= 1 for t in trials)
    mtime = (out / "supernet.pt").stat().st_mtime
    run_search(open_run(cfg.model_copy(update={"search": cfg.search.model_copy(update={"trials": 5})}),
                        tmp_path / "runs"))
    assert (out / "supernet.pt").stat().st_mtime == mtime  # resumed: the supernet is not trained again
    assert len(json.loads((out / "trials.json").read_text())) == 5


def test_dna_search_stage_picks_the_best_rated_architecture_under_the_macs_target(
        tmp_path, make_tiny_config, monkeypatch):
    from edgekd.evaluators.dna import path_loss
    from edgekd.pipeline.opening import open_run
    from edgekd.pipeline.run import run_search
    from edgekd.pipeline.search.oneshot import blockwise_evaluator

    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    cfg = make_tiny_config(resolution=16, search={
        "space": "mbv2", "space_width": 0.25, "evaluator": "dna", "target_mmacs": 3.0,
        "oneshot": {"train": {"epochs": 1}, "rating_images": 16}})
    ctx = open_run(cfg, tmp_path / "runs")
    result = run_search(ctx)
    best = json.loads((ctx.stage_dir("search") / "best.json").read_text())
    assert best["mmacs"] <= 3.0 and best["evaluator"] == "dna"
    rated = blockwise_evaluator(ctx)  # resumed: trained and rated already
    student, ratings = rated.student, rated.ratings
    space, picked = ctx.space, path_loss(student, ratings, best["choices"])
    assert picked == pytest.approx(best["dna_loss"])
    macs = space_macs(space)  # additive MACs: checked against thop above
    rng, under = random.Random(0), 0
    for _ in range(3000):  # no sampled architecture under the target is rated better
        path = space.sample(rng)
        if macs.of(path) <= 3.0:
            under += 1
            assert path_loss(student, ratings, path) >= picked - 1e-9
    assert under > 300 and result.best_arch == space.decode(best["choices"])


def test_search_stage_says_when_the_supernet_has_not_learned(tmp_path, make_tiny_config, monkeypatch):
    from edgekd.core.ui import console
    from edgekd.pipeline.opening import open_run
    from edgekd.pipeline.search.oneshot import supernet_evaluator, warn_if_unlearned
    from edgekd.train import EpochStats

    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(console, "quiet", False)
    frozen = {"space": "mbv2", "space_width": 0.25, "evaluator": "spos",
              "oneshot": {"train": {"epochs": 1, "lr": 1e-9}}}
    ctx = open_run(make_tiny_config(search=frozen), tmp_path / "runs")
    with console.capture() as captured:
        supernet_evaluator(ctx)
    said = " ".join(captured.get().split())  # the console wraps lines
    acc = json.loads((ctx.stage_dir("search") / "supernet.json").read_text())[0]["metrics"]["student_acc"]
    assert f"reach {acc:.1%} training accuracy after 1 epoch, near chance (10.0%)" in said
    for acc, warned in ((0.18, True), (0.20, False), (0.7, False)):  # 10 classes: the line is at 19%
        with console.capture() as captured:
            warn_if_unlearned([EpochStats(1, 0.0, {"student_acc": acc})], 10)
        assert ("near chance" in " ".join(captured.get().split())) is warned, acc
