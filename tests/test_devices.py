"""Device resolution falls back honestly and says so once."""

from __future__ import annotations

import logging

import pytest
import torch

from lab_pipelines import devices


@pytest.fixture
def gpus(monkeypatch):
    def set_count(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        devices.resolve_device.cache_clear()
    yield set_count
    devices.resolve_device.cache_clear()


@pytest.mark.parametrize("n_gpus, requested, expected", [
    (0, "auto", "cpu"), (0, "cpu", "cpu"), (0, "cuda:0", "cpu"), (0, "cuda:1", "cpu"),
    (1, "auto", "cuda:0"), (1, "cuda", "cuda:0"), (1, "cuda:1", "cuda:0"),
    (2, "cuda:1", "cuda:1"), (2, "CUDA:0", "cuda:0"),
])
def test_resolution(gpus, n_gpus, requested, expected):
    gpus(n_gpus)
    assert devices.resolve_device(requested) == expected


def test_fallback_warns_once_per_request(gpus, caplog):
    gpus(1)
    with caplog.at_level(logging.WARNING, logger="lab_pipelines.devices"):
        for _ in range(3):
            devices.resolve_device("cuda:1")
    assert len(caplog.records) == 1
    assert "cuda:1" in caplog.messages[0] and "cuda:0" in caplog.messages[0]


def test_unknown_device_is_rejected(gpus):
    gpus(0)
    with pytest.raises(ValueError, match="Unknown device"):
        devices.resolve_device("tpu")


def test_inference_autocast_keeps_embeddings_close_on_cpu():
    layer = torch.nn.Linear(64, 64)
    x = torch.randn(8, 64)
    with devices.inference_autocast("cpu"):
        y = layer(x)
    assert torch.allclose(y.float(), layer(x), atol=0.1)
