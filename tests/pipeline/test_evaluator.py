import torch

from edgekd.core.arch import build
from edgekd.core.config import KDConfig, TrainConfig
from edgekd.data import load_data
from edgekd.evaluators.proxy import KDProxyEvaluator
from edgekd.spaces import make_space
from edgekd.train import evaluate, train


def test_the_kd_proxy_scores_early_epochs_with_recalibrated_batchnorm():
    """After one epoch the running BatchNorm statistics still lag the weights; the proxy's score must not."""
    data = load_data("digits", resolution=16)
    small = {"layers": -1, "op": "mbconv_e1", "kernel": 3, "se": 0.0, "width": 0.75, "skip": "identity"}
    spec = make_space("mnas", 16, 1, 10, width=0.25).decode(
        {f"s{stage}_{decision}": value for stage in range(7) for decision, value in small.items()})
    proxy = TrainConfig(epochs=2, batch_size=64)
    scores = []
    KDProxyEvaluator(data, None, proxy, KDConfig(alpha=0.0)).evaluate(spec, report=lambda _e, acc: scores.append(acc))

    torch.manual_seed(0)
    stale = train(build(spec), data, proxy, KDConfig(alpha=0.0), split="mini_train",
                  evaluate=lambda m: evaluate(m, data, "mini_val"))
    assert len(scores) == 2
    assert stale[0].eval_acc < 0.2  # chance is 0.1: the first epoch's running statistics are useless
    assert scores[0] > stale[0].eval_acc + 0.15
