"""Fixtures shared by the exporter tests."""

import pytest
import torch


def _trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in eval mode with non-trivial BatchNorm statistics, as after training, so that folding them into
    the convolutions (by an exporter or a runtime) is exercised."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="session")
def trained_like():
    """Gives a model BatchNorm statistics as after training (in place; returns it in eval mode)."""
    return _trained_like
