import pytest

from edgekd.core.devices import get_device, load_devices
from edgekd.core.errors import ConfigError


def test_shipped_registry_has_the_host_cpu():
    device = get_device("host-cpu")
    assert device.spec.kind == "local" and device.spec.threads >= 1


@pytest.mark.parametrize(
    "body, message",
    [
        ("devices:\n  pi:\n    kind: local\n    thread: 2\n", r"device 'pi', field 'thread': Extra inputs"),
        ("devices:\n  pi:\n    kind: local\n    threads: two\n", r"device 'pi', field 'threads'"),
        ("devices:\n  pi:\n    kind: local\n    repeats: 1\n", r"device 'pi', field 'repeats'.*greater than or equal"),
        ("devices:\n  pi:\n    kind: toaster\n", r"device 'pi'.*kind"),
        ("devices:\n  pi:\n    kind: ssh\n    host: pi\n    pattern: x\n", r"field 'command': Field required"),
        ("devices:\n  ph:\n    kind: adb\n    tool: perf\n    binary: /b\n", r"device 'ph', field 'tool'"),
        ("devices:\n  p:\n    kind: predictor\n", r"device 'p', field 'file': Field required"),
        ("devices:\n  g:\n    kind: tensorrt\n    precision: int4\n", r"device 'g', field 'precision'"),
        ("devices: [\n", r"not valid YAML \(line 2, column 1\): expected the node content"),
    ],
)
def test_schema_errors_name_file_device_and_field(tmp_path, body, message):
    path = tmp_path / "devices.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message) as err:
        load_devices(path)
    assert str(path) in str(err.value)


def test_unknown_device_name_lists_the_known_ones(tmp_path):
    path = tmp_path / "devices.yaml"
    path.write_text("devices:\n  a:\n    kind: local\n")
    with pytest.raises(ConfigError, match=r"unknown device 'b'.*\['a'\]"):
        get_device("b", path)


def test_the_shipped_examples_are_valid_entries(tmp_path):
    """The commented examples in the shipped devices.yaml parse as they would once uncommented."""
    from edgekd.core.devices import SHIPPED_REGISTRY

    lines = SHIPPED_REGISTRY.read_text().splitlines()
    start = lines.index("# Realistic examples; copy one into your own devices.yaml and adapt it.")
    examples = [line[1:] for line in lines[start + 1 :] if line.startswith("#  ")]
    path = tmp_path / "devices.yaml"
    path.write_text("devices:\n" + "\n".join(examples) + "\n")
    devices = load_devices(path)
    assert {d.spec.kind for d in devices.values()} == {"local", "ssh", "adb", "qaihub", "tensorrt", "predictor",
                                                          "nnmeter"}
    assert devices["host-gpu"].spec.provider == "cuda"
    assert devices["pixel7-predicted"].spec.file == str(tmp_path / "predictors" / "pixel7-lut.json")


def test_a_binary_registry_and_an_alias_bomb_are_clear_errors_not_hangs(tmp_path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match="not a text file"):
        load_devices(binary)
    bomb = tmp_path / "bomb.yaml"
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    lines += ["devices:", "  x:", "    kind: local", "    threads: *a8"]
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="alias bomb"):
        load_devices(bomb)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("devices:\n  x:\n    kind: local\n    threads: [" + ", ".join(["1"] * 5000) + "]\n")
    with pytest.raises(ConfigError, match=r"device 'x'") as err:
        load_devices(wrong)
    assert len(str(err.value)) < 2000  # the offending value is shown shortened


def test_scratch_folders_of_dead_processes_are_swept(tmp_path):
    import subprocess
    import sys

    from edgekd.core.scratch import sweep

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    import os

    left = tmp_path / f"edgekd-lat-{dead}-abc123"
    (left / "model.onnx").parent.mkdir()
    (left / "model.onnx").write_bytes(b"x")
    mine = tmp_path / f"edgekd-lat-{os.getpid()}-def456"
    mine.mkdir()
    other = tmp_path / "unrelated-1-2"
    other.mkdir()
    assert sweep(tmp_path) == 1
    assert not left.exists() and mine.exists() and other.exists()
