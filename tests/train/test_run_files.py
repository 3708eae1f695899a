"""Files read back from a run directory never execute code, and one that does not load is a clear error."""

import os
import pickle

import pytest

from edgekd.core.arch import build
from edgekd.core.errors import RunStateError
from edgekd.data import load_data
from edgekd.pipeline.distill import load_student
from edgekd.pipeline.teacher import default_teacher_arch, prepare_teacher, save_checkpoint


def _plant(path, marker):
    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(Payload(), f)


def test_planted_teacher_logits_and_student_never_run_and_are_named(tmp_path, tiny_config):
    marker = tmp_path / "executed"
    data = load_data("synthetic", resolution=8)
    teacher_dir = tmp_path / "run" / "teacher"
    arch = default_teacher_arch(data)
    save_checkpoint(teacher_dir / "teacher.pt", build(arch), arch)
    (teacher_dir / "metrics.json").write_text('{"source": "train", "val_acc": 0.5}')
    _plant(teacher_dir / "logits.pt", marker)
    with pytest.raises(RunStateError, match=r"logits\.pt"):
        prepare_teacher(tiny_config, data, teacher_dir)
    _plant(tmp_path / "run" / "student" / "student.pt", marker)
    with pytest.raises(RunStateError, match=r"student\.pt"):
        load_student(tmp_path / "run" / "student")
    assert not marker.exists()
