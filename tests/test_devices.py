"""Device choice: auto falls back to the CPU and says so."""

from __future__ import annotations

import pytest
import torch

from vitscope.errors import ConfigError
from vitscope.models import devices


@pytest.mark.parametrize(("visible", "level"), [("", "INFO"), ("0", "WARNING")])
def test_auto_device_falls_back_to_cpu_and_says_so(monkeypatch, caplog, visible, level):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with caplog.at_level("INFO", logger="vitscope"):
        assert devices.resolve_device("auto") == torch.device("cpu")
    (record,) = [r for r in caplog.records if "device auto" in r.message]
    assert record.levelname == level and "falling back to the CPU" in record.message
    assert ("CUDA_VISIBLE_DEVICES=0" in record.message) == bool(visible)


def test_cuda_without_a_device_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="extract.device = 'cuda'"):
        devices.resolve_device("cuda")
    assert devices.resolve_device("cpu") == torch.device("cpu")
