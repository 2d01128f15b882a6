"""Which GPUs an agent owns: found through NVML, or declared with ``--gpus``."""

from __future__ import annotations

import logging

from launchyard.errors import InvalidInputError

log = logging.getLogger("launchyard.agent")


def nvml_gpu_ids() -> list[int]:
    """Device indices NVML sees; none when the library or the driver is missing."""
    try:
        import pynvml
    except ImportError:
        log.info("nvidia-ml-py is not installed (pip install 'launchyard[nvidia]'): no GPUs")
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.debug("NVML found no NVIDIA driver (%s): no GPUs", exc)
        return []
    try:
        return list(range(pynvml.nvmlDeviceGetCount()))
    finally:
        pynvml.nvmlShutdown()


def parse_gpus(spec: str) -> list[int]:
    """``all`` (NVML), ``none``, or a comma-separated list of device ids such as ``0,1,2,3``."""
    text = spec.strip().lower()
    if text == "all":
        return nvml_gpu_ids()
    if text in ("none", ""):
        return []
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise InvalidInputError(
                f"--gpus {spec!r}: {part!r} is not a device id; use all, none or ids like 0,1,2,3",
                fields={"field": "gpus", "value": spec},
            )
        if int(part) in ids:
            raise InvalidInputError(
                f"--gpus {spec!r}: device {part} is listed twice", fields={"field": "gpus"}
            )
        ids.append(int(part))
    return ids
