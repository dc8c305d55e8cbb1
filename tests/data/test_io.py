"""``rnnlab.data.io``: reading text files line by line, and the errors that name file and line.

References: a plain-Python line splitter over the raw bytes (split at ``b"\\n"``, drop one trailing
``\\r``-run, decode UTF-8), the ``gzip`` module for compressed input, and line numbers counted by
hand. ``tests/data/test_text.py`` already checks a gzip file with a BOM and CRLF, and a
Latin-1 byte on line 2; this file adds property tests over arbitrary text and position of the bad
line, the kinds of broken gzip stream, directories and missing files, and ``resolve_existing``.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnlab.data.io import read_lines, resolve_existing
from rnnlab.errors import DataError

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# One line of text: anything but the line break itself. "\r" is left out too, because a "\r" at
# the end of a line is a line ending (CRLF) by design; "\r" inside a line is tested on its own.
line_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=12
)


def reference_lines(data: bytes) -> list[tuple[int, str]]:
    """Numbered lines of UTF-8 ``data`` the way a person counts them, by plain byte splitting."""
    pieces = data.split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()  # the newline that ends the last line does not start another
    lines = [piece.decode("utf-8").rstrip("\r") for piece in pieces]
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    return list(enumerate(lines, start=1))


def assert_one_line_error(error: DataError, path: Path, line: int | None) -> None:
    message = str(error)
    where = f"{path}:{line}" if line is not None else f"{path}"
    assert message.startswith(f"{where}: "), message
    assert error.line == line
    assert "\n" not in message and "\r" not in message, message


@PROPERTY
@given(
    lines=st.lists(line_text, max_size=8),
    ending=st.sampled_from(["\n", "\r\n"]),
    final_newline=st.booleans(),
    compressed=st.booleans(),
)
def test_lines_equal_a_plain_byte_split(
    tmp_path: Path, lines: list[str], ending: str, final_newline: bool, compressed: bool
) -> None:
    text = ending.join(lines) + (ending if final_newline and lines else "")
    data = text.encode("utf-8")
    path = tmp_path / ("lines.txt.gz" if compressed else "lines.txt")
    path.write_bytes(gzip.compress(data) if compressed else data)
    assert list(read_lines(path)) == reference_lines(data)


def test_small_files_by_hand(tmp_path: Path) -> None:
    cases: dict[bytes, list[tuple[int, str]]] = {
        b"": [],
        b"\n": [(1, "")],
        b"no newline at the end": [(1, "no newline at the end")],
        b"\n\nthird\n": [(1, ""), (2, ""), (3, "third")],
        b"a\r\nb\n": [(1, "a"), (2, "b")],
        # A lone "\r" (old Mac ending) is not a line break, and other Unicode separators are not
        # either: only "\n" ends a line, so line numbers match what `wc -l` and editors count.
        b"a\rb\n": [(1, "a\rb")],
        "a\u2028b\x85c\x0cd\n".encode(): [(1, "a\u2028b\x85c\x0cd")],
        b"nul\x00inside\n": [(1, "nul\x00inside")],
        b"\xef\xbb\xbf": [(1, "")],  # a BOM alone is an empty first line, not text
    }
    for number, (data, expected) in enumerate(cases.items()):
        path = tmp_path / f"case{number}.txt"
        path.write_bytes(data)
        assert list(read_lines(path)) == expected, data


def test_a_bom_is_removed_from_the_first_line_only(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfone\n\xef\xbb\xbftwo\n")
    # The second BOM is a character inside the text (a zero-width no-break space), kept as such.
    assert list(read_lines(path)) == [(1, "one"), (2, "\ufefftwo")]


@PROPERTY
@given(
    before=st.lists(line_text, max_size=6),
    prefix=line_text,
    bad=st.sampled_from([b"\xff", b"\xe9", b"\xc3(", b"\xed\xa0\x80", b"\x80"]),
    compressed=st.booleans(),
)
def test_the_first_non_utf8_line_is_named_with_its_byte(
    tmp_path: Path, before: list[str], prefix: str, bad: bytes, compressed: bool
) -> None:
    good = "".join(f"{line}\n" for line in before).encode("utf-8")
    data = good + prefix.encode("utf-8") + bad + b"\nafter\n"
    path = tmp_path / ("bad.txt.gz" if compressed else "bad.txt")
    path.write_bytes(gzip.compress(data) if compressed else data)
    bad_line = len(before) + 1
    seen = []
    with pytest.raises(DataError) as info:
        for number, text in read_lines(path):
            seen.append((number, text))
    assert seen == reference_lines(good)  # every line before the bad one was read
    assert_one_line_error(info.value, path, bad_line)
    # The byte position is 1-based within the line: right after the valid UTF-8 prefix.
    assert f"(byte {len(prefix.encode('utf-8')) + 1}:" in str(info.value)


def test_missing_files_and_directories_are_data_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    with pytest.raises(DataError, match="no such file") as info:
        list(read_lines(missing))
    assert_one_line_error(info.value, missing, None)

    folder = tmp_path / "folder.txt"
    folder.mkdir()
    with pytest.raises(DataError, match="is a directory") as info:
        list(read_lines(folder))
    assert_one_line_error(info.value, folder, None)

    gz_folder = tmp_path / "folder.txt.gz"
    gz_folder.mkdir()
    with pytest.raises(DataError, match="is a directory"):
        list(read_lines(gz_folder))

    dangling = tmp_path / "dangling.txt"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no such file"):
        list(read_lines(dangling))


TEXT = b"".join(b"line %d of a compressed file\n" % number for number in range(1, 400))


def corrupted_in_the_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


@pytest.mark.parametrize(
    ("damage", "prefix_is_true"),
    [
        pytest.param(lambda packed: packed[: len(packed) // 2], True, id="truncated"),
        pytest.param(lambda packed: packed[:-4], True, id="length-trailer-cut"),
        # A flipped bit inside the deflate data is only noticed by the CRC at the end, so the
        # lines decoded before that may already be wrong: only the error itself is checked.
        pytest.param(corrupted_in_the_middle, False, id="corrupted"),
        pytest.param(lambda packed: packed + b"trailing garbage", True, id="trailing-garbage"),
        pytest.param(lambda packed: TEXT, True, id="not-gzip-at-all"),
        pytest.param(lambda packed: b"\x1f", True, id="one-byte"),
    ],
)
def test_a_broken_gzip_stream_is_a_data_error_after_the_good_lines(
    tmp_path: Path, damage: Callable[[bytes], bytes], prefix_is_true: bool
) -> None:
    packed = damage(gzip.compress(TEXT))
    # The reference library agrees that the stream is broken.
    with pytest.raises((OSError, EOFError, zlib.error)):
        gzip.decompress(packed)
    path = tmp_path / "broken.txt.gz"
    path.write_bytes(packed)
    seen = []
    with pytest.raises(DataError) as info:
        for number, text in read_lines(path):
            seen.append((number, text))
    if prefix_is_true:
        # Lines read before the damage are the file's true lines, in order.
        assert seen == reference_lines(TEXT)[: len(seen)]
    message = str(info.value)
    assert message.startswith(f"{path}") and "\n" not in message
    assert "cannot read" in message or "not UTF-8" in message


def test_gzip_edge_cases_agree_with_the_gzip_module(tmp_path: Path) -> None:
    members = gzip.compress(b"first member\n") + gzip.compress(b"second member\n")
    cases = {
        "empty.gz": b"",  # gzip.decompress(b"") is b"": an empty file holds no lines
        "members.gz": members,  # concatenated members are one stream (like `cat a.gz b.gz`)
        "empty-member.gz": gzip.compress(b""),
    }
    for name, packed in cases.items():
        path = tmp_path / name
        path.write_bytes(packed)
        assert list(read_lines(path)) == reference_lines(gzip.decompress(packed)), name


def test_read_lines_accepts_str_paths(tmp_path: Path) -> None:
    path = tmp_path / "plain.txt"
    path.write_text("x\n", encoding="utf-8")
    assert list(read_lines(str(path))) == [(1, "x")]


def test_resolve_existing_prefers_the_plain_file_then_gz(tmp_path: Path) -> None:
    plain, packed = tmp_path / "corpus.txt", tmp_path / "corpus.txt.gz"
    assert resolve_existing(plain) is None
    packed.write_bytes(gzip.compress(b"x\n"))
    assert resolve_existing(plain) == packed
    assert resolve_existing(str(plain)) == packed
    plain.write_text("x\n", encoding="utf-8")
    assert resolve_existing(plain) == plain


def test_resolve_existing_skips_directories(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    assert resolve_existing(tmp_path / "corpus") is None
    (tmp_path / "corpus.gz").write_bytes(gzip.compress(b"x\n"))
    assert resolve_existing(tmp_path / "corpus") == tmp_path / "corpus.gz"


def test_an_upper_case_gz_suffix_is_read_as_gzip(tmp_path: Path) -> None:
    path = tmp_path / "LINES.TXT.GZ"
    path.write_bytes(gzip.compress(b"first\nsecond\n"))
    assert list(read_lines(path)) == [(1, "first"), (2, "second")]
