"""What a person sees: blocks of stdin stream, metrics print flat, and a log file gets plain lines.

References are written out here: chunking by slicing, nested dicts flattened by hand, and the
reporter's output read back from a stream that is not a terminal.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

from hypothesis import given
from hypothesis import strategies as st

from rnnlab.cli.console import ConsoleReporter, _in_blocks, print_metrics


@given(st.lists(st.integers(), max_size=40), st.integers(min_value=1, max_value=9))
def test_blocks_are_the_slices_of_the_input(items: list[int], size: int):
    expected = [items[i : i + size] for i in range(0, len(items), size)]
    assert list(_in_blocks(items, size)) == expected


def test_a_full_block_is_yielded_before_the_next_item_is_read():
    # A translation must be printed while a long input is still arriving on stdin.
    read: list[int] = []

    def source() -> Iterator[int]:
        for item in range(7):
            read.append(item)
            yield item

    blocks = _in_blocks(source(), 3)
    assert next(blocks) == [0, 1, 2]
    assert read == [0, 1, 2]
    assert next(blocks) == [3, 4, 5]
    assert read == [0, 1, 2, 3, 4, 5]


def test_metrics_print_as_tab_separated_dotted_keys(capsys):
    print_metrics({"accuracy": 0.5, "per_tag": {"NOUN": {"f1": 0.25}}, "tokens": 4}, as_json=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["accuracy\t0.5000", "per_tag.NOUN.f1\t0.2500", "tokens\t4"]


def test_metrics_print_as_one_json_document(capsys):
    metrics = {"bleu": 12.5, "per_tag": {}}
    print_metrics(metrics, as_json=True)
    assert json.loads(capsys.readouterr().out) == metrics


def test_a_file_gets_plain_lines_and_no_progress_bar():
    stream = io.StringIO()  # not a terminal, like a log file or CI
    reporter = ConsoleReporter(stream)
    bar = reporter.progress(10, "training")
    bar.update(5)
    bar.close()
    reporter.record({"step": 100, "train_loss": 1.23456})
    reporter.message("done")
    assert stream.getvalue() == "step=100 train_loss=1.235\ndone\n"
