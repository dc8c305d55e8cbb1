"""The web page of ``rnnlab serve`` in a real headless Chromium, and the output of the inference
commands, each against a reference that does not share its code path.

References: the HTTP API answering the same request (for the page), the inference API
(``rnnlab.load(...).translate/tag``) on the lines Python itself reads from the same text (for the
CLI), ``rnnlab translate`` on the same bytes (for the export folder's own ``runtime.py``) and plain
string handling. Model output and error text must reach the page as text, never as markup.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import rnnlab
from rnnlab.data.limits import MAX_LINE_CHARS
from tests.cli_runner import assert_user_error, run_cli

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HAS_EXPORT = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
needs_export = pytest.mark.skipif(not HAS_EXPORT, reason="needs the export extra")
BOM = "\ufeff"
MAX_SENTENCES = 8  # --max-sentences of the shared server in conftest.py
MAX_CHARS = 60  # --max-chars of the shared server


# ---------------------------------------------------------------------------------------------------
# Fixtures: one browser for the module, a fresh page per test


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def open_page(browser: Any, url: str, *, wait_for_models: bool = True) -> Any:
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.script_errors = errors
    page.goto(url)
    if wait_for_models:
        page.wait_for_function("document.querySelectorAll('#model option').length > 0")
    return page


@pytest.fixture
def page(browser, server):
    page = open_page(browser, server.url)
    yield page
    page.close()


@pytest.fixture(scope="module")
def api(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def exports(lm_run, tmp_path_factory, request) -> dict[str, Path]:
    """The session's exported tagger and the language model exported here. (An exported
    translator takes half a minute to write on a small machine; tests/export and
    tests/inference/test_surface_hunt.py hold it against its run.)"""
    if not HAS_EXPORT:
        pytest.skip("needs the export extra")
    from rnnlab.export.onnx import export_run
    from rnnlab.rundir import open_run

    run = open_run(lm_run, device="cpu")
    lm = export_run(run.task, run.model, tmp_path_factory.mktemp("page_exports") / "tm")
    return {"pos": request.getfixturevalue("exported_tagger"), "tm": lm}


@pytest.fixture(scope="module")
def export_server(start_server, exports):
    return start_server(*(f"{name}={path}" for name, path in exports.items()))


def translate_in_page(page: Any, model: str, text: str, *, beam: int = 1, n_best: int = 1) -> None:
    page.select_option("#model", model)
    page.fill("#translate-input", text)
    page.fill("#beam", str(beam))
    page.fill("#n-best", str(n_best))
    page.click("#translate-button")


def wait_for_answer(page: Any, selector: str) -> None:
    """Until the output holds something (elements, or the text a generation is) or the error box
    is shown (whichever the answer gave)."""
    page.wait_for_function(
        f"document.querySelector('{selector}').childElementCount > 0"
        f" || document.querySelector('{selector}').textContent.length > 0"
        " || !document.getElementById('error').hidden"
    )


def shown_translations(page: Any) -> list[dict[str, Any]]:
    return page.evaluate(
        """() => [...document.querySelectorAll('#translate-output .translation')].map((b) => ({
            text: b.querySelector('.text').textContent,
            score: b.querySelector('.score').textContent,
            n_best: [...b.querySelectorAll('ol.nbest li')].map((li) => li.firstChild
                ? li.childNodes[0].textContent : ''),
        }))"""
    )


def wait_for_error(page: Any, previous: str = "") -> str:
    """The error box's text once it is shown with a message other than ``previous``."""
    page.wait_for_function(
        "([previous]) => { const box = document.getElementById('error');"
        " return !box.hidden && box.textContent !== previous; }",
        arg=[previous],
    )
    return page.locator("#error").text_content()


def error_of(response: httpx.Response) -> str:
    assert response.status_code >= 400, response.text
    return response.json()["error"]


# Both clicks are dispatched before either answer comes back; the function resolves once every
# request the page made has been answered and the page has handled the answers.
DOUBLE_CLICK = """async (button) => {
    const fetches = [], bodies = [];
    const fetch = window.fetch, json = Response.prototype.json;
    window.fetch = (...args) => { const p = fetch(...args); fetches.push(p); return p; };
    Response.prototype.json = function () { const p = json.call(this); bodies.push(p); return p; };
    const tick = () => new Promise((resolve) => setTimeout(resolve, 0));
    try {
        document.getElementById(button).click();
        document.getElementById(button).click();
        await Promise.allSettled(fetches);
        await tick();
        await Promise.allSettled(bodies);
        await tick();
    } finally {
        window.fetch = fetch;
        Response.prototype.json = json;
    }
    return fetches.length;
}"""


# ---------------------------------------------------------------------------------------------------
# The page against the HTTP API


def test_page_translations_and_n_best_equal_the_api(page, api):
    lines = ["a b c d", "", "h g", "e f a"]
    translate_in_page(page, "reverse", "\n".join(lines), beam=3, n_best=2)
    wait_for_answer(page, "#translate-output")
    body = {"text": lines, "beam": 3, "n_best": 2, "attention": True}
    want = api.post("/v1/models/reverse/translate", json=body).json()["translations"]
    shown = shown_translations(page)
    assert [s["text"] for s in shown] == [t["text"] for t in want]
    assert [s["score"] for s in shown] == [f"{t['score']:.3f}" for t in want]
    assert [s["n_best"] for s in shown] == [[a["text"] for a in t.get("n_best", [])] for t in want]
    assert page.locator("#error").is_hidden()
    assert page.script_errors == []


def test_model_markup_in_the_heatmap_is_text_not_html(page, api):
    # "<eos>" ends every output row and column, "<unk>" stands for an unseen source word: both
    # look like HTML tags and must be shown as written.
    translate_in_page(page, "reverse", "a zz b")
    wait_for_answer(page, "#translate-output")
    want = api.post(
        "/v1/models/reverse/translate", json={"text": ["a zz b"], "attention": True}
    ).json()["translations"][0]["attention"]
    heatmap = page.locator("#translate-output table.heatmap")
    assert heatmap.locator("thead th").all_text_contents() == ["", *want["src_tokens"]]
    assert heatmap.locator("tbody th").all_text_contents() == want["out_tokens"]
    assert "<unk>" in want["src_tokens"] and "<eos>" in want["out_tokens"]
    assert page.locator("#translate-output unk, #translate-output eos").count() == 0


def test_tag_page_shows_markup_and_unicode_words_as_text(page, api):
    lines = ['<img src=x onerror="window.hacked=1">', "שלום עולם", "السلام عليكم 👍🏽 naïve", ""]
    page.select_option("#model", "pos")
    page.fill("#tag-input", "\n".join(lines))
    page.click("#tag-button")
    wait_for_answer(page, "#tag-output")
    want = api.post("/v1/models/pos/tag", json={"text": [s for s in lines if s.strip()]}).json()
    shown = page.evaluate(
        """() => [...document.querySelectorAll('#tag-output .tagged')].map((line) =>
            [...line.querySelectorAll('.token')].map((t) =>
                [t.childNodes[0].textContent, t.querySelector('sub').textContent]))"""
    )
    assert shown == [
        [list(p) for p in zip(s["tokens"], s["tags"], strict=True)] for s in want["sentences"]
    ]
    assert [w for sentence in shown for w, _ in sentence] == " ".join(lines).split()
    assert page.locator("#tag-output img").count() == 0
    assert page.evaluate("window.hacked") is None
    assert page.script_errors == []


def test_an_error_message_with_markup_is_shown_as_text(page, api):
    prefix = "<b>é</b>"
    page.select_option("#model", "tm")
    page.fill("#prefix", prefix)
    page.fill("#length", "5")
    page.click("#generate-button")
    shown = wait_for_error(page)
    want = error_of(
        api.post("/v1/models/tm/generate", json={"prefix": prefix, "length": 5, "temperature": 0})
    )
    assert shown == want and "<" in want
    assert page.locator("#error *").count() == 0
    assert page.locator("#generate-output").text_content() == ""


def test_greedy_generation_in_the_page_equals_the_api(page, api):
    page.select_option("#model", "tm")
    page.fill("#prefix", "the lazy")
    page.fill("#length", "12")
    page.fill("#temperature", "0")
    page.click("#generate-button")
    page.wait_for_function("document.getElementById('generate-output').textContent !== ''")
    body = {"prefix": "the lazy", "length": 12, "temperature": 0}
    want = api.post("/v1/models/tm/generate", json=body).json()["text"]
    assert page.locator("#generate-output").text_content() == want


def test_too_many_sentences_and_too_long_lines_show_the_api_errors(page, api):
    lines = [f"a b {c}" for c in "abcdefgh"] + ["c d"]  # one more than --max-sentences
    translate_in_page(page, "reverse", "\n".join(lines))
    shown = wait_for_error(page)
    want = error_of(api.post("/v1/models/reverse/translate", json={"text": lines}))
    assert shown == want and "9 sentences" in want
    assert page.locator("#translate-output .translation").count() == 0

    long_line = "a " * MAX_CHARS
    translate_in_page(page, "reverse", long_line)
    shown = wait_for_error(page, want)
    want = error_of(api.post("/v1/models/reverse/translate", json={"text": [long_line]}))
    assert shown == want and "the limit is 60" in want

    # A body over --max-request-bytes (2048): refused before it is parsed.
    translate_in_page(page, "reverse", "\n".join(["é" * 200] * 8))
    assert "the limit is 2048" in wait_for_error(page, want)
    # A good request afterwards hides the error and shows its answer.
    translate_in_page(page, "reverse", "a b")
    page.wait_for_selector("#translate-output .translation")
    assert page.locator("#error").is_hidden()
    assert page.locator("#translate-output .translation .text").all_text_contents() == ["b a"]


@pytest.mark.parametrize(
    "answer,shown",
    [
        ({"status": 503, "json": {"error": "model 'reverse' is busy; retry shortly"}},
         "model 'reverse' is busy; retry shortly"),
        ({"status": 502, "body": "<html><body>Bad gateway</body></html>",
          "content_type": "text/html"}, "HTTP 502"),
        (None, "the server did not answer"),
    ],
)  # fmt: skip
def test_server_and_network_failures_are_shown_and_clear_the_old_answer(page, answer, shown):
    translate_in_page(page, "reverse", "a b")
    page.wait_for_selector("#translate-output .translation")

    def reply(route: Any) -> None:
        if answer is None:
            route.abort()
        else:
            route.fulfill(**answer)

    page.route("**/v1/models/reverse/translate", reply)
    page.click("#translate-button")
    assert shown in wait_for_error(page)
    assert page.locator("#translate-output .translation").count() == 0
    assert page.script_errors == []


@needs_export
def test_the_page_on_exported_models_shows_what_it_shows_for_their_runs(
    browser, server, export_server
):
    results = []
    for url in (server.url, export_server.url):
        page = open_page(browser, url)
        try:
            page.select_option("#model", "pos")
            tag_info = page.locator("#model-info").text_content()
            page.fill("#tag-input", "The dog ate the apple .\n\nשלום 👍")
            page.click("#tag-button")
            wait_for_answer(page, "#tag-output")
            tags = page.locator("#tag-output .token").all_text_contents()
            legend = page.locator("#tag-legend .token").all_text_contents()
            page.select_option("#model", "tm")
            lm_info = page.locator("#model-info").text_content()
            page.fill("#prefix", "the quick")
            page.fill("#length", "20")
            page.fill("#temperature", "0")
            page.click("#generate-button")
            page.wait_for_function("document.getElementById('generate-output').textContent")
            text = page.locator("#generate-output").text_content()
            results.append((tag_info, tags, legend, lm_info, text, page.script_errors))
        finally:
            page.close()
    assert results[0] == results[1]
    assert len(results[0][1]) == 8 and results[0][4].startswith("the quick brown fox")


# ---------------------------------------------------------------------------------------------------
# Page defects


def test_a_final_newline_in_the_translate_box_is_not_one_more_sentence(page, translator_run):
    lines = [f"a b {c}" for c in "abcdef"]  # exactly --max-queue, the tighter limit here
    text = "\n".join(lines) + "\n"  # as pasted from a file or typed with a final Enter
    translate_in_page(page, "reverse", text)
    wait_for_answer(page, "#translate-output")
    # What `rnnlab translate` (and Python's own line reading) make of the same text.
    want = [t.text for t in rnnlab.load(translator_run, device="cpu").translate(text.splitlines())]
    assert page.locator("#error").is_hidden(), page.locator("#error").text_content()
    assert page.locator("#translate-output .translation .text").all_text_contents() == want


@pytest.mark.parametrize("panel", ["translate", "tag"])
def test_a_double_click_shows_each_answer_once(page, panel):
    if panel == "translate":
        page.select_option("#model", "reverse")
        page.fill("#translate-input", "a b c\nd e")
        selector = "#translate-output .translation"
    else:
        page.select_option("#model", "pos")
        page.fill("#tag-input", "The dog ate .\nIt was good .")
        selector = "#tag-output .tagged"
    requests = page.evaluate(DOUBLE_CLICK, f"{panel}-button")
    assert requests >= 1
    assert page.locator(selector).count() == 2
    assert page.locator("#error").is_hidden()


@contextlib.contextmanager
def loading_server(translator_run: Path) -> Iterator[tuple[str, threading.Event]]:
    """An in-process server whose one model stays loading until the event is set."""
    import uvicorn

    from rnnlab.serve.app import create_app
    from rnnlab.serve.metrics import ServeMetrics
    from rnnlab.serve.models import ModelRegistry, ModelSpec
    from rnnlab.serve.server import _Server, bind
    from rnnlab.serve.settings import ServeSettings

    release = threading.Event()

    def slow_load(path: Path) -> Any:
        release.wait(60)
        return rnnlab.load(path, device="cpu")

    settings, metrics = ServeSettings(), ServeMetrics()
    registry = ModelRegistry(
        [ModelSpec("reverse", translator_run)], settings=settings, metrics=metrics, loader=slow_load
    )
    sock = bind("127.0.0.1", 0)
    host, port = sock.getsockname()[:2]
    server = _Server(uvicorn.Config(create_app(registry, settings, metrics), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + 30  # only keeps a broken server from hanging the suite
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            assert time.monotonic() < deadline, "the loading server did not start"
            time.sleep(0.02)
        yield url, release
    finally:
        release.set()
        server.should_exit = True
        thread.join(30)


def test_a_page_opened_while_the_model_loads_says_so(browser, translator_run):
    with loading_server(translator_run) as (url, release):
        listed = httpx.get(f"{url}/v1/models").json()["models"]
        assert listed == [{"name": "reverse", "ready": False}]
        page = open_page(browser, url)
        try:
            # Run the page's own handler again, where its exception reaches the test.
            state = page.evaluate(
                """() => { selectModel(); return [document.getElementById('model-info').textContent,
                    document.getElementById('error').textContent]; }"""
            )
            assert "loading" in " ".join(state)
            assert page.script_errors == []
            release.set()  # the page asks again until the model is ready, then offers it
            page.wait_for_selector("#translate-panel", state="visible", timeout=30_000)
            assert page.script_errors == []
        finally:
            page.close()


def test_generate_with_the_page_defaults_works_on_a_server_with_small_limits(page, api):
    page.select_option("#model", "tm")
    page.fill("#prefix", "the")
    page.fill("#temperature", "0")
    page.click("#generate-button")
    wait_for_answer(page, "#generate-output")
    assert api.post("/v1/models/tm/generate", json={"prefix": "the"}).status_code == 200
    assert page.locator("#error").is_hidden(), page.locator("#error").text_content()


# ---------------------------------------------------------------------------------------------------
# Command-line output against the inference API and the HTTP API


def python_lines(data: bytes) -> list[str]:
    """The lines of ``data`` as the README promises them to the commands: UTF-8, a leading byte
    order mark dropped, split at "\\n" only, line ends (CRLF too) removed, cut to the limit."""
    text = data.decode("utf-8").removeprefix(BOM)
    pieces = text.split("\n")
    if pieces[-1] == "":
        pieces.pop()
    return [p.removesuffix("\r")[:MAX_LINE_CHARS] for p in pieces]


ODD_INPUT = (
    BOM + "a b c\r\n"
    "\n"
    "   \t \n"
    "h g f e\r\n"
    "a\u2028b\x0cc\x85d\n"  # separators str.splitlines would break at: one line here
    "שלום a b 👍\n"
    + "a b "
    * 3000  # over the line limit
    + "\n"
    "e\r\n"
    "last line without a newline"
).encode()


@pytest.mark.parametrize("flags", [[], ["--beam", "3", "--n-best", "2"]])
def test_translate_prints_one_line_per_input_line_like_the_library(
    translator_run, monkeypatch, capsys, flags
):
    result = run_cli(monkeypatch, capsys, "translate", translator_run, *flags, stdin=ODD_INPUT)
    assert result.code == 0, result.err
    lines = python_lines(ODD_INPUT)
    translator = rnnlab.load(translator_run, device="cpu")
    beam = 3 if flags else translator.default_beam
    want = translator.translate(lines, beam=beam, n_best=2 if flags else 1)
    assert result.out == "".join(t.line() + "\n" for t in want)
    assert result.out.count("\n") == len(lines) == 9
    notices = result.err.splitlines()
    assert notices == [
        f"rnnlab: notice: <stdin>:7: line of 12,000 characters cut to the first "
        f"{MAX_LINE_CHARS:,} (the input line limit)"
    ]


def test_translate_keeps_order_across_many_small_batches(translator_run, monkeypatch, capsys):
    import random

    rng = random.Random(5)
    lines = [" ".join(rng.choice("abcdefgh") for _ in range(rng.randint(0, 7))) for _ in range(70)]
    stdin = "\n".join(lines) + "\n"
    result = run_cli(
        monkeypatch, capsys, "translate", translator_run, "--batch-size", "1", stdin=stdin
    )
    assert result.code == 0, result.err
    translator = rnnlab.load(translator_run, device="cpu")
    want = translator.translate(lines, beam=translator.default_beam)
    assert result.out.splitlines() == [t.text for t in want]


def test_translate_cli_equals_the_http_api(translator_run, api, monkeypatch, capsys):
    lines = ["a b c d", "", "h g", "שלום", "e e f"]
    result = run_cli(
        monkeypatch, capsys, "translate", translator_run, "--beam", "4", "--n-best", "3",
        stdin="\n".join(lines) + "\n",
    )  # fmt: skip
    answer = api.post(
        "/v1/models/reverse/translate", json={"text": lines, "beam": 4, "n_best": 3}
    ).json()["translations"]
    want = [
        "\t".join(a["text"] for a in t["n_best"]) if t.get("n_best") else t["text"] for t in answer
    ]
    assert result.out.splitlines() == want


def test_tag_cli_equals_the_library_and_the_http_api(tagger_run, api, monkeypatch, capsys):
    result = run_cli(monkeypatch, capsys, "tag", tagger_run, stdin=ODD_INPUT)
    assert result.code == 0, result.err
    lines = python_lines(ODD_INPUT)
    want = rnnlab.load(tagger_run, device="cpu").tag(lines)
    assert result.out == "".join(s.line() + "\n" for s in want)
    short = [line for line in lines if len(line) <= MAX_CHARS]
    answer = []
    for half in (short[:4], short[4:]):  # the shared server queues at most 6 sentences
        answer += api.post("/v1/models/pos/tag", json={"text": half}).json()["sentences"]
    by_line = dict(zip(lines, result.out.splitlines(), strict=True))
    assert [by_line[line] for line in short] == [
        " ".join(f"{w}/{t}" for w, t in zip(s["tokens"], s["tags"], strict=True)) for s in answer
    ]


def test_tag_conllu_changes_only_the_tag_column(tagger_run, monkeypatch, capsys):
    sentences = [
        ["# sent_id = 1", "# text = The dog", "1\tThe\tthe\t_\tDT\t_\t2\tdet\t_\t_",
         "2\tdog\tdog\t_\tNN\t_\t0\troot\t_\tSpaceAfter=No"],
        ["# only a comment"],
        ["1-2\tdon't\t_\t_\t_\t_\t_\t_\t_\t_", "1\tdo\tdo\t_\t_\t_\t0\troot\t_\t_",
         "2\tn't\tnot\t_\t_\t_\t1\tadvmod\t_\t_", "2.1\tx\t_\t_\t_\t_\t_\t_\t_\t_",
         "3\tשלום\t_\t_\t_\t_\t1\tobj\t_\t_"],
    ]  # fmt: skip
    stdin = BOM + "\r\n\r\n".join("\r\n".join(s) for s in sentences) + "\r\n"
    result = run_cli(monkeypatch, capsys, "tag", tagger_run, "--format", "conllu", stdin=stdin)
    assert result.code == 0, result.err
    words = [
        [line.split("\t")[1] for line in s if line.split("\t")[0].isdigit()] for s in sentences
    ]
    tags = iter(rnnlab.load(tagger_run, device="cpu").tag(words))
    want = []
    for sentence in sentences:
        tagged = next(tags).tags
        out = []
        for line in sentence:
            columns = line.split("\t")
            if columns[0].isdigit():
                columns[3] = tagged.pop(0)
            out.append("\t".join(columns))
        want.append("".join(f"{line}\n" for line in out) + "\n")
    assert result.out == "".join(want)


@pytest.mark.parametrize(
    "argv,stdin,fragments",
    [
        (["translate", "{translator}"], b"a b\nc d\ne \xff f\ng\n", ["<stdin>:3:", "not UTF-8"]),
        (["tag", "{tagger}"], BOM.encode() + b"a\r\nb\r\n\xc3\n", ["<stdin>:3:", "not UTF-8"]),
        (["tag", "{tagger}", "--format", "conllu"],
         b"# c\n1\tA\t_\t_\t_\t_\t_\t_\t_\t_\n\n\n# d\n1\tB\t_\t_\t_\t_\t_\t_\t_\n",
         ["<stdin>:6:", "expected 10 tab-separated CoNLL-U columns, found 9"]),
        (["tag", "{tagger}", "--format", "conllu"],
         b"1\tA\t_\t_\t_\t_\t_\t_\t_\t_\r\n3\tB\t_\t_\t_\t_\t_\t_\t_\t_\r\n",
         ["<stdin>:2:", "word ID 3 out of sequence (expected 2)"]),
        (["translate", "{tagger}"], b"a\n", ["translate needs a seq2seq run, this is a tagger run"]),
        (["tag", "{translator}"], b"a\n", ["tag needs a tagger run, this is a seq2seq run"]),
        (["translate", "{translator}", "--n-best", "0"], b"a\n", ["--n-best", "must be 1 or more"]),
        (["translate", "{translator}", "--beam", "x"], b"a\n", ["--beam", "invalid count value"]),
        (["generate", "{lm}", "--prefix", "the", "--length", "-1"], b"",
         ["--length must be 0 or more"]),
        (["generate", "{lm}", "--prefix", "Ωthe"], b"", ["never seen in training", "'Ω'"]),
    ],
)  # fmt: skip
def test_mistakes_are_one_line_errors_with_status_2(
    translator_run, tagger_run, lm_run, monkeypatch, capsys, argv, stdin, fragments
):
    paths = {"translator": translator_run, "tagger": tagger_run, "lm": lm_run}
    args = [a.format(**paths) for a in argv]
    result = run_cli(monkeypatch, capsys, *args, stdin=stdin)
    assert_user_error(result, *fragments)


def test_generate_cli_equals_the_library(lm_run, monkeypatch, capsys):
    result = run_cli(
        monkeypatch, capsys, "generate", lm_run, "--prefix", "the lazy", "--length", "15"
    )
    assert result.code == 0, result.err
    want = rnnlab.load(lm_run, device="cpu").generate("the lazy", length=15, temperature=0)
    assert result.out == want + "\n"


@needs_export
@pytest.mark.parametrize(
    "name,argv",
    [
        ("pos", ["tag"]),
        ("pos", ["tag", "--batch-size", "1"]),
        ("tm", ["generate", "--prefix", "the lazy", "--length", "30"]),
        ("tm", ["generate", "--prefix", "the lazy", "--length", "0"]),
    ],
)
def test_an_export_prints_what_its_run_prints(
    exports, tagger_run, lm_run, name, argv, monkeypatch, capsys
):
    run_dir = {"pos": tagger_run, "tm": lm_run}[name]
    command, *flags = argv
    from_run = run_cli(monkeypatch, capsys, command, run_dir, *flags, stdin=ODD_INPUT)
    from_export = run_cli(monkeypatch, capsys, command, exports[name], *flags, stdin=ODD_INPUT)
    assert from_run.code == from_export.code == 0
    assert from_export.out == from_run.out and from_run.out
    assert from_export.err == from_run.err


@needs_export
def test_runtime_py_prints_what_rnnlab_prints_for_a_file_with_a_bom(
    exports, tmp_path, monkeypatch, capsys
):
    data = (BOM + "The dog barked .\nIt was late .\n").encode()
    want = run_cli(monkeypatch, capsys, "tag", exports["pos"], stdin=data)
    assert want.code == 0 and want.out.startswith("The/")
    folder = exports["pos"]
    standalone = subprocess.run(
        [sys.executable, str(folder / "runtime.py"), str(folder)],
        input=data,
        capture_output=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert standalone.returncode == 0, standalone.stderr
    assert standalone.stdout.decode("utf-8") == want.out
