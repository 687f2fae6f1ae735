"""Prepacked CPU linears: the same outputs as the stock kernels, only without grad, refreshed when weights change,
and every module as it was after the block."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from selfdistill.training import prepack
from selfdistill.training.prepack import kernels_available, prepacked_linears
from selfdistill.training.rollout import sample

needs_fp32 = pytest.mark.skipif(not kernels_available(torch.float32), reason="this torch has no MKL packed sgemm")
needs_bf16 = pytest.mark.skipif(not kernels_available(torch.bfloat16), reason="this CPU/torch has no oneDNN bf16")


def _net(bias: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(48, 96, bias=bias), nn.GELU(), nn.Linear(96, 32, bias=bias))


def _count_packed(monkeypatch) -> list[int]:
    calls = [0]
    real = prepack._packed_linear

    def counting(*args):
        calls[0] += 1
        return real(*args)

    monkeypatch.setattr(prepack, "_packed_linear", counting)
    return calls


@needs_fp32
@pytest.mark.parametrize("bias", [True, False])
def test_fp32_matches_stock_and_restores_modules(bias, monkeypatch):
    net = _net(bias)
    x = torch.randn(8, 1, 48)
    calls = _count_packed(monkeypatch)
    with torch.no_grad():
        want = net(x)
        with prepacked_linears(net, rows=8, mode="on"):
            got = net(x)
            prefill = net(torch.randn(2, prepack.MAX_ROWS, 48))  # more rows than MAX_ROWS: the stock kernel
        after = net(x)
    assert calls[0] == 2  # both linears, once each, for the 8-row call only
    assert prefill.shape == (2, prepack.MAX_ROWS, 32)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(after, want)
    assert all("forward" not in m.__dict__ for m in net.modules())  # the class's forward again


@needs_bf16
def test_bf16_under_autocast_equals_stock():
    net = _net()
    x = torch.randn(8, 1, 48)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = net(x)
        with prepacked_linears(net, rows=8):  # auto: bf16 is packed
            got = net(x)
    assert got.dtype == want.dtype == torch.bfloat16
    assert torch.equal(got, want)


@needs_fp32
def test_fp16_autocast_runs_stock(monkeypatch):
    net = _net()
    calls = _count_packed(monkeypatch)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16), prepacked_linears(net, rows=8, mode="on"):
        out = net(torch.randn(8, 48))
    assert calls[0] == 0 and out.dtype == torch.float16


@needs_fp32
def test_grad_enabled_calls_run_stock_and_train(monkeypatch):
    net = _net()
    calls = _count_packed(monkeypatch)
    x = torch.randn(8, 48)
    with prepacked_linears(net, rows=8, mode="on"):
        net(x).sum().backward()
    assert calls[0] == 0
    assert net[0].weight.grad is not None and net[0].weight.grad.abs().sum() > 0


@needs_fp32
def test_weights_changed_inside_the_block_are_packed_again():
    net = _net()
    x = torch.randn(8, 48)
    with torch.no_grad(), prepacked_linears(net, rows=8, mode="on"):
        before = net(x)
        for p in net.parameters():
            p.mul_(0.5)
        after = net(x)
    with torch.no_grad():
        want = net(x)
    torch.testing.assert_close(after, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(after, before)


def test_off_too_many_rows_or_without_kernels_changes_nothing(monkeypatch):
    net = _net()
    with prepacked_linears(net, mode="off"):
        assert all("forward" not in m.__dict__ for m in net.modules())
    with prepacked_linears(net, rows=prepack.MAX_ROWS + 1, mode="on"):
        assert all("forward" not in m.__dict__ for m in net.modules())
    calls = _count_packed(monkeypatch)
    with torch.no_grad(), prepacked_linears(net, rows=8):  # auto in fp32: stock kernels (the forgetting benchmark's)
        net(torch.randn(8, 1, 48))
    assert calls[0] == 0
    monkeypatch.setattr(prepack, "kernels_available", lambda dtype: False)
    with prepacked_linears(net, mode="on"):
        assert all("forward" not in m.__dict__ for m in net.modules())
    with pytest.raises(ValueError, match="mode must be one of auto, on, off"), prepacked_linears(net, mode="yes"):
        pass


@needs_fp32
def test_auto_leaves_fp32_to_the_stock_kernels(monkeypatch):
    net = _net()
    calls = _count_packed(monkeypatch)
    x = torch.randn(8, 48)
    with torch.no_grad():
        want = net(x)
        with prepacked_linears(net, rows=8):
            got = net(x)
    assert calls[0] == 0
    assert torch.equal(got, want)


def test_an_existing_instance_forward_is_restored():
    net = _net()
    layer = net[0]
    own = layer.forward  # a bound method stored on the instance, as hooks libraries do
    layer.forward = own
    with prepacked_linears(net, mode="on"):
        pass
    assert layer.__dict__["forward"] is own


@needs_fp32
def test_sample_with_and_without_prepack_agree(tiny, monkeypatch):
    model, tok = tiny
    model = copy.deepcopy(model)
    calls = _count_packed(monkeypatch)
    prompts = [[5, 6, 7, 8], [9, 10], [11, 12, 13], [14]]
    runs = [sample(model, tok, prompts, max_new_tokens=12, seeds=[1, 2, 3, 4], prepack=mode) for mode in ("on", "off")]
    assert calls[0] > 0  # the packed kernels ran in the first call
    assert runs[0].completions == runs[1].completions
    for a, b in zip(runs[0].sample_logprobs, runs[1].sample_logprobs, strict=True):
        assert a == pytest.approx(b, abs=1e-4)


@needs_fp32
@pytest.mark.parametrize("mode", ["on", "off"])
def test_hf_engine_passes_prepack_through(tiny, monkeypatch, mode):
    from selfdistill.training.engines import Sampling, make_engine

    model, tok = tiny
    calls = _count_packed(monkeypatch)
    engine = make_engine("hf", model, tok, prepack=mode)
    engine.generate([[5, 6, 7]], Sampling(max_new_tokens=4, greedy=True, logprobs=False))
    assert (calls[0] > 0) == (mode == "on")
