"""What a device's state is while it measures: load (and the tasks runnable right now, the reader itself left out),
cores, CPU frequency governor and frequency, temperature.

One POSIX shell snippet reads them on this host, on a board over ssh and on a phone over adb; a value that is not
readable there is left out."""

from __future__ import annotations

import subprocess

CONDITIONS_SCRIPT = (
    'l=$(cut -d" " -f1-3 /proc/loadavg 2>/dev/null) && echo "load average=$l"; '
    'r=$(cut -d" " -f4 /proc/loadavg 2>/dev/null) && echo "runnable tasks=$((${r%%/*} - 1))"; '
    'n=$(nproc 2>/dev/null) && echo "cores=$n"; '
    'g=$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null) && echo "governor=$g"; '
    'f=$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq 2>/dev/null) && echo "frequency=$((f / 1000)) MHz"; '
    't=$(cat /sys/class/thermal/thermal_zone0/temp 2>/dev/null) && echo "temperature=$((t / 1000)) C"; true'
)


def parse_conditions(output: str) -> dict[str, str]:
    """The ``name=value`` lines of ``CONDITIONS_SCRIPT``'s output."""
    pairs = (line.partition("=") for line in output.splitlines())
    return {name.strip(): value.strip() for name, sep, value in pairs if sep and value.strip()}


def local_conditions() -> dict[str, str]:
    """This host's conditions."""
    try:
        out = subprocess.run(["sh", "-c", CONDITIONS_SCRIPT], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return parse_conditions(out)
