"""nn-Meter predictors (extra ``nnmeter``) as a LatencyModel, from predictor files already on this machine.

A predictor is a folder of per-kernel regressors plus fusion rules, registered with nn-Meter
(``nn-meter register --predictor meta.yaml``). edgekd never lets nn-Meter download: a built-in predictor whose
files are not in nn-Meter's data folder is an error saying so. edgekd exports and simplifies the ONNX model
itself and hands nn-Meter the file (nn-Meter's own torch conversion does not work with current torch).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from edgekd.core.arch import ArchSpec, build
from edgekd.core.devices import NnMeterDevice
from edgekd.core.errors import DeviceError
from edgekd.core.scratch import scratch_dir
from edgekd.exporters.onnx import export_onnx
from edgekd.latency_models import PREDICTING, CheckRows, PredictingKind


def _nn_meter():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nn-Meter imports the deprecated pkg_resources
            import nn_meter
    except ImportError as exc:
        raise DeviceError("nn-Meter is not installed: pip install 'edgekd[nnmeter]'") from exc
    logging.getLogger("nn-Meter").setLevel(logging.WARNING)
    return nn_meter


def load_nnmeter_predictor(name: str, version: float | None = None):
    """The registered nn-Meter predictor ``name``; DeviceError if it is unknown or its files are not here."""
    nn_meter = _nn_meter()
    from nn_meter.predictor.nn_meter_predictor import load_predictor_config
    from nn_meter.predictor.utils import check_predictors
    from nn_meter.utils import get_user_data_folder

    try:
        info = load_predictor_config(name, version)
    except NotImplementedError as exc:
        raise DeviceError(f"nn-Meter has no predictor {name!r} (version {version}) registered: register its folder "
                          "with `nn-meter register --predictor meta.yaml`") from exc
    if "download" in info:
        folder = os.path.join(get_user_data_folder(), "predictor", info["name"])
        if not check_predictors(folder, info["kernel_predictors"]):
            raise DeviceError(f"nn-Meter's published predictor {name!r} is not on this machine (expected in "
                              f"{folder}); edgekd does not download it: copy its files there or register your own")
    elif not Path(info["package_location"]).is_dir():
        raise DeviceError(f"nn-Meter predictor {name!r} points to a missing folder: {info['package_location']}")
    return nn_meter.load_latency_predictor(name, version)


class NnMeterLatency:
    """LatencyModel of an ``nnmeter`` device: the nn-Meter predictor's latency of each exported architecture."""

    def __init__(self, spec: NnMeterDevice) -> None:
        self.spec = spec
        self.predictor = load_nnmeter_predictor(spec.predictor, spec.version)
        self._cache: dict[str, float] = {}

    def latency_ms(self, spec: ArchSpec) -> float:
        if spec.id not in self._cache:
            with scratch_dir("nnmeter") as tmp:
                path = export_onnx(build(spec), spec.input_shape, Path(tmp) / "model.onnx", simplify=True)
                self._cache[spec.id] = float(self.predictor.predict(str(path), model_type="onnx"))
        return self._cache[spec.id]

    def latency_many(self, specs: list[ArchSpec]) -> list[float]:
        return [self.latency_ms(s) for s in specs]


def _check(spec: NnMeterDevice) -> CheckRows:
    try:
        load_nnmeter_predictor(spec.predictor, spec.version)
    except DeviceError as exc:
        return [("nn-Meter predictor", False, str(exc))]
    return [("nn-Meter predictor", True, f"{spec.predictor} loaded")]


PREDICTING.add("nnmeter", PredictingKind(NnMeterLatency, _check))
