"""Which device a job runs on: the config's ``device`` setting resolved, the choice logged.

Its own module so that the jobs that only need this (DAVIS sequences, SPair) do not
import extraction and everything it uses (their code_version stays what they run).
"""

from __future__ import annotations

import logging
import os

import torch

from ..errors import ConfigError

__all__ = ["resolve_device"]

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; the choice is logged, a fallback says so.

    A fallback is a warning when a GPU was allocated to the job (CUDA_VISIBLE_DEVICES
    set, as Slurm does for ``--gpus``) but torch cannot use it.
    """
    if name == "auto":
        if torch.cuda.is_available():
            log.info("device auto -> cuda (%s)", torch.cuda.get_device_name())
            return torch.device("cuda")
        allocated = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        if allocated:
            log.warning(
                "device auto -> cpu: CUDA_VISIBLE_DEVICES=%s but torch %s finds no usable CUDA device "
                "(no driver, or a CPU build of torch); falling back to the CPU (%d threads)",
                allocated, torch.__version__, torch.get_num_threads(),
            )
        else:
            threads = torch.get_num_threads()
            log.info("device auto -> cpu: no CUDA device found; falling back to the CPU (%d threads)", threads)
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"extract.device = {name!r} but no CUDA device is available (use 'auto' or 'cpu')")
    return device
