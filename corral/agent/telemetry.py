"""What a node reports about itself: addresses, CPU, memory and GPUs.

GPUs are read through NVIDIA's management library (``nvidia-ml-py``, ``import
pynvml``) when it and a driver are present. A host without either has no GPUs to
report: ``gpus`` is then ``[]``, which is a fact about the host, not an error.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from typing import Any

import psutil

__all__ = ["Telemetry", "reachable_addresses"]

log = logging.getLogger("corral.agent")


def reachable_addresses() -> list[str]:
    """The host's IPv4 then IPv6 addresses others might reach it on.

    Loopback, link-local (fe80::/10, 169.254/16), unspecified and multicast addresses
    are left out: another machine cannot use them to reach this one.
    """
    v4: list[str] = []
    v6: list[str] = []
    for snics in psutil.net_if_addrs().values():
        for snic in snics:
            if snic.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                ip = ipaddress.ip_address(snic.address.split("%", 1)[0])
            except ValueError:
                continue
            if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
                continue
            text = str(ip)
            found = v4 if ip.version == 4 else v6
            if text not in found:
                found.append(text)
    return v4 + v6


class Telemetry:
    """Reads the host's load; holds the NVML session (if any) between reads."""

    def __init__(self) -> None:
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement
        self._nvml: Any = _open_nvml()

    def cpu(self) -> dict[str, Any]:
        load = list(os.getloadavg()) if hasattr(os, "getloadavg") else []
        return {
            "percent": psutil.cpu_percent(interval=None),
            "count": psutil.cpu_count() or 1,
            "load_avg": [round(x, 3) for x in load],
        }

    def memory(self) -> dict[str, Any]:
        vm = psutil.virtual_memory()
        return {
            "total_bytes": int(vm.total),
            "available_bytes": int(vm.available),
            "percent": float(vm.percent),
        }

    def gpus(self) -> list[dict[str, Any]]:
        nvml = self._nvml
        if nvml is None:
            return []
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            log.warning("GPU telemetry stopped: %s", exc)
            self.close()
            return []
        return [_device(nvml, i) for i in range(count)]

    def close(self) -> None:
        nvml, self._nvml = self._nvml, None
        if nvml is not None:
            try:
                nvml.nvmlShutdown()
            except nvml.NVMLError:
                pass


def _open_nvml() -> Any:
    try:
        import pynvml
    except ImportError:
        log.info("no GPU telemetry: nvidia-ml-py is not installed (gpus: [])")
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.info("no GPU telemetry: %s (gpus: [])", exc)
        return None
    return pynvml


def _device(nvml: Any, index: int) -> dict[str, Any]:
    """One device; a field the driver will not give is left out (or None)."""
    out: dict[str, Any] = {"index": index, "memory_total_bytes": 0, "memory_used_bytes": 0}
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
    except nvml.NVMLError:
        return out
    for key, read in (
        ("name", lambda: _text(nvml.nvmlDeviceGetName(handle))),
        ("uuid", lambda: _text(nvml.nvmlDeviceGetUUID(handle))),
        ("utilization_percent", lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)),
    ):
        try:
            out[key] = read()
        except nvml.NVMLError:
            pass
    try:
        mem = nvml.nvmlDeviceGetMemoryInfo(handle)
        out["memory_total_bytes"] = int(mem.total)
        out["memory_used_bytes"] = int(mem.used)
    except nvml.NVMLError:
        pass
    return out


def _text(value: str | bytes) -> str:
    # Older nvidia-ml-py releases return bytes.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
