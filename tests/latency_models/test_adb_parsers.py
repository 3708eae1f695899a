"""Parsers of phone benchmark tools, on their real output formats; the commands run on the phone."""

from pathlib import Path

import pytest

from edgekd.core.devices import AdbDevice
from edgekd.core.errors import DeviceError
from edgekd.runtime.adb import AdbBackend, parse_benchmark_model, parse_executor_runner, parse_perf_test

# onnxruntime_perf_test -m times, an older release (as quoted in onnxruntime issue 17313).
PERF_TEST_OLD = """\
Total time cost: 58.8053
Total iterations: 1000
Average time cost: 58.8053 ms
Total run time: 58.8102 s
Min Latency is 0.0559777 sec
Max Latency is 0.0623472 sec
P50 Latency is 0.0587108 sec
P90 Latency is 0.0599845 sec
P95 Latency is 0.0605676 sec
P99 Latency is 0.0619517 sec
P999 Latency is 0.0623472 sec
"""

# onnxruntime_perf_test -r 1, with session creation time (as printed in onnxruntime pull request 2798).
PERF_TEST_SINGLE = """\
Setting intra_op_num_threads to 0
Session creation time cost:1.84149 s
Total inference time cost:0.734606 s
Total inference requests:1
Average inference time cost:734.606 ms
Total inference run time:0.734761 s
"""

# TensorFlow Lite benchmark_model on Android (its documented summary and statistics lines).
BENCHMARK_MODEL = """\
STARTING!
Num runs: [50]
Num threads: [1]
Graph: [/data/local/tmp/mobilenet_quant_v1_224.tflite]
Loaded model /data/local/tmp/mobilenet_quant_v1_224.tflite
The input model file size (MB): 4.27635
Initialized session in 5.685ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=35 first=18535 curr=14293 min=14196 max=18535 avg=14462.3 std=706

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=69 first=14621 curr=14499 min=14269 max=15230 avg=14575.2 std=204

Inference timings in us: Init: 5685, First inference: 18535, Warmup (avg): 14462.3, Inference (avg): 14575.2
"""

# ExecuTorch's executor_runner --num_executions=4 (its ET_LOG lines: per-iteration times, then the total).
EXECUTOR_RUNNER = """\
I 00:00:00.000412 executorch:executor_runner.cpp:476] Model file /data/local/tmp/edgekd/m.pte is loaded.
I 00:00:00.000431 executorch:executor_runner.cpp:486] Using method forward
I 00:00:00.002108 executorch:executor_runner.cpp:781] Iteration 1 of 4: 1.912000 ms
I 00:00:00.003001 executorch:executor_runner.cpp:781] Iteration 2 of 4: 0.881000 ms
I 00:00:00.003902 executorch:executor_runner.cpp:781] Iteration 3 of 4: 0.901000 ms
I 00:00:00.004780 executorch:executor_runner.cpp:781] Iteration 4 of 4: 0.874000 ms
I 00:00:00.004790 executorch:executor_runner.cpp:790] Model executed successfully 4 time(s) in 4.568000 ms.
I 00:00:00.004801 executorch:executor_runner.cpp:798] 1 outputs:
"""
# An older executor_runner: the total only.
EXECUTOR_RUNNER_OLD = "I 00:00:00.031 executorch:executor_runner.cpp:243] Model executed successfully 10 time(s) in " \
    "25.5 ms.\n"


def test_perf_test_p50_and_spread_in_ms():
    median, low, high = parse_perf_test(PERF_TEST_OLD)
    assert median == pytest.approx(58.7108) and low == pytest.approx(55.9777) and high == pytest.approx(59.9845)


def test_perf_test_without_percentiles_falls_back_to_the_average():
    assert parse_perf_test(PERF_TEST_SINGLE) == (pytest.approx(734.606), None, None)


def test_benchmark_model_average_and_min_in_ms():
    mean, low, _ = parse_benchmark_model(BENCHMARK_MODEL)
    assert mean == pytest.approx(14.5752) and low == pytest.approx(14.269)


def test_executor_runner_median_without_the_first_iteration_or_the_mean_of_an_old_runner():
    assert parse_executor_runner(EXECUTOR_RUNNER) == (pytest.approx(0.881), pytest.approx(0.874), pytest.approx(0.901))
    assert parse_executor_runner(EXECUTOR_RUNNER_OLD) == (pytest.approx(2.55), None, None)


@pytest.mark.parametrize("parser", [parse_perf_test, parse_benchmark_model, parse_executor_runner])
def test_unparseable_output_is_a_clear_error(parser):
    with pytest.raises(DeviceError, match="printed no"):
        parser("Segmentation fault\n")


def test_the_commands_run_on_the_phone():
    perf = AdbBackend(AdbDevice(kind="adb", tool="onnxruntime_perf_test", binary="/data/local/tmp/ort", repeats=50))
    assert perf.command("/data/local/tmp/edgekd/m.onnx") == (
        "/data/local/tmp/ort -I -m times -r 50 -x 1 -e cpu /data/local/tmp/edgekd/m.onnx")
    tfl = AdbBackend(AdbDevice(kind="adb", tool="benchmark_model", binary="/data/local/tmp/bm", threads=4))
    assert tfl.command("/d/m.tflite") == "/data/local/tmp/bm --graph=/d/m.tflite --num_threads=4 --num_runs=100 " \
        "--warmup_runs=20"
    pte = AdbBackend(AdbDevice(kind="adb", tool="executor_runner", binary="/data/local/tmp/er", repeats=10,
                               affinity_mask="f0"))
    assert pte.command("/d/m.pte") == "taskset f0 /data/local/tmp/er --model_path=/d/m.pte --num_executions=11 " \
        "--cpu_threads=1"
    with pytest.raises(DeviceError, match="add benchmark_model to its `tools`"):
        pte.tool_for(Path("m.tflite"))
    both = AdbBackend(pte.spec.model_copy(update={"tools": {"benchmark_model": "/data/local/tmp/bm"}}))
    assert both.tool_for(Path("m.tflite")) == "benchmark_model" and both.tool_for(Path("m.pte")) == "executor_runner"
    assert both.command("/d/m.tflite", "benchmark_model").startswith("taskset f0 /data/local/tmp/bm --graph=/d/m.")
    with pytest.raises(DeviceError, match=r"no tool of this phone's entry runs \.bin files"):
        both.tool_for(Path("m.bin"))
