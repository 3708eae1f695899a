"""The one trainer: resume (between and inside epochs), teachers (cached, frozen, learning), augmentation,
streamed image trees, devices."""

import os
import pickle
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import edgekd
from edgekd.core.arch import ArchSpec, BlockSpec, build
from edgekd.core.config import KDConfig, TrainConfig
from edgekd.core.errors import ConfigError, DeviceError, RunStateError
from edgekd.data import load_data
from edgekd.train import (
    CachedLogits,
    DistillTask,
    FrozenTeacher,
    LearningTeacher,
    Runtime,
    evaluate,
    fit,
    resolve_device,
    train,
)
from edgekd.train.loop import StepSchedule


def _net(data, width=16):
    c, res, _ = data.input_shape
    blocks = (BlockSpec(op="conv", kernel=3, out_channels=width, stride=2),
              BlockSpec(op="dsconv", kernel=3, out_channels=width))
    return build(ArchSpec(resolution=res, in_channels=c, num_classes=data.num_classes, stem_channels=8,
                          blocks=blocks, head_channels=32))


def write_jpeg_tree(root: Path, classes: int = 3, per_class: int = 20, size: int = 24, seed: int = 0) -> Path:
    """An ImageFolder tree of JPEGs: class c is a bright square at a class-specific place on noise."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
            x0 = c * size // classes
            img[size // 4 : size // 4 + size // 3, x0 : x0 + size // classes] = 230
            Image.fromarray(img).save(root / f"class{c}" / f"{i}.jpg", quality=90)
    return root


class Interrupt(Exception):
    pass


class StopAt(DistillTask):
    """Distillation that raises at one (epoch, step), as a crash would."""

    def __init__(self, *args, at: tuple[int, int], **kwargs):
        super().__init__(*args, **kwargs)
        self.at, self.epoch = at, 0

    def begin_epoch(self, epoch, saved):
        self.epoch = epoch
        return super().begin_epoch(epoch, saved)

    def loss(self, net, batch, step):
        if (self.epoch, step) == self.at:
            raise Interrupt
        return super().loss(net, batch, step)


def _weights(model):
    return [t.detach().clone() for t in model.state_dict().values()]


def test_a_run_interrupted_inside_an_epoch_resumes_from_its_mid_epoch_state(tmp_path):
    data = load_data("synthetic", resolution=8)
    logits = torch.randn(len(data.labels), data.num_classes)
    cfg, kd = TrainConfig(epochs=2, batch_size=64), KDConfig(alpha=0.5, tau=2.0)
    runtime = Runtime(checkpoint_steps=2)
    torch.manual_seed(0)
    straight = _net(data)
    expected = fit(DistillTask(straight, kd, CachedLogits(logits)), data, "train", cfg, runtime, seed=1)

    state = tmp_path / "state.pt"
    torch.manual_seed(0)
    with pytest.raises(Interrupt):
        fit(StopAt(_net(data), kd, CachedLogits(logits), at=(1, 5)), data, "train", cfg, runtime, seed=1,
            checkpoint=state)
    saved = torch.load(state, weights_only=True)
    assert len(saved["history"]) == 1 and saved["progress"]["epoch"] == 1 and saved["progress"]["step"] == 4
    torch.manual_seed(99)  # a fresh process starts from other weights
    resumed = _net(data)
    history = fit(DistillTask(resumed, kd, CachedLogits(logits)), data, "train", cfg, runtime, seed=1,
                  checkpoint=state)
    for a, b in zip(_weights(straight), _weights(resumed), strict=True):
        torch.testing.assert_close(a.float(), b.float(), atol=1e-5, rtol=1e-5)
    for h, e in zip(history, expected, strict=True):
        assert h.loss == pytest.approx(e.loss, rel=1e-5) and h.images == e.images
    assert torch.load(state, weights_only=True)["progress"] is None


def test_a_corrupt_latest_state_falls_back_to_the_previous_one_and_a_pickled_payload_never_runs(tmp_path):
    data = load_data("synthetic", resolution=8)
    cfg, state = TrainConfig(epochs=2), tmp_path / "state.pt"
    torch.manual_seed(0)
    fit(DistillTask(_net(data), KDConfig(alpha=0.0)), data, "train", cfg, checkpoint=state)
    state.write_bytes(state.read_bytes()[:100])  # truncated by a crash or a full disk
    more = TrainConfig(epochs=3)
    history = fit(DistillTask(_net(data), KDConfig(alpha=0.0)), data, "train", more, checkpoint=state)
    assert [h.epoch for h in history] == [1, 2, 3]  # epoch 1 from the previous state, 2 and 3 trained again

    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    for path in (state, state.with_name(state.name + ".prev")):
        with path.open("wb") as f:
            pickle.dump(Payload(), f)
    with pytest.raises(RunStateError, match=re.escape(str(state))):
        fit(DistillTask(_net(data), KDConfig(alpha=0.0)), data, "train", more, checkpoint=state)
    assert not marker.exists()


class Recorder(nn.Module):
    """Passes a model through, keeping every input batch it saw."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.model(x)


def test_with_augmentation_the_frozen_teacher_sees_the_students_augmented_batch(tmp_path):
    data = load_data(f"imagefolder:{write_jpeg_tree(tmp_path / 'tree')}", resolution=16)
    torch.manual_seed(0)
    teacher, student = Recorder(_net(data)), Recorder(_net(data))
    before = [p.clone() for p in teacher.parameters()]
    runtime = Runtime(augment="standard")
    train(student, data, TrainConfig(epochs=2, batch_size=16), KDConfig(), FrozenTeacher(teacher), runtime=runtime)
    assert len(student.seen) == len(teacher.seen) == 2 * data.steps_per_epoch("train", 16)
    for s, t in zip(student.seen, teacher.seen, strict=True):
        assert torch.equal(s, t)
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters(), strict=True))  # frozen
    plain = data.normalize(data.images(data.index("train")[:16]))
    first = [x for x in student.seen[: data.steps_per_epoch("train", 16)]]
    assert not any(torch.equal(x, plain[: len(x)]) for x in first)  # augmented images, not the stored ones
    with pytest.raises(ConfigError, match="augmentation"):
        train(_net(data), data, TrainConfig(epochs=1), KDConfig(), torch.zeros(len(data.labels), 3), runtime=runtime)


def test_augmentation_is_a_function_of_seed_epoch_and_image_not_of_workers(tmp_path):
    data = load_data(f"imagefolder:{write_jpeg_tree(tmp_path / 'tree', per_class=8)}", resolution=16)
    kwargs = dict(shuffle=True, seed=5, epoch=1, augment="standard")
    serial = list(data.loader("train", 4, workers=0, **kwargs))
    parallel = list(data.loader("train", 4, workers=2, **kwargs))
    assert len(serial) == len(parallel) == data.steps_per_epoch("train", 4)
    for (x0, y0, i0), (x1, y1, i1) in zip(serial, parallel, strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1) and torch.equal(i0, i1)
    other_epoch = list(data.loader("train", 4, workers=0, **{**kwargs, "epoch": 2}))
    assert not torch.equal(torch.cat([b[0] for b in serial]), torch.cat([b[0] for b in other_epoch]))


def test_a_streamed_jpeg_tree_trains_through_loader_workers(tmp_path):
    data = load_data(f"imagefolder:{write_jpeg_tree(tmp_path / 'tree', per_class=30)}", resolution=16)
    assert not data.source.in_memory and len(data.source) == 90
    torch.manual_seed(0)
    model = _net(data)
    history = train(model, data, TrainConfig(epochs=6, batch_size=16, lr=1e-2), runtime=Runtime(workers=2),
                    evaluate=lambda m: evaluate(m, data, "val", workers=2))
    assert history[-1].images == len(data.index("train")) and history[-1].eval_acc > 0.8


def test_a_learning_teacher_is_trained_with_the_student(tmp_path):
    data = load_data("synthetic", resolution=8)
    torch.manual_seed(0)
    teacher, student = _net(data, width=24), _net(data)
    before = [p.clone() for p in teacher.parameters()]
    history = train(student, data, TrainConfig(epochs=4, lr=1e-2), KDConfig(alpha=0.5), LearningTeacher(teacher),
                    evaluate=lambda m: evaluate(m, data, "val"))
    assert not any(torch.equal(a, b) for a, b in zip(before, teacher.parameters(), strict=True))
    assert history[-1].metrics["teacher_acc"] > history[0].metrics["teacher_acc"]
    assert evaluate(teacher, data, "val") > 0.8 and history[-1].eval_acc > 0.8


def test_every_training_goes_through_the_one_trainer():
    """No training loop outside edgekd/train: the optimiser steps of every model (teacher, proxy, student,
    supernets, DNA's blocks) are the trainer's. The RL strategy's controller is a policy, not a model of the
    data, and keeps its own PPO update."""
    root = Path(edgekd.__file__).parent
    outside = [p for p in root.rglob("*.py") if "train" not in p.relative_to(root).parts[:1]]
    steps = re.compile(r"\.backward\(|optim\.\w+\(|\.step\(\)")
    found = {str(p.relative_to(root)) for p in outside if steps.search(p.read_text())}
    assert found == {"strategies/rl.py"}


def test_every_pipeline_trainer_steps_through_the_one_schedule(monkeypatch, tmp_path, make_tiny_config):
    from edgekd.pipeline.opening import open_run
    from edgekd.pipeline.run import run_distill, run_search

    calls = []
    real = StepSchedule.step
    monkeypatch.setattr(StepSchedule, "step", lambda self, loss: calls.append(1) or real(self, loss))
    ctx = open_run(make_tiny_config(), tmp_path / "runs")
    counts = {}
    for stage, run in (("teacher", lambda: ctx.teacher), ("proxy search", lambda: run_search(ctx)),
                       ("distill", lambda: run_distill(ctx))):
        before = len(calls)
        run()
        counts[stage] = len(calls) - before
    ennas = open_run(make_tiny_config(name="oneshot", search={
        "space": "mbv2", "space_width": 0.25, "trials": 2, "evaluator": "ennas", "target_mmacs": 5.0,
        "oneshot": {"train": {"epochs": 1}, "subnets": 2}}), tmp_path / "runs")
    before = len(calls)
    run_search(ennas)
    counts["ennas supernet"] = len(calls) - before
    from edgekd.evaluators.dna import BlockwiseStudent, TeacherBlocks, stage_cuts, train_blockwise
    from edgekd.evaluators.supernet import Supernet
    from edgekd.pipeline.teacher import default_teacher_arch
    from edgekd.spaces import make_space

    data = load_data("synthetic", resolution=16)
    gm, cuts = stage_cuts(build(default_teacher_arch(data)), data.tensors("val", limit=2)[0])
    student = BlockwiseStudent(Supernet(make_space("mbv2", 16, 3, 10, width=0.25)), cuts)
    before = len(calls)
    train_blockwise(student, TeacherBlocks(gm, cuts), data, TrainConfig(epochs=1, batch_size=128))
    counts["dna blocks"] = len(calls) - before
    assert all(n > 0 for n in counts.values()), counts


def test_asking_for_a_missing_gpu_is_an_error_and_auto_picks_what_is_there():
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            resolve_device("cuda")
        assert resolve_device("auto").kind in ("cpu", "mps")
    if not torch.backends.mps.is_available():
        with pytest.raises(DeviceError, match="Metal"):
            resolve_device("mps")


@pytest.mark.cuda(needs="torch")
@pytest.mark.parametrize("amp", [True, False])
def test_training_on_cuda_with_and_without_mixed_precision(amp):
    data = load_data("synthetic", resolution=16)
    device = resolve_device("cuda", amp=amp)
    assert device.precision == ("fp32" if not amp else "bf16" if torch.cuda.is_bf16_supported() else "fp16")
    torch.manual_seed(0)
    teacher, student = _net(data, width=24), _net(data)
    history = train(student, data, TrainConfig(epochs=4, lr=1e-2), KDConfig(), FrozenTeacher(teacher),
                    runtime=Runtime(device=device, augment="standard"), evaluate=lambda m: evaluate(m, data, "val"))
    assert next(student.parameters()).is_cuda and history[-1].eval_acc > 0.5
    assert student.stem[0].weight.is_contiguous(memory_format=torch.channels_last)


def _channels_last_while_training(student, data, cfg: TrainConfig) -> tuple[list[bool], list]:
    """Trains ``student``: whether its first convolution was channels-last at the end of each epoch, and the
    epochs' stats."""
    first = next(m for m in student.modules() if isinstance(m, nn.Conv2d))
    seen: list[bool] = []
    history = train(student, data, cfg, evaluate=lambda m: seen.append(
        first.weight.is_contiguous(memory_format=torch.channels_last)) or 0.0)
    return seen, history


def test_the_cpu_trains_in_channels_last_and_hands_the_model_back_in_its_own_layout():
    data = load_data("synthetic", resolution=8)
    student = _net(data)
    seen, history = _channels_last_while_training(student, data, TrainConfig(epochs=1))
    assert seen == [True] and history[0].loss > 0
    assert student.stem[0].weight.is_contiguous()  # handed back in the layout it came in


def test_a_strided_1x1_convolution_trains_in_the_default_layout_on_the_cpu():
    """oneDNN's channels-last backward pass of a strided 1x1 convolution with few input channels writes out of
    bounds (it crashed this test's process on an AVX2 host, one thread)."""
    data = load_data("synthetic", resolution=16)
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 8, 1, stride=2), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(8, data.num_classes))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seen, history = _channels_last_while_training(student, data, TrainConfig(epochs=2, lr=1e-2))
    finally:
        torch.set_num_threads(threads)
    assert seen == [False, False]  # the whole model in NCHW
    assert history[-1].loss < history[0].loss


def test_epoch_stats_round_trip_through_the_state(tmp_path):
    data = load_data("synthetic", resolution=8)
    state = tmp_path / "s.pt"
    first = train(_net(data), data, TrainConfig(epochs=1), checkpoint=state)
    again = train(_net(data), data, TrainConfig(epochs=1), checkpoint=state)
    assert [asdict(h) for h in again] == [asdict(h) for h in first] and first[0].images_per_s > 0


def test_a_torchvision_teacher_at_its_native_224_px_teaches_online_with_augmentation(tmp_path, make_tiny_config):
    import torchvision

    from edgekd.pipeline.opening import open_run

    tree = write_jpeg_tree(tmp_path / "tree", classes=2, per_class=6, size=40)
    weights = tmp_path / "resnet18.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), weights)
    cfg = make_tiny_config(data=f"imagefolder:{tree}", resolution=224, augment="standard",
                           teacher="torchvision:resnet18", teacher_weights=str(weights))
    ctx = open_run(cfg, tmp_path / "runs")
    assert ctx.teacher.logits is None and 0 <= ctx.teacher.val_acc <= 1  # no cache of un-augmented logits
    signal = ctx.teacher_signal
    assert isinstance(signal, FrozenTeacher) and signal.model is not ctx.teacher.model
    signal.model = Recorder(signal.model)
    student = _net(ctx.data, width=8)
    train(student, ctx.data, TrainConfig(epochs=1, batch_size=4), KDConfig(), signal, runtime=ctx.runtime)
    assert {tuple(x.shape[1:]) for x in signal.model.seen} == {(3, 224, 224)}


def test_data_and_train_import_nothing_from_the_pipeline():
    code = ("import sys, edgekd.data, edgekd.train; "
            "print(sorted(m for m in sys.modules if m.startswith(('edgekd.pipeline', 'edgekd.latency_models', "
            "'edgekd.exporters'))))")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
