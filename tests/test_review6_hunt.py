"""Over-long lines' trailing CRs, the runtime's BOM handling, loop products' per-pass pairs
dropped by an engine callback, and the exact dropout check, under attack.

References, all independent of the code under test:

* ``read_limited_lines``: a plain reader written here (the whole text split at "\\n", a final empty
  piece dropped, each piece ``rstrip("\\r\\n")``-ed, cut to the limit, its length the stripped
  piece's), over ``io.StringIO`` and ``StrictUtf8Lines`` with tiny chunk sizes;
* ``runtime.text_lines`` / ``cut_input_lines`` / ``corpus_tokens``: the same plain reader with a BOM
  removed from the first line only, rnnlab's stdin reader (``stdin_lines``, via the helper of
  ``tests/test_review5_hunt.py``) and rnnlab's file reader (``rnnlab.data.io.read_lines``);
* ``LoopLinear`` / ``LoopBmm``: the same loop with plain ``F.linear`` / ``torch.bmm``, differentiated
  by autograd in float64, and plain autograd's freeing of output gradients (``weakref``); the
  attention decoders with their loop products monkeypatched to the plain ops;
* ``check_dropout``: ``torch.nn.GRU(3, 4, num_layers=2, dropout=v)`` accepting or refusing ``v``, and
  check_dropout's own documented ``ValueError``.
"""

from __future__ import annotations

import decimal
import gc
import io
import numbers
import warnings
import weakref
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import rnnlab.data.limits as limits
from rnnlab.cli.console import StrictUtf8Lines
from rnnlab.data import lm_corpus
from rnnlab.data.io import read_lines
from rnnlab.data.limits import read_limited_lines
from rnnlab.nn import layers
from rnnlab.nn.factory import make_rnn
from rnnlab.nn.loop_products import LoopBmm, LoopLinear

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

D = torch.float64


# ---------------------------------------------------------------------------------------------------
# 1. read_limited_lines against a plain reader


def plain_lines(text: str, limit: int) -> list[tuple[str, int]]:
    pieces = text.split("\n")
    if pieces[-1] == "":
        pieces.pop()
    stripped = [piece.rstrip("\r\n") for piece in pieces]
    return [(line[:limit], len(line)) for line in stripped]


def _limited(stream, limit: int) -> list[tuple[str, int]]:
    return [(line.text, line.length) for line in read_limited_lines(stream, limit)]


def _both_readers(text: str, limit: int, chunk: int, byte_chunk: int) -> tuple[list, list]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(limits, "_CHUNK", chunk)
        mp.setattr(StrictUtf8Lines, "CHUNK_BYTES", byte_chunk)
        from_text = _limited(io.StringIO(text), limit)
        from_bytes = _limited(StrictUtf8Lines(io.BytesIO(text.encode("utf-8"))), limit)
    return from_text, from_bytes


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    text=st.text(alphabet=["a", "\r", "\n", "é", "😀"], max_size=24),
    limit=st.sampled_from([0, 1, 2, 3, 5]),
    chunk=st.sampled_from([1, 2, 3]),
    byte_chunk=st.sampled_from([1, 2, 3, 64]),
)
def test_limited_lines_match_a_plain_reader(text, limit, chunk, byte_chunk):
    expected = plain_lines(text, limit)
    from_text, from_bytes = _both_readers(text, limit, chunk, byte_chunk)
    assert from_text == expected
    assert from_bytes == expected


CR_TEXTS = [
    "\r" * 12,
    "\r" * 12 + "\n",
    "\r" * 12 + "\r\n" + "b",
    "aaaaaaa" + "\r" * 9,
    "a\r\ra\r\r\ra\r\r\r\ra\r\r\r\r\r\n",
    "\r\ra\r\r\ra\r\r\r\r",
    "aaaaa\r",
    "aaaaa\r\n",
    "aaaaaa\r\r\n\r\r\r\r\r\r\r\n",
    "😀😀😀😀😀😀\r\r😀\r\r\r",
    "\r\r\r\r\r\ra",
    "\r\r\r\r\r\ra\r",
]


@pytest.mark.parametrize("text", CR_TEXTS, ids=repr)
@pytest.mark.parametrize("chunk", [1, 2, 3, 1 << 16])
def test_carriage_return_runs_on_over_long_lines(text, chunk):
    for limit in (0, 1, 3, 5):
        expected = plain_lines(text, limit)
        assert _both_readers(text, limit, chunk, 1) == (expected, expected)


# ---------------------------------------------------------------------------------------------------
# 2. runtime.text_lines / cut_input_lines / corpus_tokens


def _rt():
    pytest.importorskip("onnxruntime")
    from rnnlab.export import runtime

    return runtime


def plain_file_lines(text: str) -> list[str]:
    lines = [line for line, _ in plain_lines(text, len(text) + 1)]
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    return lines


LIMIT = 10_000
X = "x" * LIMIT
BOM_TEXTS = {
    "bom": "\ufeff",
    "bom-lf": "\ufeff\n",
    "bom-bom": "\ufeff\ufeff",
    "lf-bom": "\n\ufeff",
    "bom-crlf": "\ufeff\r\n",
    "bom-cr-cr": "\ufeff\r\r",
    "bom-bom-lf-bom": "\ufeff\ufeff\n\ufeff",
    "bom-over": "\ufeff" + X + "y",
    "bom-at-limit": "\ufeff" + X,
    "bom-limit-minus-one": "\ufeff" + X[:-1] + "\n",
    "bom-bom-over": "\ufeff\ufeff" + X + "\nb",
    "bom-cr-run": "\ufeff" + "\r" * (LIMIT + 5) + "\n",
    "bom-over-crs": "\ufeff" + X + "\r\r\r",
    "bom-limit-crs": "\ufeff" + X[:-1] + "\r" * 7 + "\n",
    "second-line-bom-over": "a\n\ufeff" + X + "z",
}


@pytest.mark.parametrize("text", BOM_TEXTS.values(), ids=BOM_TEXTS.keys())
def test_runtime_bom_handling_like_a_file_and_like_stdin(text):
    rt = _rt()
    from tests.test_review5_hunt import _rnnlab_read, _runtime_read

    assert rt.text_lines(text) == plain_file_lines(text)
    assert _runtime_read(text) == _rnnlab_read(text)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(text=st.text(alphabet=["\ufeff", "a", "\r", "\n", "é", " "], max_size=12))
def test_runtime_text_lines_like_the_file_reader(text, tmp_path_factory):
    rt = _rt()
    path = tmp_path_factory.mktemp("lines") / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    expected = plain_file_lines(text)
    assert [line for _, line in read_lines(path)] == expected
    assert rt.text_lines(text) == expected


@pytest.mark.parametrize(
    "level,clean",
    [("char", "none"), ("char", "timemachine"), ("word", "none"), ("word", "timemachine")],
)
@pytest.mark.parametrize("text", [*BOM_TEXTS.values(), "\ufeffThe a\r\n b!\n\n\ufeffc"], ids=repr)
def test_runtime_corpus_tokens_like_a_file(level, clean, text, tmp_path):
    rt = _rt()
    text = text[:40]  # keep the token lists small
    path = tmp_path / "corpus.txt"
    path.write_bytes(text.encode("utf-8"))
    expected = [
        t
        for line in lm_corpus._line_tokens(read_lines(path), level=level, clean=clean)
        for t in line
    ]
    assert rt.corpus_tokens(text, level=level, clean=clean) == expected


# ---------------------------------------------------------------------------------------------------
# 3. Loop products

T, B, N = 4, 3, 5


def _operands(kind: str) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(11)
    if kind == "linear":
        w = torch.randn(N, N, dtype=D, generator=g).requires_grad_()
        b = torch.randn(N, dtype=D, generator=g).requires_grad_()
        return w, b
    if kind == "linear-nobias":
        return (torch.randn(N, N, dtype=D, generator=g).requires_grad_(),)
    return (torch.randn(B, N, N, dtype=D, generator=g).requires_grad_(),)


def _plain(kind: str, ops):
    if kind == "linear":
        return lambda x: F.linear(x, ops[0], ops[1])
    if kind == "linear-nobias":
        return lambda x: F.linear(x, ops[0])
    return lambda x: torch.bmm(x, ops[0])


def _loop(kind: str, ops):
    if kind == "linear":
        return LoopLinear(ops[0], ops[1])
    if kind == "linear-nobias":
        return LoopLinear(ops[0])
    return LoopBmm(ops[0])


def _xs(kind: str) -> Tensor:
    g = torch.Generator().manual_seed(12)
    shape = (T, B, 2, N) if kind == "bmm" else (T, B, N)
    return torch.randn(*shape, dtype=D, generator=g)


def _forward(product, xs: Tensor, hooks: list | None = None) -> Tensor:
    h, outs = torch.zeros_like(xs[0]), []
    for t in range(T):
        y = product(xs[t] + h)
        if hooks is not None:
            y.register_hook(hooks[t])
        h = torch.tanh(y)
        outs.append(h)
    return torch.stack(outs).pow(2).sum()


def _reference(kind: str) -> list[Tensor]:
    ops = _operands(kind)
    return list(torch.autograd.grad(_forward(_plain(kind, ops), _xs(kind)), ops))


def _close(got, expected, factor: float = 1.0) -> None:
    for g, r in zip(got, expected, strict=True):
        assert g is not None
        torch.testing.assert_close(g, factor * r, rtol=1e-10, atol=1e-12)


KINDS = ["linear", "linear-nobias", "bmm"]


@pytest.mark.parametrize("kind", KINDS)
def test_backward_and_grad_of_one_operand(kind):
    expected = _reference(kind)
    ops = _operands(kind)
    loss = _forward(_loop(kind, ops), _xs(kind))
    for i, op in enumerate(ops):
        (g,) = torch.autograd.grad(loss, [op], retain_graph=True)
        _close([g], [expected[i]])
    assert all(op.grad is None for op in ops)
    loss.backward()
    _close([op.grad for op in ops], expected)


@pytest.mark.parametrize("kind", KINDS)
def test_backward_under_anomaly_detection(kind):
    expected = _reference(kind)
    ops = _operands(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.autograd.set_detect_anomaly(True):
            loss = _forward(_loop(kind, ops), _xs(kind))
            loss.backward(retain_graph=True)
            grads = torch.autograd.grad(loss, ops)
    _close([op.grad for op in ops], expected)
    _close(grads, expected)


def _raising_hooks(where: int, state: dict) -> list:
    def make(t: int):
        def hook(grad: Tensor) -> Tensor:
            if state["armed"] and t == where:
                raise RuntimeError("hook failed")
            return grad

        return hook

    return [make(t) for t in range(T)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", [0, 1, T - 1])
def test_a_pass_that_raises_leaves_later_passes_right(kind, where):
    """A hook on step ``where``'s output raises during the first two passes (backward runs the
    steps last to first, so T - 1 fails before any pair is kept); then a normal pass, twice."""
    expected = _reference(kind)
    ops = _operands(kind)
    state = {"armed": True}
    loss = _forward(_loop(kind, ops), _xs(kind), _raising_hooks(where, state))
    for _ in range(2):
        with pytest.raises(RuntimeError, match="hook failed"):
            loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="hook failed"):
        torch.autograd.grad(loss, ops, retain_graph=True)
    assert all(op.grad is None for op in ops)
    state["armed"] = False
    loss.backward(retain_graph=True)
    _close([op.grad for op in ops], expected)
    loss.backward()
    _close([op.grad for op in ops], expected, factor=2.0)


def _alive_after_failing_pass(kind: str, product_of) -> int:
    ops = _operands(kind)
    refs: list[weakref.ref] = []
    state = {"armed": True}
    raising = _raising_hooks(0, state)

    def hook_of(t: int):
        def hook(grad: Tensor) -> Tensor:
            refs.append(weakref.ref(grad))
            return raising[t](grad)

        return hook

    loss = _forward(product_of(kind, ops), _xs(kind), [hook_of(t) for t in range(T)])
    with pytest.raises(RuntimeError, match="hook failed"):
        loss.backward(retain_graph=True)
    gc.collect()
    assert len(refs) == T
    alive = sum(ref() is not None for ref in refs)
    del loss
    return alive


def test_plain_autograd_frees_output_gradients_of_a_failed_pass():
    assert _alive_after_failing_pass("linear", _plain) == 0


@pytest.mark.parametrize("kind", ["linear", "bmm"])
def test_a_failed_pass_keeps_no_output_gradients(kind):
    assert _alive_after_failing_pass(kind, _loop) == 0


# The attention decoders: one SGD step (twice) with loop products vs the plain ops


def _plain_loop_linear(weight: Tensor, bias: Tensor | None = None):
    return lambda x: F.linear(x, weight, bias)


def _plain_loop_bmm(right: Tensor):
    return lambda a: torch.bmm(a, right)


def _decoder(name: str):
    from rnnlab.models.attention_decoder import BahdanauDecoder, LuongDecoder

    torch.manual_seed(5)
    common = dict(vocab_size=9, embed_size=4, hidden_size=5, memory_size=6, num_layers=2)
    if name == "bahdanau-gru":
        dec = BahdanauDecoder(**common, cell="gru")
    elif name == "luong-general-lstm":
        dec = LuongDecoder(**common, method="general", cell="lstm")
    else:
        dec = LuongDecoder(
            vocab_size=9, embed_size=4, hidden_size=6, memory_size=6, num_layers=2,
            method="dot", cell="gru",
        )  # fmt: skip
    return dec.double()


def _train_two_steps(name: str) -> tuple[list[Tensor], Tensor]:
    from rnnlab.models.encoder import EncoderOutput

    dec = _decoder(name)
    g = torch.Generator().manual_seed(6)
    hidden_size = dec.hidden_size
    memory = torch.randn(3, 4, 6, dtype=D, generator=g).requires_grad_()
    h0 = torch.randn(2, 3, hidden_size, dtype=D, generator=g)
    hidden = (h0, torch.randn(2, 3, hidden_size, dtype=D, generator=g)) if "lstm" in name else h0
    tgt_in = torch.tensor([[1, 2, 3, 4], [1, 5, 6, 0], [1, 7, 0, 0]])
    gold = torch.tensor([[2, 3, 4, 8], [5, 6, 8, 0], [7, 8, 0, 0]])
    lengths = torch.tensor([4, 2, 3])
    for _ in range(2):
        enc = EncoderOutput(outputs=memory, state=hidden, lengths=lengths)
        state = dec.init_state(enc, hidden)
        features, _ = dec(tgt_in, state)
        logits = dec.project(features)
        loss = F.cross_entropy(logits.reshape(-1, 9), gold.reshape(-1), ignore_index=0)
        dec.zero_grad()
        memory.grad = None
        loss.backward()
        with torch.no_grad():
            for p in dec.parameters():
                p -= 0.5 * p.grad
    return [p.detach().clone() for p in dec.parameters()], memory.grad


DECODERS = ["bahdanau-gru", "luong-general-lstm", "luong-dot-gru"]


@pytest.mark.parametrize("name", DECODERS)
def test_decoder_training_steps_match_plain_products(name, monkeypatch):
    import rnnlab.models.attention_decoder as ad
    import rnnlab.nn.stepwise as sw

    got_params, got_memory_grad = _train_two_steps(name)
    monkeypatch.setattr(ad, "LoopLinear", _plain_loop_linear)
    monkeypatch.setattr(ad, "LoopBmm", _plain_loop_bmm)
    monkeypatch.setattr(sw, "LoopLinear", _plain_loop_linear)
    ref_params, ref_memory_grad = _train_two_steps(name)
    assert len(got_params) == len(ref_params)
    _close(got_params, ref_params)
    _close([got_memory_grad], [ref_memory_grad])


# ---------------------------------------------------------------------------------------------------
# 4. check_dropout against torch.nn.GRU


def _outcome(build) -> bool:
    """True where ``build`` accepts; any exception is a refusal (types compared elsewhere)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build()
    except Exception:
        return False
    return True


class _RaisingLe:
    def __init__(self, exc: type[Exception]) -> None:
        self.exc = exc

    def __le__(self, other):
        raise self.exc("no order")

    __ge__ = __lt__ = __gt__ = __le__

    def __float__(self) -> float:
        return 0.5


class _NumberRaisingLe(_RaisingLe):
    pass


numbers.Number.register(_NumberRaisingLe)

_f16_one = np.float16(1)
_ld_one = np.longdouble(1)
DROPOUTS = [
    Decimal("NaN"),
    Decimal("sNaN"),
    Decimal("-0"),
    Decimal("0"),
    Decimal("1"),
    Decimal("0.5"),
    Decimal("1.0000000000000000000000001"),
    Decimal("-1e-999"),
    Fraction(1, 1),
    Fraction(0, 1),
    _f16_one,
    np.nextafter(_f16_one, np.float16(2)),
    np.float16(0),
    -np.nextafter(np.float16(0), np.float16(1)),
    _ld_one,
    _ld_one + np.finfo(np.longdouble).eps,
    np.longdouble(0) - np.finfo(np.longdouble).smallest_subnormal,
    np.array(0.5),
    np.array([0.5]),
    torch.tensor(0.5),
    _RaisingLe(TypeError),
    _NumberRaisingLe(TypeError),
    _NumberRaisingLe(ValueError),
    _NumberRaisingLe(RuntimeError),
]


@pytest.mark.parametrize("value", DROPOUTS, ids=repr)
def test_dropout_accept_or_refuse_like_torch(value):
    expected = _outcome(lambda: torch.nn.GRU(3, 4, num_layers=2, dropout=value))
    assert _outcome(lambda: layers.check_dropout(value)) is expected
    assert _outcome(lambda: layers.GRU(3, 4, num_layers=2, dropout=value)) is expected
    for impl in ("fused", "scratch"):
        built = _outcome(
            lambda impl=impl: make_rnn(
                "gru", impl, input_size=3, hidden_size=4, num_layers=2, dropout=value
            )
        )
        assert built is expected


def test_torch_accepts_and_refuses_the_expected_values():
    """The reference itself: exact comparison, so values just past 1 (or 0) are refused."""
    accepted = [
        v for v in DROPOUTS if _outcome(lambda v=v: torch.nn.GRU(3, 4, num_layers=2, dropout=v))
    ]
    assert {repr(v) for v in accepted} == {
        repr(v)
        for v in (
            Decimal("-0"), Decimal("0"), Decimal("1"), Decimal("0.5"), Fraction(1, 1),
            Fraction(0, 1), _f16_one, np.float16(0), _ld_one,
        )
    }  # fmt: skip


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("sNaN")], ids=repr)
def test_check_dropout_refuses_decimal_nans_with_value_error(value):
    with pytest.raises(ValueError, match="dropout should be a number in range"):
        layers.check_dropout(value)


def test_torch_refuses_signalling_nan_with_value_error():
    """torch converts with float() first, which refuses a signalling NaN with ValueError."""
    with pytest.raises(ValueError):
        torch.nn.GRU(3, 4, num_layers=2, dropout=Decimal("sNaN"))
    with pytest.raises(decimal.InvalidOperation):  # and NaN's ordering raises in torch too
        torch.nn.GRU(3, 4, num_layers=2, dropout=Decimal("NaN"))
