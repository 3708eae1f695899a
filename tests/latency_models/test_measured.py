import random
import tempfile
from pathlib import Path

import onnx
import pytest

from edgekd.core.arch import build
from edgekd.core.errors import DeviceError
from edgekd.latency_models.flops import count_macs_params, spec_macs_params
from edgekd.latency_models.measured import MeasuredLatency
from edgekd.runtime.local import LocalBackend
from edgekd.runtime.ort import has_provider
from edgekd.spaces import make_space


@pytest.fixture
def specs():
    space = make_space("mnas", 16, 1, 10, width=0.25)
    return [space.decode(space.sample(random.Random(i))) for i in range(2)]


def test_measurement_is_recorded_with_its_conditions(tmp_path, fast_device, specs):
    m = MeasuredLatency(fast_device, tmp_path / "lat.sqlite").measure(specs[0])
    assert 0 < m.p10_ms <= m.median_ms <= m.p90_ms
    assert (m.threads, m.batch_size) == (1, 1) and m.repeats == m.rounds >= 10  # interleaved rounds
    assert m.runtime.startswith("onnxruntime-") and m.affinity is None


def test_a_pinned_measurement_runs_in_its_own_process_on_the_asked_cpus(tmp_path, fast_device, specs):
    pinned = fast_device.model_copy(update={"spec": fast_device.spec.model_copy(update={"affinity": [0]})})
    m = MeasuredLatency(pinned, tmp_path / "lat.sqlite").measure(specs[0])
    assert m.affinity == [0] and m.median_ms > 0


def test_cache_hits_across_instances_and_misses_on_runtime_change(tmp_path, fast_device, specs, monkeypatch):
    cache = tmp_path / "lat.sqlite"
    first = MeasuredLatency(fast_device, cache).measure(specs[0])
    calls = []
    real = LocalBackend.measure_many
    monkeypatch.setattr(LocalBackend, "measure_many", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert MeasuredLatency(fast_device, cache).measure(specs[0]) == first
    assert calls == []
    other = MeasuredLatency(fast_device, cache)
    other.backend.runtime = "onnxruntime-0.0.0-other"  # as after an upgrade of ONNX Runtime
    other.measure(specs[0])
    assert calls == [1]


def test_changed_device_settings_do_not_reuse_measurements(tmp_path, fast_device, specs):
    other = fast_device.model_copy(update={"spec": fast_device.spec.model_copy(update={"threads": 2})})
    assert other.fingerprint != fast_device.fingerprint


def test_a_bigger_network_has_more_macs_and_each_is_measured_once(tmp_path, fast_device):
    space = make_space("mnas", 16, 1, 10, width=0.25)
    rng = random.Random(0)
    base = space.sample(rng)
    small = space.decode({**base, **{f"s{i}_layers": -1 for i in range(7)}, **{f"s{i}_op": "dsconv" for i in range(7)}})
    big = space.decode({**base, **{f"s{i}_layers": 1 for i in range(7)}, **{f"s{i}_op": "mbconv_e6" for i in range(7)},
                        **{f"s{i}_width": 1.25 for i in range(7)}})
    device = fast_device.model_copy(update={"spec": fast_device.spec.model_copy(update={"repeats": 30})})
    lat = MeasuredLatency(device, tmp_path / "lat.sqlite")
    measured = lat.measure_many([big, small, big])
    assert measured[0] == measured[2] and all(m.median_ms > 0 and m.rounds >= 10 for m in measured)
    assert lat.cache.get(big.id, device.fingerprint, lat.backend.runtime) == measured[0]
    assert count_macs_params(build(big), big.input_shape)[0] > 3 * count_macs_params(build(small), small.input_shape)[0]


def test_thop_leaves_the_profiled_model_untouched(specs):
    model = build(specs[0])
    before = set(model.state_dict())
    count_macs_params(model, specs[0].input_shape)
    assert set(model.state_dict()) == before


def test_an_architectures_macs_are_profiled_once(specs):
    spec_macs_params.cache_clear()
    assert spec_macs_params(specs[0]) == count_macs_params(build(specs[0]), specs[0].input_shape)
    spec_macs_params(specs[0])
    assert spec_macs_params.cache_info().hits == 1


@pytest.mark.parametrize("variant", ["fp16", "int8"])
def test_a_local_device_can_time_the_fp16_or_int8_variant(tmp_path, fast_device, specs, variant):
    device = fast_device.model_copy(update={"spec": fast_device.spec.model_copy(update={"variant": variant})})
    latency = MeasuredLatency(device, tmp_path / "lat.sqlite")
    with tempfile.TemporaryDirectory() as tmp:
        model = onnx.load(latency._export(specs[0], Path(tmp)))
    dtypes = {i.data_type for i in model.graph.initializer}
    assert (onnx.TensorProto.FLOAT16 in dtypes) if variant == "fp16" else (onnx.TensorProto.INT8 in dtypes)
    assert latency.measure(specs[0]).median_ms > 0
    assert device.fingerprint != fast_device.fingerprint  # an fp32 measurement is never reused for it


@pytest.mark.skipif(has_provider("cuda"), reason="this ONNX Runtime has the CUDA provider")
def test_a_cuda_device_without_onnxruntime_gpu_is_a_clear_error(tmp_path, cuda_device, specs):
    with pytest.raises(DeviceError, match=r"no CUDAExecutionProvider.*install onnxruntime-gpu"):
        MeasuredLatency(cuda_device, tmp_path / "lat.sqlite").measure(specs[0])
    rows = {what: ok for what, ok, _ in LocalBackend(cuda_device.spec).check()}
    assert rows["provider"] is False


@pytest.mark.cuda
def test_a_cuda_device_times_the_model_on_the_gpu(tmp_path, cuda_device, specs):
    m = MeasuredLatency(cuda_device, tmp_path / "lat.sqlite").measure(specs[0])
    assert m.runtime.endswith("-cuda") and m.median_ms > 0
    assert all(ok for _, ok, _ in LocalBackend(cuda_device.spec).check())
