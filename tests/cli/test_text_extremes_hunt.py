"""Text extremes end to end: what a person may type into ``rnnlab translate --attention-plot``.

The translations themselves agree between a run, its export and the server on Unicode and whitespace
extremes (``tests/export/test_text_agreement_hunt.py``); these tests cover the attention heatmap,
whose title and tick labels are the first sentence and its tokens as typed.
"""

from __future__ import annotations

import pytest

from tests.cli_runner import run_cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "lines",
    [
        # Characters the plotting font lacks cost a glyph, not the plot or the translation.
        ["a 你好 שלום \U0001f44d\U0001f3fd b\u00a0c", "", "b c"],
        # A sentence is text, not TeX: matplotlib parses anything between two dollar signs as
        # mathtext, and ``$^$`` is not valid mathtext (``savefig`` would raise a ValueError).
        ["a $^$ b"],
    ],
    ids=["cjk-rtl-emoji", "dollar-signs"],
)
def test_the_attention_plot_of_the_first_sentence_is_written(
    translator_run, monkeypatch, capsys, tmp_path, lines: list[str]
):
    plot = tmp_path / "att.png"
    stdin = "".join(f"{line}\n" for line in lines)
    result = run_cli(
        monkeypatch, capsys, "translate", translator_run, "--attention-plot", plot, stdin=stdin
    )
    assert result.code == 0, result
    assert len(result.out.splitlines()) == len(lines)
    assert plot.is_file() and plot.read_bytes()[:8] == PNG_SIGNATURE
