"""``edgekd devices check NAME --stability``: how noisy a measured device is, and whether it can serve a search.

The device's reference model is timed against itself in a few short probes spread over ``seconds``. Each probe
gives the reference's raw speed (its median), how much it moved within the probe (coefficient of variation) and
the precision the interleaved ratio reached. A device is fit for a search at the requested precision when every
probe's ratio reached it, the raw speed held within the device's drift bound, within and across the probes, and no
more tasks were runnable than the device has cores (short calls on an overloaded host can look steady for a while
and then move); otherwise the report says what to change, from the signs it could read (load, governor, frequency,
temperature).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgekd.latency_models.measured import MeasuredLatency
from edgekd.runtime import device_conditions, measure_against
from edgekd.runtime.protocol import Interleaved, Settings


@dataclass
class Stability:
    """What the probes saw and the verdict."""

    precision: float
    drift_bound: float
    probes: list[Interleaved]
    conditions: dict[str, str]
    fit: bool = False
    advice: list[str] = field(default_factory=list)

    @property
    def reference_cv(self) -> float:
        """The largest movement of the reference within one probe."""
        return max(p.reference_cv for p in self.probes)

    @property
    def level_spread(self) -> float:
        """Slowest over fastest probe median, minus 1: how far the host's speed level moved between probes."""
        levels = [p.reference_ms for p in self.probes]
        return max(levels) / min(levels) - 1

    @property
    def reached(self) -> float:
        """The worst relative half-width a probe's ratio reached."""
        return max(p.half_width for p in self.probes)


def probe_stability(latency: MeasuredLatency, input_shape: tuple[int, ...], seconds: float = 20.0,
                    probes: int = 4, precision: float | None = None) -> Stability:
    """Probe the device of ``latency`` for about ``seconds`` (``probes`` measurements of the reference against
    itself) and judge it at ``precision`` (default: the device's)."""
    protocol = latency.protocol
    precision = precision or protocol.precision
    reference, _ = latency.reference(input_shape)
    settings = Settings(precision=0.0, budget_s=seconds / probes)  # never converges: each probe watches its share
    found = [measure_against(latency.backend, [reference], reference, input_shape, settings)[0]
             for _ in range(probes)]
    return judge(Stability(precision, protocol.drift_bound, found, device_conditions(latency.backend)))


def judge(s: Stability) -> Stability:
    """Set ``s.fit`` and the advice from its probes and conditions."""
    c = s.conditions
    runnable, cores = (int(c[k]) if c.get(k, "").isdigit() else None for k in ("runnable tasks", "cores"))
    overloaded = runnable is not None and cores is not None and runnable > cores
    steady = s.reference_cv <= s.drift_bound and s.level_spread <= s.drift_bound and not overloaded
    s.fit = steady and s.reached <= s.precision
    if overloaded:
        s.advice.append(f"{runnable} tasks are runnable on {cores} cores: the device's speed can move at any "
                        "moment")
    if not steady:
        s.advice.append(f"the host's speed moved (reference CV {s.reference_cv:.0%} within a probe, levels "
                        f"{s.level_spread:.0%} apart; bound {s.drift_bound:.0%}): stop other work on the device"
                        + (f" (load average {c['load average']})" if "load average" in c else ""))
        if c.get("governor") not in (None, "performance"):
            s.advice.append(f"pin the CPU frequency governor to performance (now {c['governor']})")
        s.advice.append("pin the measurement to isolated cores (`affinity:` in devices.yaml; isolcpus or a cpuset "
                        "keeps other work off them)")
        if "temperature" in c:
            s.advice.append(f"let the device cool between models (now {c['temperature']})")
    if s.reached > s.precision:
        s.advice.append(f"the ratio reached ±{s.reached:.1%}, not ±{s.precision:.1%}, in its budget: raise "
                        "`protocol: {budget_s: ...}` or lower the precision asked for")
    return s


def stability_rows(s: Stability) -> list[tuple[str, bool, str]]:
    """``devices check`` rows for ``s``."""
    return [
        ("reference speed", s.reference_cv <= s.drift_bound,
         f"CV within a probe up to {s.reference_cv:.1%} (bound {s.drift_bound:.0%}); medians "
         + ", ".join(f"{p.reference_ms:.4f}" for p in s.probes) + " ms"),
        ("speed levels", s.level_spread <= s.drift_bound, f"{s.level_spread:.1%} between probes"),
        ("interleaved precision", s.reached <= s.precision,
         f"±{s.reached:.2%} reached against ±{s.precision:.1%} asked ({sum(p.rounds for p in s.probes)} rounds)"),
        *[(name, True, value) for name, value in s.conditions.items()],
        ("fit for a search", s.fit, "yes" if s.fit else "no: " + "; ".join(s.advice)),
    ]
