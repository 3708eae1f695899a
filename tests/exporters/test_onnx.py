import itertools

import onnx
import pytest
import torch

from edgekd.core.arch import ArchSpec, BlockSpec, build
from edgekd.exporters import get_exporter
from edgekd.exporters.onnx import export_onnx
from edgekd.runtime.ort import open_onnx

OP_VARIANTS = [
    *[dict(op="mbconv", expand=e) for e in (1, 3, 6)],
    dict(op="dsconv"),
    dict(op="conv"),
]


def onnx_logits(path, x: torch.Tensor, provider: str = "cpu") -> torch.Tensor:
    return torch.from_numpy(open_onnx(path, provider=provider)(x.numpy()))


def _one_block_net(block: BlockSpec, in_channels: int = 3) -> ArchSpec:
    return ArchSpec(resolution=12, in_channels=in_channels, num_classes=5, stem_channels=8, blocks=(block,),
                    head_channels=16)


CASES = [
    (variant, kernel, se, stride, residual)
    for variant, kernel, se, (stride, residual) in itertools.product(
        OP_VARIANTS, (3, 5, 7), (0.0, 0.25), ((1, True), (1, False), (2, False))
    )
]


@pytest.mark.parametrize("provider", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("variant, kernel, se, stride, residual", CASES)
def test_every_op_exports_and_matches_onnx_runtime(tmp_path, variant, kernel, se, stride, residual, provider,
                                                   trained_like):
    block = BlockSpec(kernel=kernel, se_ratio=se, stride=stride, residual=residual, out_channels=8, **variant)
    spec = _one_block_net(block)
    model = trained_like(build(spec))
    path = export_onnx(model, spec.input_shape, tmp_path / "m.onnx")
    x = torch.randn(7, *spec.input_shape)  # batch 7: the batch axis is dynamic
    with torch.no_grad():
        ref = model(x)
    got = onnx_logits(path, x, provider)
    assert (got - ref).abs().max() <= 1e-4
    assert torch.equal(got.argmax(1), ref.argmax(1))


def test_registered_onnx_exporter_writes_a_checked_model_with_dynamic_batch(tmp_path):
    spec = _one_block_net(BlockSpec(op="mbconv", kernel=3, expand=3, out_channels=8))
    path = get_exporter("onnx")(build(spec), spec, tmp_path, {"opset": 17})
    model = onnx.load(path)
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 17
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value


def test_export_leaves_the_model_as_it_was(tmp_path, trained_like):
    spec = _one_block_net(BlockSpec(op="mbconv", kernel=3, expand=3, se_ratio=0.25, out_channels=8))
    model = trained_like(build(spec)).train()
    frozen = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, spec.input_shape, tmp_path / "m.onnx")
    assert not frozen.training and all(m.training for m in model.modules() if m is not frozen)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    x = torch.randn(5, *spec.input_shape)
    with torch.no_grad():  # the file holds the eval-mode network (running statistics), not the training one
        assert (onnx_logits(tmp_path / "m.onnx", x) - model.eval()(x)).abs().max() <= 1e-4


def test_dynamo_exporter_agrees_with_torchscript(tmp_path, trained_like):
    spec = _one_block_net(BlockSpec(op="mbconv", kernel=5, expand=6, se_ratio=0.25, out_channels=8))
    model = trained_like(build(spec))
    x = torch.randn(3, *spec.input_shape)
    a = onnx_logits(export_onnx(model, spec.input_shape, tmp_path / "a.onnx", exporter="torchscript"), x)
    b = onnx_logits(export_onnx(model, spec.input_shape, tmp_path / "b.onnx", exporter="dynamo"), x)
    assert (a - b).abs().max() <= 1e-4
