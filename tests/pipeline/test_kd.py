import pytest
import torch
import torch.nn.functional as F

from edgekd.core.arch import ArchSpec, BlockSpec, build
from edgekd.core.config import KDConfig, TrainConfig
from edgekd.data import load_data
from edgekd.train import evaluate, kd_loss, train


def test_alpha_zero_is_plain_cross_entropy():
    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    assert torch.allclose(kd_loss(s, t, y, alpha=0.0, tau=4.0), F.cross_entropy(s, y))


def test_identical_logits_leave_only_the_cross_entropy_share():
    s, y = torch.randn(8, 10), torch.randint(0, 10, (8,))
    for tau in (1.0, 4.0):
        assert torch.allclose(kd_loss(s, s.clone(), y, alpha=0.9, tau=tau), 0.1 * F.cross_entropy(s, y), atol=1e-6)


def test_kd_term_matches_hinton_formula():
    s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.randint(0, 5, (4,))
    tau, alpha = 3.0, 0.7
    p_t = F.softmax(t / tau, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / tau, 1))).sum(1).mean()
    expected = (1 - alpha) * F.cross_entropy(s, y) + alpha * tau**2 * kl
    assert torch.allclose(kd_loss(s, t, y, alpha=alpha, tau=tau), expected, atol=1e-6)


def _small_net(data):
    c, res, _ = data.input_shape
    blocks = (BlockSpec(op="conv", kernel=3, out_channels=16, stride=2),
              BlockSpec(op="dsconv", kernel=3, out_channels=16))
    return ArchSpec(resolution=res, in_channels=c, num_classes=data.num_classes, stem_channels=8, blocks=blocks,
                    head_channels=32)


def test_training_learns_the_task():
    data = load_data("synthetic", resolution=8)
    torch.manual_seed(0)
    model = build(_small_net(data))
    before = evaluate(model, data, "val")
    train(model, data, TrainConfig(epochs=4, lr=1e-2), split="train")
    assert evaluate(model, data, "val") > max(0.8, before + 0.3)


def test_interrupted_training_resumes_to_the_same_weights(tmp_path):
    data = load_data("synthetic", resolution=8)
    teacher_logits = torch.randn(len(data.labels), data.num_classes)
    cfg, kd = TrainConfig(epochs=3), KDConfig(alpha=0.5, tau=2.0)

    torch.manual_seed(0)
    straight = build(_small_net(data))
    train(straight, data, cfg, kd, teacher_logits, seed=1)

    class Stop(Exception):
        pass

    def stop_after_first(stats):
        if stats.epoch == 1:
            raise Stop

    torch.manual_seed(0)
    first = build(_small_net(data))
    ckpt = tmp_path / "state.pt"
    with pytest.raises(Stop):
        train(first, data, cfg, kd, teacher_logits, seed=1, checkpoint=ckpt, on_epoch=stop_after_first)
    torch.manual_seed(123)  # a fresh process would start from other random weights
    resumed = build(_small_net(data))
    history = train(resumed, data, cfg, kd, teacher_logits, seed=1, checkpoint=ckpt)
    assert [h.epoch for h in history] == [1, 2, 3]
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)
