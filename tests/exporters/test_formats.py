"""Every export format runs in its own runtime and agrees with the PyTorch student it came from."""

import contextlib
import importlib
import io
import json
import logging
import re
import sys
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgekd.core.arch import ArchSpec, BlockSpec, build
from edgekd.core.config import TrainConfig
from edgekd.core.devices import LocalDevice, NamedDevice
from edgekd.core.errors import ConfigError, DeviceError
from edgekd.data import load_data
from edgekd.exporters import get_format
from edgekd.exporters.onnx import export_onnx
from edgekd.exporters.onnx_int8 import int8_friendly, quantize_int8
from edgekd.exporters.tensorrt import require_tensorrt
from edgekd.latency_models.measured import MeasuredLatency
from edgekd.pipeline.validate import compare, run_batched, validate_artifact
from edgekd.runtime.ort import open_onnx
from edgekd.runtime.trtexec import Trtexec, parse_latency_summary, parse_outputs
from edgekd.train import train

HOST = NamedDevice(name="host-cpu", spec=LocalDevice(threads=1))


@pytest.fixture(scope="module")
def trained():
    """A small student really trained on synthetic data, with its held-out images, labels and PyTorch logits."""
    data = load_data("synthetic", resolution=12)
    spec = ArchSpec(
        resolution=12, in_channels=3, num_classes=10, stem_channels=8, head_channels=32,
        blocks=(BlockSpec(op="mbconv", kernel=3, expand=3, out_channels=16, stride=2, se_ratio=0.25),
                BlockSpec(op="dsconv", kernel=5, out_channels=16, residual=True),
                BlockSpec(op="conv", kernel=3, out_channels=24, stride=2)),
    )
    torch.manual_seed(0)
    model = build(spec)
    train(model, data, TrainConfig(epochs=12, lr=5e-3))
    model.eval()
    images, labels = (t.numpy() for t in data.tensors("val"))
    with torch.no_grad():
        ref = model(torch.from_numpy(images)).numpy()
    calibration = data.tensors("train")[0][:128].numpy()
    return model, spec, images, labels, ref, calibration


def _export(fmt, trained, tmp_path, device=HOST, **options):
    model, spec, images, labels, ref, calibration = trained
    path = get_format(fmt).export(model, spec, tmp_path, {"calibration": calibration, "device": device, **options})
    logits = run_batched(get_format(fmt).open(path, device), images)
    return path, logits, compare(logits, ref, labels)


def test_the_student_learned_something(trained):
    *_, labels, ref, _ = trained
    assert (ref.argmax(1) == labels).mean() > 0.9  # else agreement tests below would prove little


def test_onnx_fp32_is_simplified_and_matches_pytorch(trained, tmp_path):
    path, _, m = _export("onnx", trained, tmp_path, opset=17)
    assert m["max_abs_logit_diff"] <= 1e-4 and m["top1_agreement"] == 1.0
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    raw = onnx.load(export_onnx(trained[0], trained[1].input_shape, tmp_path / "raw.onnx", simplify=False))
    assert len(model.graph.node) < len(raw.graph.node)  # onnxslim folded something away


def test_onnx_fp16_halves_the_weights_and_keeps_fp32_io(trained, tmp_path):
    fp32, _, _ = _export("onnx", trained, tmp_path)
    path, _, m = _export("onnx-fp16", trained, tmp_path)
    model = onnx.load(path)
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    float_inits = [i for i in model.graph.initializer if i.data_type in floats]
    assert all(i.data_type == onnx.TensorProto.FLOAT16 for i in float_inits)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert path.stat().st_size < 0.7 * fp32.stat().st_size
    assert m["max_abs_logit_diff"] <= 0.05 and m["top1_agreement"] >= 0.98


def test_ort_is_onnx_runtimes_own_format_and_runs_the_fp32_model(trained, tmp_path):
    path, _, m = _export("ort", trained, tmp_path)
    assert path.name == "model.ort" and path.read_bytes()[4:8] == b"ORTM"  # the FlatBuffers file identifier
    assert m["max_abs_logit_diff"] <= 1e-4 and m["top1_agreement"] == 1.0
    *_, images, labels, ref, _ = trained
    report = validate_artifact("ort", path, images, ref, labels, HOST, MeasuredLatency(HOST, tmp_path / "lat.sqlite"))
    assert report["latency_ms"] > 0 and report["latency_where"] == "this host, in process"


def test_onnx_int8_is_per_channel_qdq_and_its_accuracy_cost_is_measured(trained, tmp_path):
    path, logits, m = _export("onnx-int8", trained, tmp_path)
    model = onnx.load(path)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    inits = {i.name: i for i in model.graph.initializer}
    weight_scales = [
        onnx.numpy_helper.to_array(inits[n.input[1]]) for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits
        and inits[n.input[0]].data_type == onnx.TensorProto.INT8
    ]
    assert weight_scales and any(s.size > 1 for s in weight_scales)  # per-channel weight scales
    *_, labels, ref, _ = trained
    torch_acc = float((ref.argmax(1) == labels).mean())
    assert m["acc"] == pytest.approx(float((logits.argmax(1) == labels).mean()))
    assert m["max_abs_logit_diff"] > 0  # quantization changes the logits: the cost is real and measured
    assert torch_acc - m["acc"] <= 0.02 and m["top1_agreement"] >= 0.95


def _optimized_ops(path, tmp_path):
    """Operator counts of the graph ONNX Runtime actually runs for the model at ``path``."""
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)


def test_int8_squeeze_excite_student_runs_in_int8_from_input_to_logits(trained, tmp_path):
    path, *_ = _export("onnx-int8", trained, tmp_path)
    ops = _optimized_ops(path, tmp_path)
    # one quantize of the input, one dequantize of the logits: no fp32 island (squeeze-excite pool and gate)
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 1, ops
    assert ops["QLinearGlobalAveragePool"] >= 2 and ops["QLinearMul"] >= 1  # the SE pool and gate, and the head


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_int8_friendly_rewrite_is_exact(trained, tmp_path, exporter):
    model, spec, images, *_ = trained
    fp32 = onnx.load(export_onnx(model, spec.input_shape, tmp_path / "fp32.onnx", exporter=exporter))
    friendly = int8_friendly(fp32)
    onnx.save(friendly, tmp_path / "friendly.onnx")
    ops, clips = Counter(n.op_type for n in friendly.graph.node), sum(n.op_type == "Clip" for n in fp32.graph.node)
    assert ops["ReduceMean"] == ops["HardSigmoid"] == 0 and ops["GlobalAveragePool"] == 2 and ops["Clip"] == clips + 1
    before = run_batched(open_onnx(tmp_path / "fp32.onnx"), images)
    after = run_batched(open_onnx(tmp_path / "friendly.onnx"), images)
    assert np.abs(before - after).max() <= 1e-5


def test_int8_survives_uint8_by_int8_pair_saturation(tmp_path):
    """Inputs at the top of their range against weights at the top of theirs: on x86 without VNNI, ONNX Runtime
    adds pairs of uint8 x int8 products in saturating int16 (255 x 127 x 2 > 32767), which full 8-bit weights
    overflow and 7-bit weights do not."""
    conv = torch.nn.Conv2d(8, 4, 1, bias=False)
    torch.nn.init.constant_(conv.weight, 1.0)
    model = torch.nn.Sequential(conv, torch.nn.Flatten()).eval()
    fp32 = export_onnx(model, (8, 1, 1), tmp_path / "fp32.onnx")
    ones = np.ones((1, 8, 1, 1), np.float32)
    calibration = np.concatenate([np.random.default_rng(0).random((63, 8, 1, 1), dtype=np.float32), ones])
    int8 = open_onnx(quantize_int8(fp32, tmp_path / "int8.onnx", calibration))(ones)
    assert np.abs(int8 - 8.0).max() <= 0.1  # 8 inputs x weight 1; saturated pairs would give about 4


def test_int8_for_tensorrt_is_symmetric_signed_and_agrees_in_onnx_runtime(trained, tmp_path):
    """TensorRT's parser takes only int8 Q/DQ with zero point 0; that model still runs (here in ONNX Runtime)."""
    model, spec, images, labels, ref, calibration = trained
    fp32 = export_onnx(model, spec.input_shape, tmp_path / "fp32.onnx")
    path = quantize_int8(fp32, tmp_path / "trt-int8.onnx", calibration, runtime="tensorrt")
    graph = onnx.load(path).graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    zero_points = [inits[n.input[2]] for n in qdq]
    assert qdq and len(zero_points) == len(qdq)
    assert all(z.dtype == np.int8 and not z.any() for z in zero_points)
    m = compare(run_batched(open_onnx(path), images), ref, labels)
    assert m["top1_agreement"] >= 0.95


@pytest.mark.parametrize("fmt", ["onnx-int8", "tflite-int8", "executorch-int8", "executorch-int8-pointwise"])
def test_int8_without_calibration_images_is_a_clear_error(trained, tmp_path, fmt):
    model, spec, *_ = trained
    with pytest.raises(ConfigError, match="needs calibration images"):
        get_format(fmt).export(model, spec, tmp_path, {})


def test_unknown_format_names_the_available_ones():
    with pytest.raises(ConfigError, match="tflite-int8"):
        get_format("coreml")


def _missing(module: str) -> str | None:
    try:
        importlib.import_module(module)
    except ImportError:
        return f"{module} is not installed (extra {'litert' if 'litert' in module else 'executorch'})"
    return None


PHONE_FORMATS = [  # format, file, FlatBuffers identifier, module it needs, max |logit diff|, min agreement
    ("tflite", "model.tflite", b"TFL3", "litert_torch", 1e-4, 1.0),
    ("tflite-int8", "model-int8.tflite", b"TFL3", "litert_torch", None, 0.95),
    ("executorch", "model.pte", b"ET12", "executorch.exir", 1e-4, 1.0),
    ("executorch-int8", "model-int8.pte", b"ET12", "executorch.exir", None, 0.95),
    ("executorch-int8-pointwise", "model-int8-pointwise.pte", b"ET12", "executorch.exir", None, 0.95),
]


@pytest.fixture(scope="module")
def phone_export(trained, tmp_path_factory):
    """Each phone format exported once per module: (path, logits, metrics) by format; what the converters printed
    to stdout or logged meanwhile is in ``export.printed[fmt]``."""
    done, printed = {}, {}

    def export(fmt):
        if fmt not in done:
            logged, out = logging.Handler(), io.StringIO()
            logged.emit = lambda record: out.write(record.getMessage() + "\n")
            logging.getLogger().addHandler(logged)
            try:
                with contextlib.redirect_stdout(out):
                    done[fmt] = _export(fmt, trained, tmp_path_factory.mktemp(fmt))
            finally:
                logging.getLogger().removeHandler(logged)
            printed[fmt] = out.getvalue()
        return done[fmt]

    export.printed = printed
    return export


@pytest.mark.parametrize("fmt, name, ident, module, max_diff, min_agreement", [
    pytest.param(*f, marks=pytest.mark.skipif(_missing(f[3]) is not None, reason=str(_missing(f[3]))))
    for f in PHONE_FORMATS])
def test_phone_formats_run_in_their_own_runtime_and_agree(trained, phone_export, fmt, name, ident, module, max_diff,
                                                          min_agreement):
    path, logits, m = phone_export(fmt)
    assert path.name == name and path.read_bytes()[4:8] == ident
    chatter = phone_export.printed[fmt]  # edgekd's export bar shows progress; a converter's step log is noise
    assert "[START]" not in chatter and "training mode" not in chatter, chatter
    *_, images, labels, ref, _ = trained
    assert logits.shape == ref.shape  # the whole held-out split in batches: any batch size runs
    if max_diff is None:  # int8: the cost is real (logits moved) and measured, and small
        assert m["max_abs_logit_diff"] > 0 and (ref.argmax(1) == labels).mean() - m["acc"] <= 0.03
    else:
        assert m["max_abs_logit_diff"] <= max_diff
    assert m["top1_agreement"] >= min_agreement
    report = validate_artifact(fmt, path, images, ref, labels, HOST, None)
    assert report["runtime"] == get_format(fmt).runtime() and report["latency_ms"] > 0
    assert report["runtime"].split("-")[0] in ("ai", "executorch")


@pytest.mark.skipif(_missing("litert_torch") is not None, reason=str(_missing("litert_torch")))
def test_tflite_int8_takes_and_gives_int8_as_phone_kernels_want(phone_export):
    from ai_edge_litert.interpreter import Interpreter

    path, _, _ = phone_export("tflite-int8")
    interpreter = Interpreter(model_path=str(path))
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert interpreter.get_input_details()[0]["dtype"] == np.int8 and {"CONV_2D", "DEPTHWISE_CONV_2D"} <= ops
    weights = [t for t in interpreter.get_tensor_details() if t["dtype"] == np.int8 and len(t["shape"]) == 4]
    assert any(len(t["quantization_parameters"]["scales"]) > 1 for t in weights)  # per-channel


@pytest.mark.skipif(_missing("executorch.exir") is not None, reason=str(_missing("executorch.exir")))
def test_executorch_int8_pointwise_keeps_only_the_larger_convolutions_in_fp32(trained):
    from edgekd.exporters.executorch import int8_in_pointwise, quantized_program

    model, spec, *_, calibration = trained

    def conv_weights(only_pointwise: bool) -> Counter:
        """(kernel, whether its weight is dequantized from int8) of every convolution of the quantized program."""
        quantize = int8_in_pointwise if only_pointwise else None
        graph = quantized_program(model, spec, {"calibration": calibration}, "executorch-int8", quantize).graph
        return Counter((max(n.args[1].meta["val"].shape[2:]), "dequantize" in str(n.args[1].target))
                       for n in graph.nodes if n.target is torch.ops.aten.conv2d.default)

    everything, pointwise = conv_weights(False), conv_weights(True)
    assert {k for k, _ in everything} == {1, 3, 5}  # the stem, depthwise 3x3 and 5x5, full 3x3, pointwise
    assert all(int8 for _, int8 in everything)
    assert all(int8 == (kernel == 1) for kernel, int8 in pointwise) and pointwise.total() == everything.total()


@pytest.mark.parametrize("module, fmt, package, extra", [("ai_edge_litert", "tflite", "LiteRT", "litert"),
                                                         ("executorch", "executorch", "ExecuTorch", "executorch")])
def test_a_missing_phone_runtime_is_a_clear_error(tmp_path, monkeypatch, module, fmt, package, extra):
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # what an absent package looks like to import
    (tmp_path / "m").write_bytes(b"")
    with pytest.raises(DeviceError, match=re.escape(f"{package} is not installed: pip install 'edgekd[{extra}]'")):
        get_format(fmt).open(tmp_path / "m", HOST)


def _tensorrt_missing() -> str | None:
    try:
        require_tensorrt()
    except DeviceError as exc:
        return str(exc)
    return None


@pytest.mark.skipif(_tensorrt_missing() is None, reason="TensorRT and a GPU are present")
@pytest.mark.parametrize("fmt", ["tensorrt", "tensorrt-fp16", "tensorrt-int8"])
def test_tensorrt_without_tensorrt_or_gpu_is_a_clear_error(trained, tmp_path, fmt):
    model, spec, *_ = trained
    with pytest.raises(DeviceError, match=r"TensorRT is not installed|no NVIDIA GPU"):
        get_format(fmt).export(model, spec, tmp_path, {})


@pytest.mark.skipif(_tensorrt_missing() is not None, reason=f"{_tensorrt_missing()}")
@pytest.mark.parametrize("fmt, max_diff, min_agreement", [
    ("tensorrt", 1e-4, 1.0), ("tensorrt-fp16", 0.05, 0.98), ("tensorrt-int8", None, 0.9)])
def test_tensorrt_engine_runs_on_the_gpu_and_agrees(trained, tmp_path, fmt, max_diff, min_agreement):
    path, _, m = _export(fmt, trained, tmp_path)
    assert path.suffix == ".plan"
    assert m["top1_agreement"] >= min_agreement
    if max_diff is not None:
        assert m["max_abs_logit_diff"] <= max_diff
    assert np.isfinite(m["max_abs_logit_diff"])


@pytest.mark.parametrize("fmt, flags, min_agreement", [
    ("tensorrt", ["--noTF32"], 1.0), ("tensorrt-fp16", ["--fp16"], 0.98), ("tensorrt-int8", ["--fp16", "--int8"], 0.9)])
def test_engines_for_an_ssh_board_are_built_run_and_timed_there_with_trtexec(trained, board, trtexec_emulator,
                                                                             tmp_path, fmt, flags, min_agreement):
    device = board(trtexec=trtexec_emulator, repeats=20)
    (tmp_path / "export").mkdir()
    path, _, m = _export(fmt, trained, tmp_path / "export", device)
    assert path.parent == tmp_path / "export" and path.suffix == ".plan"  # fetched back from the board
    assert m["top1_agreement"] >= min_agreement and np.isfinite(m["max_abs_logit_diff"])
    calls = [json.loads(line) for line in (tmp_path / "remote/trtexec-calls.log").read_text().splitlines()]
    build, *runs = calls
    assert build[0].endswith(".onnx") and all(f in build for f in flags) and "--skipInference" in build
    assert {"--minShapes=input:1x3x12x12", "--maxShapes=input:256x3x12x12"} <= set(build)
    assert [r[2] for r in runs] == [f"--shapes=input:{len(trained[2])}x3x12x12"]
    timed = Trtexec(device.spec).measure(path, (3, 12, 12))
    assert 0 < timed.p10_ms <= timed.median_ms <= timed.p90_ms and timed.repeats == 20
    assert timed.runtime == "trtexec-tensorrt-0.0-emulator"


def test_validation_on_an_ssh_board_runs_and_times_its_engine_there(trained, board, trtexec_emulator, tmp_path):
    _, _, images, labels, ref, _ = trained
    device = board(trtexec=trtexec_emulator)
    path, *_ = _export("tensorrt", trained, tmp_path, device)
    images, labels, ref = (np.concatenate([a] * 3) for a in (images, labels, ref))  # more than one engine batch
    log = tmp_path / "remote/trtexec-calls.log"
    before = len(log.read_text().splitlines())
    report = validate_artifact("tensorrt", path, images, ref, labels, device,
                               MeasuredLatency(device, tmp_path / "lat.sqlite"))
    assert report["latency_where"] == "board" and report["runtime"].startswith("trtexec-")
    assert report["top1_agreement"] == 1.0 and report["max_abs_logit_diff"] <= 1e-4
    shapes = [json.loads(line)[2] for line in log.read_text().splitlines()[before:]]
    assert shapes[:2] == ["--shapes=input:256x3x12x12", f"--shapes=input:{len(labels) - 256}x3x12x12"]


def test_trtexec_s_own_error_reaches_the_user(trained, board, trtexec_emulator, tmp_path):
    model, spec, *_ = trained
    device = board(trtexec=f"{trtexec_emulator} --noSuchFlag", ssh_options=[*board().spec.ssh_options[:2]])
    with pytest.raises(DeviceError, match=r"failed \(exit 1\): .*\[E\] Unknown option: --noSuchFlag"):
        get_format("tensorrt").export(model, spec, tmp_path, {"device": device})


def test_a_board_without_trtexec_is_a_clear_error(trained, board, tmp_path):
    model, spec, *_ = trained
    device = board(trtexec="/opt/no-such/trtexec")
    with pytest.raises(DeviceError, match=r"building a fp32 TensorRT engine with /opt/no-such/trtexec on .* failed"):
        get_format("tensorrt").export(model, spec, tmp_path, {"device": device})


@pytest.mark.parametrize("text", ["", "[]", '[{"name": "logits", "dimensions": "2x10", "values": [1.0]}]'])
def test_unreadable_trtexec_outputs_are_a_clear_error(text):
    with pytest.raises(DeviceError, match="trtexec's output file holds no readable 'logits' tensor"):
        parse_outputs(text)


def test_the_latency_summary_is_read_from_trtexec_s_end_to_end_line_across_versions():
    now = ("[11/23/2026-15:00:00] [I] H2D Latency: min = 0.01 ms, max = 0.02 ms, mean = 0.015 ms, median = 0.015 ms, "
           "percentile(90%) = 0.018 ms, percentile(95%) = 0.019 ms, percentile(99%) = 0.02 ms\n"
           "[11/23/2026-15:00:00] [I] Latency: min = 0.12 ms, max = 0.5 ms, mean = 0.14 ms, median = 0.13 ms, "
           "percentile(90%) = 0.16 ms, percentile(95%) = 0.2 ms, percentile(99%) = 0.4 ms\n")
    assert parse_latency_summary(now, "orin") == (0.12, 0.13, 0.16)
    older = "[I] Host Latency: min = 0.3 ms, max = 0.9 ms, mean = 0.35 ms, median = 0.33 ms, percentile(99%) = 0.8 ms"
    assert parse_latency_summary(older, "nano") == (0.3, 0.33, 0.33)
    with pytest.raises(DeviceError, match="trtexec printed no latency summary on orin"):
        parse_latency_summary("[E] Error[1]: engine deserialization failed", "orin")
