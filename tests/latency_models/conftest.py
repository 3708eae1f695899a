"""The stand-in phone of the adb tests."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest

BINARY = "/data/local/tmp/onnxruntime_perf_test"


@pytest.fixture
def phone(tmp_path, monkeypatch) -> Path:
    """The stand-in phone's root folder (adb_standin.py), with ``adb`` on PATH and onnxruntime_perf_test
    installed at BINARY (an empty file there stands for any tool the stand-in plays)."""
    bindir, root = tmp_path / "bin", tmp_path / "phone"
    bindir.mkdir()
    (root / BINARY.lstrip("/")).parent.mkdir(parents=True)
    (root / BINARY.lstrip("/")).write_text("")
    adb = bindir / "adb"
    standin = Path(__file__).with_name("adb_standin.py")
    adb.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(standin))} "$@"\n')
    adb.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ADB_STANDIN_ROOT", str(root))
    return root

