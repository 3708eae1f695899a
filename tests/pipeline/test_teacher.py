"""Teachers: trained on the spot (the run's seed decides it), or the user's own file: TorchScript, an edgekd
checkpoint, or a torchvision architecture with a local state_dict."""

import warnings

import pytest
import torch
import torchvision
from torch import nn

from edgekd.core.arch import build
from edgekd.core.errors import DataError
from edgekd.data import load_data
from edgekd.pipeline.teacher import default_teacher_arch, prepare_teacher, save_checkpoint


def test_the_same_seed_trains_the_same_teacher(tiny_config, tmp_path):
    data = load_data(tiny_config.data, tiny_config.seed, tiny_config.resolution)
    first = prepare_teacher(tiny_config, data, tmp_path / "a")
    torch.rand(100)  # whatever the process drew before must not matter
    second = prepare_teacher(tiny_config, data, tmp_path / "b")
    other = prepare_teacher(tiny_config.model_copy(update={"seed": 1}), data, tmp_path / "c")
    assert torch.equal(first.logits, second.logits)
    assert not torch.equal(first.logits, other.logits)


@pytest.fixture(scope="module")
def data():
    return load_data("synthetic", resolution=8)


def _trained(model: nn.Module, data) -> nn.Module:
    x, y, _ = next(data.batches("train", 600))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def _user_teacher(cfg, path, **fields):
    return cfg.model_copy(update={"teacher": str(path), **fields})


def test_a_torchscript_teacher_file_is_loaded_scored_and_raises_no_deprecation_noise(tiny_config, data, tmp_path):
    model = _trained(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)), data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(model, torch.zeros(1, 3, 8, 8)).save(str(tmp_path / "teacher.ts"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        teacher = prepare_teacher(_user_teacher(tiny_config, tmp_path / "teacher.ts"), data, tmp_path / "out")
    x, _, idx = next(data.batches("val", 32))
    with torch.no_grad():
        assert torch.allclose(teacher.logits[idx], model(x), atol=1e-5)
    assert teacher.val_acc > 0.5 and teacher.arch is None


def test_an_edgekd_checkpoint_teacher_keeps_its_architecture(tiny_config, data, tmp_path):
    arch = default_teacher_arch(data)
    model = build(arch)
    save_checkpoint(tmp_path / "teacher.pt", model, arch)
    teacher = prepare_teacher(_user_teacher(tiny_config, tmp_path / "teacher.pt"), data, tmp_path / "out")
    assert teacher.arch == arch
    loaded, saved = teacher.model.state_dict(), model.state_dict()
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)


def test_a_torchvision_teacher_loads_local_weights_only(tiny_config, data, tmp_path):
    model = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=10)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    cfg = tiny_config.model_copy(update={"teacher": "torchvision:mobilenet_v3_small",
                                         "teacher_weights": str(tmp_path / "weights.pt")})
    teacher = prepare_teacher(cfg, data, tmp_path / "out")
    assert teacher.logits.shape == (600, 10)
    with pytest.raises(DataError, match="needs --teacher-weights"):
        prepare_teacher(cfg.model_copy(update={"teacher_weights": None}), data, tmp_path / "out2")


@pytest.mark.parametrize("content, says", [
    (lambda p: torch.save({"foo": 1}, p), "neither TorchScript nor an edgekd checkpoint"),
    (lambda p: p.write_text("hello"), "cannot read teacher file"),
    (lambda p: torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(7, 10))).save(str(p)),
     "cannot take input of shape (2, 3, 8, 8): RuntimeError: mat1 and mat2 shapes cannot be multiplied"),
    (lambda p: torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(192, 4))).save(str(p)),
     "outputs shape (2, 4); 10 classes needed"),
], ids=["a-dict", "not-torch", "wrong-input", "wrong-classes"])
def test_a_teacher_file_that_does_not_fit_is_a_one_line_error(tiny_config, data, tmp_path, content, says):
    path = tmp_path / "teacher.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        content(path)
    with pytest.raises(DataError) as exc:
        prepare_teacher(_user_teacher(tiny_config, path), data, tmp_path / "out")
    assert says in str(exc.value) and "\n" not in str(exc.value)
