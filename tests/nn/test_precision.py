"""bf16 autocast: products in bfloat16, scores reduced in float32, parameters left in float32; auto
picks bf16 only where the hardware runs it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from rnnlab.errors import ConfigError
from rnnlab.models.attention import BahdanauAttention
from rnnlab.models.attention_decoder import BahdanauDecoder, LuongDecoder
from rnnlab.models.encoder import EncoderOutput
from rnnlab.nn import precision
from rnnlab.nn.precision import (
    autocast,
    autocast_operand,
    bf16_pays,
    bf16_speedup,
    bmm_in_dtype,
    check_bf16_kernels,
    full_precision,
    native_bf16,
    precision_notice,
    project_padded_rows,
    resolve_precision,
    step_read_operand,
    tanh_in_float32_on_cpu,
)
from rnnlab.training.losses import masked_token_nll


def test_bf16_runs_linear_layers_in_bfloat16_and_fp32_changes_nothing():
    layer = nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with autocast("cpu", "bf16"):
        assert layer(x).dtype == torch.bfloat16
    with autocast("cpu", "fp32"):
        assert torch.equal(layer(x), layer(x))
        assert layer(x).dtype == torch.float32
    assert layer.weight.dtype == torch.float32


def test_full_precision_lifts_only_16_bit_floats():
    assert full_precision(torch.zeros(2, dtype=torch.bfloat16)).dtype == torch.float32
    assert full_precision(torch.zeros(2, dtype=torch.float16)).dtype == torch.float32
    assert full_precision(torch.zeros(2, dtype=torch.float64)).dtype == torch.float64


def test_autocast_operand_casts_only_under_autocast_and_keeps_a_float32_gradient():
    x = torch.randn(3, 4, requires_grad=True)
    assert autocast_operand(x) is x
    with autocast("cpu", "bf16"):
        cast = autocast_operand(x)
    assert cast.dtype == torch.bfloat16
    (cast.float() * 2).sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32
    torch.testing.assert_close(x.grad, torch.full((3, 4), 2.0))


class _RowSpy(nn.Linear):
    """A linear layer that records how many rows each call projected."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows_seen: list[int] = []

    def forward(self, x):
        self.rows_seen.append(x.size(0))
        return super().forward(x)


@pytest.mark.parametrize("n", [1, 63, 64, 100])
def test_project_padded_rows_pads_bf16_row_counts_and_keeps_outputs_and_gradients(n):
    torch.manual_seed(0)
    layer = _RowSpy(8, 5)
    rows = torch.randn(n, 8, requires_grad=True)
    targets = torch.randn(n, 5)

    def loss_and_grads(padded: bool):
        layer.zero_grad()
        rows.grad = None
        with autocast("cpu", "bf16"):
            out = project_padded_rows(layer, rows) if padded else layer(rows)
        out = out[:n]  # the rows of padding come last
        ((out.float() - targets) ** 2).sum().backward()
        return out.detach().float(), rows.grad.clone(), layer.weight.grad.clone(), layer.bias.grad

    out, grad_rows, grad_weight, grad_bias = loss_and_grads(padded=True)
    assert layer.rows_seen[-1] == -(-n // precision.ROW_MULTIPLE) * precision.ROW_MULTIPLE
    ref_out, ref_rows, ref_weight, ref_bias = loss_and_grads(padded=False)
    assert out.shape == ref_out.shape == (n, 5)
    # The same bfloat16 products: the zero rows neither add to nor take from any gradient.
    torch.testing.assert_close(out, ref_out, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(grad_rows, ref_rows, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(grad_weight, ref_weight, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(grad_bias, ref_bias, rtol=2e-2, atol=2e-2)


def test_project_padded_rows_leaves_float32_rows_as_they_are():
    layer = _RowSpy(8, 5)
    rows = torch.randn(37, 8)
    torch.testing.assert_close(project_padded_rows(layer, rows), layer(rows))
    with autocast("cpu", "fp32"):
        project_padded_rows(layer, rows)
    assert layer.rows_seen == [37, 37, 37]


def test_attention_decoder_reads_memory_in_float32_on_cpu_and_its_gradient_tracks_fp32():
    torch.manual_seed(0)
    decoder = BahdanauDecoder(vocab_size=20, embed_size=8, hidden_size=12, memory_size=10)
    memory = torch.randn(3, 5, 10, requires_grad=True)
    lengths = torch.tensor([5, 2, 4])
    tgt_in = torch.randint(1, 20, (3, 6))

    def memory_gradient(precision: str) -> torch.Tensor:
        memory.grad = None
        with autocast("cpu", precision):
            encoded = EncoderOutput(outputs=memory, state=torch.zeros(1, 3, 12), lengths=lengths)
            state = decoder.init_state(encoded, torch.zeros(1, 3, 12))
            features, _ = decoder(tgt_in, state)
        # Every step reads the memory in float32 on the CPU, bf16 autocast or not.
        assert state.memory.dtype == torch.float32
        features.float().square().sum().backward()
        assert memory.grad is not None
        return memory.grad.clone()

    reference, bf16 = memory_gradient("fp32"), memory_gradient("bf16")
    assert bf16.dtype == torch.float32
    # Summed over six steps in bfloat16: within a few percent of the float32 gradient.
    assert (bf16 - reference).norm() < 0.05 * reference.norm()


def test_bmm_in_dtype_multiplies_in_the_second_operands_dtype_under_autocast():
    g = torch.Generator().manual_seed(3)
    weights = torch.softmax(torch.randn(4, 1, 7, generator=g), -1)
    memory = torch.randn(4, 7, 9, generator=g)
    with autocast("cpu", "bf16"):
        assert torch.bmm(weights, memory).dtype == torch.bfloat16  # what autocast alone does
        wide = bmm_in_dtype(weights, memory)
        narrow = bmm_in_dtype(weights, memory.bfloat16())
    assert wide.dtype == torch.float32 and narrow.dtype == torch.bfloat16
    exact = torch.bmm(weights.double(), memory.double())
    torch.testing.assert_close(wide.double(), exact, rtol=1e-6, atol=1e-6)
    # Rounded to bfloat16: within its 8 bits, and not float32's answer.
    torch.testing.assert_close(narrow.double(), exact, rtol=2e-2, atol=2e-2)
    assert not torch.equal(narrow.float(), wide)


def test_step_read_operand_is_float32_on_cpu_even_under_autocast():
    x = torch.randn(2, 3, 4)
    with autocast("cpu", "bf16"):
        assert step_read_operand(x).dtype == torch.float32
        assert step_read_operand(x.bfloat16()).dtype == torch.float32
        assert autocast_operand(x).dtype == torch.bfloat16
    assert step_read_operand(x) is x


def test_luong_keys_and_memory_stay_float32_on_cpu_under_autocast():
    torch.manual_seed(0)
    decoder = LuongDecoder(vocab_size=20, embed_size=8, hidden_size=12, memory_size=10)
    memory = torch.randn(3, 5, 10)
    encoded = EncoderOutput(
        outputs=memory, state=torch.zeros(1, 3, 12), lengths=torch.tensor([5, 2, 4])
    )
    tgt_in = torch.randint(1, 20, (3, 6))
    with torch.no_grad():
        reference, _ = decoder(tgt_in, decoder.init_state(encoded, torch.zeros(1, 3, 12)))
        with autocast("cpu", "bf16"):
            state = decoder.init_state(encoded, torch.zeros(1, 3, 12))
            features, _ = decoder(tgt_in, state)
    assert state.memory.dtype == state.keys.dtype == torch.float32
    torch.testing.assert_close(features.float(), reference, rtol=5e-2, atol=5e-2)


def test_tanh_in_float32_on_cpu_lifts_16_bit_inputs_and_passes_their_gradient_back():
    x = torch.linspace(-4, 4, 301, dtype=torch.bfloat16, requires_grad=True)
    y = tanh_in_float32_on_cpu(x)
    assert y.dtype == torch.float32
    # The tanh of the bfloat16 values themselves, to float32 accuracy (not rounded to 8 bits).
    torch.testing.assert_close(y.double(), torch.tanh(x.detach().double()), rtol=1e-6, atol=1e-6)
    y.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16
    expected = (1 - torch.tanh(x.detach().double()) ** 2).to(torch.bfloat16)
    torch.testing.assert_close(x.grad, expected, rtol=1e-2, atol=1e-2)
    z = torch.randn(5, 7)
    assert torch.equal(tanh_in_float32_on_cpu(z), torch.tanh(z))
    assert tanh_in_float32_on_cpu(z.double()).dtype == torch.float64


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_decoder_steps_and_deep_output_apply_tanh_in_float32_under_cpu_autocast(cell):
    """The (B, T, H) features of a Bahdanau decoder, whose last op is the deep output's tanh, come
    out in float32 under bf16 autocast, and so does the state of the stepped cell, started here from
    a bfloat16 state so that only its own tanh can lift it."""
    torch.manual_seed(0)
    decoder = BahdanauDecoder(
        vocab_size=20, embed_size=8, hidden_size=12, memory_size=10, cell=cell
    )
    memory = torch.randn(3, 5, 10)
    encoded = EncoderOutput(
        outputs=memory, state=torch.zeros(1, 3, 12), lengths=torch.tensor([5, 2, 4])
    )
    start = torch.randn(1, 3, 12).bfloat16()
    initial = (start, start) if cell == "lstm" else start
    exact = (start.float(), start.float()) if cell == "lstm" else start.float()
    tgt_in = torch.randint(1, 20, (3, 6))
    with torch.no_grad():
        reference, _ = decoder(tgt_in, decoder.init_state(encoded, exact))
        with autocast("cpu", "bf16"):
            features, state = decoder(tgt_in, decoder.init_state(encoded, initial))
    assert features.dtype == torch.float32
    for part in state.hidden if cell == "lstm" else (state.hidden,):
        assert part.dtype == torch.float32
    torch.testing.assert_close(features, reference, rtol=5e-2, atol=5e-2)


def test_unknown_precision_is_an_error():
    with pytest.raises(ValueError, match="fp32, bf16, auto"):
        autocast("cpu", "fp8")


def _cpu_flags() -> set[str] | None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return None
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def test_native_bf16_on_cpu_agrees_with_the_kernels_cpu_flags():
    flags = _cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo flags on this system")
    assert native_bf16("cpu") == bool(flags & {"avx512_bf16", "amx_bf16"})


@pytest.mark.parametrize(
    ("native", "speedup", "expected"),
    [
        (True, 3.0, "bf16"),
        (True, 1.25, "bf16"),
        (True, 1.2, "fp32"),
        (True, 0.6, "fp32"),
        (False, 3.0, "fp32"),
    ],
)
def test_auto_is_bf16_exactly_where_native_bf16_products_run_clearly_faster(
    monkeypatch, native, speedup, expected
):
    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    monkeypatch.setattr(precision, "bf16_speedup", lambda device_type: speedup)
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("bf16", "cpu") == "bf16"  # asked for explicitly: always
    assert resolve_precision("fp32", "cpu") == "fp32"
    layer = nn.Linear(4, 3)
    with autocast("cpu", "auto"):
        dtype = layer(torch.randn(2, 4)).dtype
    assert dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)


def test_on_cuda_auto_follows_native_bf16_without_timing(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    assert bf16_speedup("cuda") == float("inf")
    assert resolve_precision("auto", "cuda") == "bf16"


def test_the_cpu_probe_times_real_products_once_per_process():
    if not native_bf16("cpu"):
        pytest.skip("the probe runs only where the CPU has native bfloat16")
    first = bf16_speedup("cpu")
    assert 0 < first < float("inf")
    assert bf16_speedup("cpu") == first  # measured once: a run never changes its mind
    assert bf16_pays("cpu") == (first >= precision.BF16_MIN_SPEEDUP)


def test_notices_say_what_auto_chose_and_warn_of_slow_bf16(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    assert precision_notice("train.precision", "auto", "cpu") == (
        "train.precision: auto → fp32 (this CPU has no native bfloat16)"
    )
    slow = precision_notice("train.precision", "bf16", "cpu")
    assert slow is not None and "slower than fp32" in slow and "train.precision: auto" in slow
    assert precision_notice("train.precision", "fp32", "cpu") is None
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    monkeypatch.setattr(precision, "bf16_speedup", lambda device_type: 3.0)
    assert precision_notice("decode.precision", "auto", "cpu") == (
        "decode.precision: auto → bf16 (this CPU runs bfloat16 natively; "
        "its bfloat16 products ran 3.00× as fast as float32's)"
    )
    assert precision_notice("train.precision", "bf16", "cpu") is None
    monkeypatch.setattr(precision, "bf16_speedup", lambda device_type: 0.6)
    assert precision_notice("decode.precision", "auto", "cpu") == (
        "decode.precision: auto → fp32 (this CPU runs bfloat16 natively; "
        "its bfloat16 products ran 0.60× as fast as float32's)"
    )
    slow = precision_notice("train.precision", "bf16", "cpu")
    assert slow is not None and "0.60×" in slow and "auto would pick fp32" in slow


def test_loss_and_attention_softmax_reduce_in_float32_under_bf16():
    torch.manual_seed(0)
    logits_layer = nn.Linear(8, 50)
    features, targets = torch.randn(30, 8), torch.randint(0, 50, (30,))
    reference = masked_token_nll(logits_layer(features), targets)
    with autocast("cpu", "bf16"):
        loss = masked_token_nll(logits_layer(features), targets)
        attention = BahdanauAttention(query_size=8, memory_size=6, attention_size=8)
        memory = torch.randn(3, 5, 6)
        _, weights = attention(
            torch.randn(3, 2, 8), attention.project_keys(memory), memory, torch.tensor([5, 2, 3])
        )
    assert loss.dtype == torch.float32
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2))
    assert torch.all(weights[1, :, 2:] == 0)
    # bfloat16 products keep ~3 significant digits: the loss stays within 1% of float32.
    assert abs(loss.item() - reference.item()) < 0.01 * reference.item()


def _lstm_tagger_like() -> nn.Module:
    return nn.ModuleDict({"embed": nn.Embedding(5, 4), "rnn": nn.LSTM(4, 3, batch_first=True)})


def test_bf16_is_refused_for_lstms_only_where_onednn_has_no_bf16_lstm(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    with pytest.raises(ConfigError, match=r"^train\.precision: bf16 needs a CPU with AVX512-BF16"):
        check_bf16_kernels(_lstm_tagger_like(), "train.precision", "bf16", "cpu")
    check_bf16_kernels(_lstm_tagger_like(), "train.precision", "auto", "cpu")  # auto → fp32
    check_bf16_kernels(_lstm_tagger_like(), "train.precision", "fp32", "cpu")
    check_bf16_kernels(nn.GRU(4, 3), "train.precision", "bf16", "cpu")  # emulated, slowly
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    check_bf16_kernels(_lstm_tagger_like(), "decode.precision", "bf16", "cpu")


@pytest.mark.skipif(native_bf16("cpu"), reason="this CPU has a bfloat16 LSTM kernel")
def test_the_refused_case_is_the_one_that_fails_in_onednn():
    """Where the check refuses, the LSTM itself fails: the check is not stricter than the kernel."""
    lstm = nn.LSTM(4, 3, batch_first=True)
    with pytest.raises(RuntimeError, match="primitive"), torch.autocast("cpu", torch.bfloat16):
        lstm(torch.randn(2, 5, 4))
