"""Loop-product gradients and memory, scratch-stack dtypes, dropout checks and the runtime's line cut.

References, all independent of the code under test:

* loop products (``rnnlab.nn.loop_products``): the same loop written with plain ``F.linear`` /
  ``torch.bmm`` and differentiated by autograd in float64; plain autograd's memory behaviour (an
  output gradient is freed once its backward pass is over, seen through ``weakref``);
* scratch stacks' dtypes (``_in_parameter_dtype``): ``torch.nn.RNN``/``GRU``/``LSTM`` with the same
  weights, refusing what they refuse, and run in float32 on the cast input as the reference for the
  autocast path; for the LSTM variants without a ``torch.nn`` twin, the stack's own float32 output
  without autocast; for the models, their float32 forward without autocast;
* ``check_dropout``: ``torch.nn.GRU(3, 4, num_layers=2, dropout=v)`` accepting or refusing ``v``;
* ``runtime.cut_input_lines`` and ``--prefix``: rnnlab's own stdin reader
  (``rnnlab.cli.console.stdin_lines`` over ``StrictUtf8Lines`` and ``read_limited_lines``, its BOM
  drop and its notices) and ``cmd_generate``'s prefix cut, notices compared line for line.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import math
import sys
import threading
import weakref
from decimal import Decimal
from fractions import Fraction
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils.checkpoint import checkpoint

from rnnlab.nn import layers
from rnnlab.nn.factory import make_rnn
from rnnlab.nn.loop_products import LoopBmm, LoopLinear

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

D = torch.float64
T, B, N = 4, 3, 5  # steps, batch, width (square products so a step feeds the next)


# ---------------------------------------------------------------------------------------------------
# 1. Loop products: pairs kept per backward pass


def _operands(kind: str) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    if kind == "linear":
        w = torch.randn(N, N, dtype=D, generator=g).requires_grad_()
        b = torch.randn(N, dtype=D, generator=g).requires_grad_()
        return w, b
    return (torch.randn(B, N, N, dtype=D, generator=g).requires_grad_(),)


def _plain(kind: str, ops: tuple[Tensor, ...]):
    if kind == "linear":
        return lambda x: F.linear(x, ops[0], ops[1])
    return lambda x: torch.bmm(x, ops[0])


def _loop_product(kind: str, ops: tuple[Tensor, ...]):
    return LoopLinear(ops[0], ops[1]) if kind == "linear" else LoopBmm(ops[0])


def _inputs(kind: str) -> Tensor:
    g = torch.Generator().manual_seed(2)
    shape = (T, B, N) if kind == "linear" else (T, B, 2, N)
    return torch.randn(*shape, dtype=D, generator=g)


def _steps(product, xs: Tensor, h: Tensor, start: int = 0, stop: int = T) -> Tensor:
    outs = []
    for t in range(start, stop):
        h = torch.tanh(product(xs[t] + h))
        outs.append(h)
    return torch.stack(outs)


def _reference_grads(kind: str) -> list[Tensor]:
    ops = _operands(kind)
    xs = _inputs(kind)
    _steps(_plain(kind, ops), xs, torch.zeros_like(xs[0])).pow(2).sum().backward()
    return [op.grad for op in ops]


def _assert_grads(ops: tuple[Tensor, ...], expected: list[Tensor], factor: float = 1.0) -> None:
    for op, ref in zip(ops, expected, strict=True):
        assert op.grad is not None
        torch.testing.assert_close(op.grad, factor * ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["linear", "bmm"])
@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.parametrize("where", ["inside", "segments"])
def test_checkpointed_loop_gives_plain_autograd_gradients(kind, reentrant, where):
    """torch.utils.checkpoint around the whole loop (the product built inside), or around two
    segments of a loop whose product (and token) was built outside the checkpoint."""
    expected = _reference_grads(kind)
    ops = _operands(kind)
    xs = _inputs(kind)
    h0 = torch.zeros_like(xs[0]).requires_grad_()
    if where == "inside":
        out = checkpoint(
            lambda h: _steps(_loop_product(kind, ops), xs, h), h0, use_reentrant=reentrant
        )
    else:
        product = _loop_product(kind, ops)
        first = checkpoint(lambda h: _steps(product, xs, h, 0, 2), h0, use_reentrant=reentrant)
        second = checkpoint(
            lambda h: _steps(product, xs, h, 2, T), first[-1], use_reentrant=reentrant
        )
        out = torch.cat([first, second])
    out.pow(2).sum().backward()
    _assert_grads(ops, expected)


@pytest.mark.parametrize("kind", ["linear", "bmm"])
def test_retained_graph_backpropagated_twice_accumulates_exactly_twice(kind):
    expected = _reference_grads(kind)
    ops = _operands(kind)
    xs = _inputs(kind)
    loss = _steps(_loop_product(kind, ops), xs, torch.zeros_like(xs[0])).pow(2).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    _assert_grads(ops, expected, factor=2.0)


@pytest.mark.parametrize("kind", ["linear", "bmm"])
def test_input_only_passes_are_never_summed_by_a_later_full_pass(kind):
    expected = _reference_grads(kind)
    ops = _operands(kind)
    xs = _inputs(kind)
    h0 = torch.zeros_like(xs[0]).requires_grad_()
    loss = _steps(_loop_product(kind, ops), xs, h0).pow(2).sum()
    for _ in range(3):
        (g,) = torch.autograd.grad(loss, h0, retain_graph=True)
    # and the input gradient itself is plain autograd's
    h_ref = torch.zeros_like(xs[0]).requires_grad_()
    ref_ops = _operands(kind)
    ref_loss = _steps(_plain(kind, ref_ops), xs, h_ref).pow(2).sum()
    (g_ref,) = torch.autograd.grad(ref_loss, h_ref)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)
    assert all(op.grad is None for op in ops)
    loss.backward()
    _assert_grads(ops, expected)


@pytest.mark.parametrize("kind", ["linear", "bmm"])
def test_two_threads_backpropagating_one_graph(kind):
    expected = _reference_grads(kind)
    ops = _operands(kind)
    xs = _inputs(kind)
    loss = _steps(_loop_product(kind, ops), xs, torch.zeros_like(xs[0])).pow(2).sum()
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        try:
            barrier.wait()
            loss.backward(retain_graph=True)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    _assert_grads(ops, expected, factor=2.0)


@pytest.mark.parametrize("kind", ["linear", "bmm"])
def test_grad_called_inside_a_custom_function_backward(kind):
    """The outer loop's backward runs a custom Function whose backward differentiates a second
    loop (another graph) with torch.autograd.grad: both passes get plain autograd's gradients."""
    expected = _reference_grads(kind)
    ops = _operands(kind)
    xs = _inputs(kind)
    inner: dict[str, Tensor] = {}

    class Probe(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Tensor) -> Tensor:
            return x.clone()

        @staticmethod
        def backward(ctx: Any, grad: Tensor) -> Tensor:
            with torch.enable_grad():
                inner_ops = _operands(kind)
                out = _steps(_loop_product(kind, inner_ops), xs, torch.zeros_like(xs[0]))
                inner["grads"] = torch.autograd.grad(out.pow(2).sum(), inner_ops)
            return grad

    out = Probe.apply(_steps(_loop_product(kind, ops), xs, torch.zeros_like(xs[0])))
    out.pow(2).sum().backward()
    _assert_grads(ops, expected)
    for got, ref in zip(inner["grads"], expected, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["linear", "bmm"])
def test_nested_grad_over_the_same_graph_from_a_hook(kind):
    expected = _reference_grads(kind)
    ops = _operands(kind)
    xs = _inputs(kind)
    out = _steps(_loop_product(kind, ops), xs, torch.zeros_like(xs[0]))
    loss = out.pow(2).sum()
    inner: dict[str, Any] = {}

    def hook(grad: Tensor) -> Tensor:
        if "grads" not in inner:
            inner["grads"] = None  # the nested pass runs this hook too
            inner["grads"] = torch.autograd.grad(loss, ops, retain_graph=True)
        return grad

    out.register_hook(hook)
    loss.backward(retain_graph=True)
    _assert_grads(ops, expected)
    for got, ref in zip(inner["grads"], expected, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


def _output_grads_alive_after_input_only_passes(kind: str, product_of) -> int:
    ops = _operands(kind)
    xs = _inputs(kind)
    h0 = torch.zeros_like(xs[0]).requires_grad_()
    product = product_of(kind, ops)
    refs: list[weakref.ref] = []
    h, outs = h0, []
    for t in range(T):
        y = product(xs[t] + h)
        y.register_hook(lambda g: refs.append(weakref.ref(g)))
        h = torch.tanh(y)
        outs.append(h)
    loss = torch.stack(outs).pow(2).sum()
    for _ in range(3):
        torch.autograd.grad(loss, h0, retain_graph=True)
    gc.collect()
    assert len(refs) == 3 * T
    return sum(ref() is not None for ref in refs)


def test_plain_autograd_keeps_no_output_gradient_after_a_pass():
    assert _output_grads_alive_after_input_only_passes("linear", _plain) == 0


@pytest.mark.parametrize("kind", ["linear", "bmm"])
def test_input_only_passes_keep_no_output_gradients(kind):
    assert _output_grads_alive_after_input_only_passes(kind, _loop_product) == 0


# ---------------------------------------------------------------------------------------------------
# 2. Scratch stacks: the parameters' dtype, cast under autocast only

TWINS = [
    ("rnn", torch.nn.RNN, layers.RNN),
    ("gru", torch.nn.GRU, layers.GRU),
    ("lstm", torch.nn.LSTM, layers.LSTM),
]


def _twins(torch_cls, scratch_cls):
    torch.manual_seed(0)
    reference = torch_cls(3, 4, num_layers=2, batch_first=True, bidirectional=True)
    scratch = scratch_cls(3, 4, num_layers=2, batch_first=True, bidirectional=True)
    scratch.load_state_dict(reference.state_dict())
    return reference, scratch


def _hx(name: str, dtype: torch.dtype):
    g = torch.Generator().manual_seed(3)
    h = torch.randn(4, 2, 4, generator=g).to(dtype)
    return (h, torch.randn(4, 2, 4, generator=g).to(dtype)) if name == "lstm" else h


def _x(dtype: torch.dtype) -> Tensor:
    return torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(4)).to(dtype)


def _nested_off():
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
    stack.enter_context(torch.autocast("cpu", enabled=False))
    return stack


@pytest.mark.parametrize("name,torch_cls,scratch_cls", TWINS)
@pytest.mark.parametrize("context", ["none", "nested_off"])
def test_without_autocast_dtype_mismatches_are_refused_like_torch(
    name, torch_cls, scratch_cls, context
):
    reference, scratch = _twins(torch_cls, scratch_cls)
    enter = contextlib.nullcontext if context == "none" else _nested_off
    for module in (reference, scratch):
        with enter(), pytest.raises(ValueError):
            module(_x(torch.float16))
        with enter(), pytest.raises(RuntimeError):
            module(_x(torch.float32), _hx(name, torch.float64))
        packed = pack_padded_sequence(_x(torch.float64), [5, 3], batch_first=True)
        with enter(), pytest.raises((ValueError, RuntimeError)):
            module(packed)
        with enter():
            module(_x(torch.float32), _hx(name, torch.float32))  # same dtype: accepted


@pytest.mark.parametrize("name,torch_cls,scratch_cls", TWINS)
@pytest.mark.parametrize("autocast_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("x_dtype,h_dtype", [(torch.float16, None), (torch.float32, torch.float16)])
@pytest.mark.parametrize("packed", [False, True])
def test_under_cpu_autocast_the_stack_runs_in_float32(
    name, torch_cls, scratch_cls, autocast_dtype, x_dtype, h_dtype, packed
):
    reference, scratch = _twins(torch_cls, scratch_cls)
    x = _x(x_dtype).requires_grad_()
    hx = None if h_dtype is None else _hx(name, h_dtype)

    def wrap(t: Tensor):
        return pack_padded_sequence(t, [5, 3], batch_first=True) if packed else t

    given = wrap(x)  # packed outside autocast: torch's packing itself fails under it
    with torch.autocast("cpu", dtype=autocast_dtype):
        out, state = scratch(given, hx)
    out = out.data if packed else out
    x_ref = x.detach().float().requires_grad_()
    hx_ref = None
    if hx is not None:
        hx_ref = tuple(s.float() for s in hx) if name == "lstm" else hx.float()
    ref_out, ref_state = reference(wrap(x_ref), hx_ref)
    ref_out = ref_out.data if packed else ref_out
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    h, h_ref = (state[0], ref_state[0]) if name == "lstm" else (state, ref_state)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    ref_out.sum().backward()
    assert x.grad is not None and x.grad.dtype == x_dtype
    torch.testing.assert_close(x.grad.float(), x_ref.grad.to(x_dtype).float())


@pytest.mark.parametrize("cls", [layers.PeepholeLSTM, layers.CoupledLSTM])
def test_lstm_variants_cast_under_autocast_and_refuse_without(cls):
    torch.manual_seed(0)
    stack = cls(3, 4, num_layers=2, batch_first=True)
    x = _x(torch.float16)
    with pytest.raises(ValueError, match="input must have the type"):
        stack(x)
    with _nested_off(), pytest.raises(ValueError, match="input must have the type"):
        stack(x)
    with torch.autocast("cpu", dtype=torch.float16):
        out, (h, c) = stack(x)
    ref, (h_ref, c_ref) = stack(x.float())
    assert out.dtype == h.dtype == c.dtype == torch.float32
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(c, c_ref)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_scratch_tagger_and_seq2seq_forward_under_bf16_autocast(cell):
    from rnnlab.models.seq2seq import build_seq2seq
    from rnnlab.models.tagger import RNNTagger
    from rnnlab.tasks.seq2seq_config import Seq2SeqModelConfig

    src = torch.tensor([[3, 4, 5, 6], [7, 0, 0, 0], [8, 9, 2, 0]])
    lengths = torch.tensor([4, 1, 3])
    tgt = torch.tensor([[1, 2, 3], [1, 4, 0], [1, 5, 6]])
    config = Seq2SeqModelConfig(
        cell=cell,
        rnn_impl="scratch",
        embed_size=6,
        hidden_size=5,
        num_layers=2,
        dropout=0.0,
        embed_dropout=0.0,
        attention="bahdanau" if cell == "gru" else "luong_general",
        bidirectional_encoder=True,
    )
    torch.manual_seed(0)
    seq2seq = build_seq2seq(config, src_vocab_size=12, tgt_vocab_size=10)
    torch.manual_seed(0)
    tagger = RNNTagger(
        vocab_size=12, num_tags=4, embed_size=6, hidden_size=5, num_layers=2,
        cell=cell, rnn_impl="scratch", crf=True,
    )  # fmt: skip
    for model, run in (
        (seq2seq, lambda m: m(src, lengths, tgt)),
        (tagger, lambda m: m(src, lengths)),
    ):
        model.eval()
        reference = run(model).detach()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = run(model)
        torch.testing.assert_close(out.float(), reference, rtol=0.05, atol=0.02)
        out.float().sum().backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)


# ---------------------------------------------------------------------------------------------------
# 3. check_dropout against torch.nn.GRU


def _accepts(build) -> bool:
    try:
        build()
    except (ValueError, TypeError):
        return False
    return True


DROPOUTS_AGREEING = [
    np.float32(0.5),
    np.float64(0.25),
    np.float64(1.0),
    np.float32(1.5),
    np.float64("nan"),
    np.bool_(True),
    np.bool_(False),
    np.int64(1),
    np.int32(0),
    Fraction(1, 2),
    Fraction(3, 2),
    0,
    1,
    2,
    -1,
    True,
    False,
    math.nan,
    math.inf,
    -math.inf,
    -0.0,
    0.0,
    1.0,
    "0.5",
    "",
    None,
    0.5 + 0j,
    torch.tensor(0.5),
    [0.5],
]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("value", DROPOUTS_AGREEING, ids=repr)
def test_dropout_accepted_and_refused_like_torch(value):
    expected = _accepts(lambda: torch.nn.GRU(3, 4, num_layers=2, dropout=value))
    assert _accepts(lambda: layers.check_dropout(value)) is expected
    assert _accepts(lambda: layers.GRU(3, 4, num_layers=2, dropout=value)) is expected
    for impl in ("fused", "scratch"):
        for num_layers in (1, 2):
            built = _accepts(
                lambda impl=impl, layers_=num_layers: make_rnn(
                    "gru", impl, input_size=3, hidden_size=4, num_layers=layers_, dropout=value
                )
            )
            assert built is expected
    if expected:  # the value the layer keeps is torch's
        reference = torch.nn.GRU(3, 4, num_layers=2, dropout=value).dropout
        assert layers.GRU(3, 4, num_layers=2, dropout=value).dropout == reference


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("value", [Decimal("0.5"), Decimal("1")], ids=repr)
def test_decimal_dropout_accepted_like_torch(value):
    assert _accepts(lambda: torch.nn.GRU(3, 4, num_layers=2, dropout=value))
    assert _accepts(lambda: layers.check_dropout(value))


@pytest.mark.parametrize(
    "value", [Fraction(10**30 + 1, 10**30), -Fraction(1, 10**400)], ids=["above1", "below0"]
)
def test_dropout_just_outside_the_range_refused_like_torch(value):
    assert not _accepts(lambda: torch.nn.GRU(3, 4, num_layers=2, dropout=value))
    assert not _accepts(lambda: layers.check_dropout(value))


# ---------------------------------------------------------------------------------------------------
# 4. runtime.cut_input_lines and --prefix against rnnlab's stdin reader

LIMIT = 10_000


def _rt():
    pytest.importorskip("onnxruntime")
    from rnnlab.export import runtime

    return runtime


def _rnnlab_read(text: str) -> tuple[list[str], list[str]]:
    """rnnlab's stdin lines and notices for ``text`` sent to stdin as UTF-8 bytes."""
    from rnnlab.cli.console import stdin_lines

    err = io.StringIO()
    stdin = SimpleNamespace(buffer=io.BytesIO(text.encode("utf-8")))
    saved = sys.stdin
    sys.stdin = stdin  # type: ignore[assignment]
    try:
        with contextlib.redirect_stderr(err):
            lines = [line for _, line in stdin_lines()]
    finally:
        sys.stdin = saved
    notices = [n.removeprefix("rnnlab: notice: ") for n in err.getvalue().splitlines()]
    return lines, notices


def _runtime_read(text: str) -> tuple[list[str], list[str]]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        lines = _rt().cut_input_lines(text)
    notices = [n.removeprefix("runtime: notice: ") for n in err.getvalue().splitlines()]
    return lines, notices


X = "x" * LIMIT
AGREEING_TEXTS = {
    "empty": "",
    "bom-newline": "\ufeff\n",
    "no-final-newline": "a\nb",
    "crlf": "a\r\nb\r\n",
    "lone-cr": "a\rb\r",
    "only-newlines": "\n\n",
    "at-limit": X + "\n",
    "over-by-one": X + "y\n",
    "over-no-newline": X + "yz",
    "bom-at-limit": "\ufeff" + X[:-1] + "\n",
    "bom-over": "\ufeff" + X + "\nb",
    "crlf-at-limit": X + "\r\n",
    "crlf-over": X + "y\r\n",
    "emoji-over": "😀" * (LIMIT + 1) + "\n",
    "emoji-at-limit": "😀" * LIMIT,
    "second-line-over": "a\n" + X + "yy\nb",
    "bom-in-second-line": "a\n\ufeff" + X,
}


@pytest.mark.parametrize("text", AGREEING_TEXTS.values(), ids=AGREEING_TEXTS.keys())
def test_runtime_cuts_like_rnnlab(text, capsys):
    expected_lines, expected_notices = _rnnlab_read(text)
    lines = _rt().cut_input_lines(text)
    err = capsys.readouterr().err
    assert lines == expected_lines
    assert [n.removeprefix("runtime: notice: ") for n in err.splitlines()] == expected_notices
    assert all(n.startswith("runtime: notice: <stdin>:") for n in err.splitlines())


def test_bom_only_text_is_one_empty_line_like_rnnlab():
    assert _runtime_read("\ufeff") == _rnnlab_read("\ufeff")


@pytest.mark.parametrize(
    "text",
    [X + "y\r", X + "y\r\r\n", X[:-1] + "\r\r\n", X + "\r"],
    ids=["over-cr-at-eof", "over-cr-cr-lf", "limit-cr-cr-lf", "limit-cr-at-eof"],
)
def test_trailing_carriage_returns_on_long_lines_agree(text):
    assert _runtime_read(text) == _rnnlab_read(text)


_lengths = st.sampled_from([0, 1, 2, LIMIT - 2, LIMIT - 1, LIMIT, LIMIT + 1, LIMIT + 2, 12_345])
_line = st.tuples(
    _lengths,
    st.sampled_from(["x", "😀", "é", " ", "\ufeff"]),
    st.sampled_from(["", "\r", "a\r"]),
    st.sampled_from(["\n", "\r\n", ""]),
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(bom=st.booleans(), lines=st.lists(_line, max_size=4))
def test_random_texts_cut_like_rnnlab(bom, lines):
    text = ("\ufeff" if bom else "") + "".join(
        char * length + tail + end for length, char, tail, end in lines
    )
    assert _runtime_read(text) == _rnnlab_read(text)


@pytest.mark.parametrize(
    "prefix",
    ["", "abc", "x" * LIMIT, "x" * (LIMIT + 1), "😀" * (LIMIT + 3), "\ufeff" + X, "a\r\n" * 4000],
    ids=["empty", "short", "at-limit", "over", "emoji-over", "bom-over", "crlf-over"],
)
def test_prefix_cut_like_rnnlab_generate(prefix, monkeypatch, capsys):
    rt = _rt()
    import rnnlab.inference as inference
    from rnnlab.cli.inference_commands import cmd_generate

    class FakeRuntimeLM(rt.OnnxLanguageModel):
        def __init__(self) -> None:
            pass

        def generate(self, prefix: str, **_: Any) -> str:
            return "[" + prefix + "]"

    class FakeLM:
        def generate(self, prefix: str, **_: Any) -> str:
            return "[" + prefix + "]"

    monkeypatch.setattr(rt, "load", lambda folder, **_: FakeRuntimeLM())
    monkeypatch.setattr(inference, "load_as", lambda *a, **k: FakeLM())
    args = argparse.Namespace(
        run="RUN", prefix=prefix, length=3, temperature=None, top_k=None, seed=0,
        device="cpu", set=[],
    )  # fmt: skip
    assert cmd_generate(args) == 0
    rnnlab = capsys.readouterr()
    assert rt.main(["EXPORT", "--prefix", prefix, "--length", "3"]) == 0
    runtime = capsys.readouterr()
    assert runtime.out == rnnlab.out
    assert [n.removeprefix("runtime: notice: ") for n in runtime.err.splitlines()] == [
        n.removeprefix("rnnlab: notice: ") for n in rnnlab.err.splitlines()
    ]
    assert len(runtime.out) - 3 == min(len(prefix), LIMIT)  # "[", "]" and the newline
