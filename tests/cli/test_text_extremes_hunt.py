"""Text extremes end to end: what a person may type into ``rnnlab translate --attention-plot``.

The translations themselves agree between a run, its export and the server on Unicode and whitespace
extremes (``tests/export/test_text_agreement_hunt.py``); these tests cover the attention heatmap,
whose title and tick labels are the sentence and its tokens as typed.
"""

from __future__ import annotations

from tests.cli_runner import run_cli


def _png_written(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_attention_plot_of_cjk_rtl_and_emoji_text_is_written(
    translator_run, monkeypatch, capsys, tmp_path
):
    """Characters the plotting font lacks cost a glyph, not the plot or the translation."""
    plot = tmp_path / "att.png"
    sentence = "a 你好 שלום \U0001f44d\U0001f3fd b\u00a0c"
    result = run_cli(
        monkeypatch,
        capsys,
        "translate",
        translator_run,
        "--attention-plot",
        plot,
        stdin=f"{sentence}\n\nb c\n",
    )
    assert result.code == 0, result
    assert len(result.out.splitlines()) == 3
    assert _png_written(plot)


def test_an_attention_plot_of_a_sentence_with_dollar_signs_is_written(
    translator_run, monkeypatch, capsys, tmp_path
):
    """A sentence is text, not TeX: ``$^$`` (or ``$_$``) in what a person typed is drawn literally.
    Matplotlib parses any label or title with two unescaped dollar signs as mathtext, and ``$^$``
    is not valid mathtext: ``savefig`` would raise a ValueError out of ``rnnlab translate``."""
    plot = tmp_path / "att.png"
    result = run_cli(
        monkeypatch,
        capsys,
        "translate",
        translator_run,
        "--attention-plot",
        plot,
        stdin="a $^$ b\n",
    )
    assert result.code == 0, result
    assert len(result.out.splitlines()) == 1
    assert _png_written(plot)
