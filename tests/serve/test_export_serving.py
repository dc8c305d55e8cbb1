"""``rnnlab serve`` serves an export folder like a run directory, with the run's translations."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

import rnnlab  # noqa: E402
from rnnlab.export.onnx import export_run  # noqa: E402
from rnnlab.rundir import open_run  # noqa: E402


def test_an_exported_translator_is_served_like_its_run(
    start_server, translator_run, tmp_path_factory
):
    run = open_run(translator_run, device="cpu")
    folder = export_run(run.task, run.model, tmp_path_factory.mktemp("served") / "reverse")
    server = start_server(f"exported={folder}")
    try:
        models = httpx.get(f"{server.url}/v1/models").json()["models"]
        assert [(m["name"], m["task"]) for m in models] == [("exported", "seq2seq")]
        lines = ["a b c d", "", "h g f"]
        body = {"text": lines, "beam": 3, "n_best": 2}
        data = httpx.post(f"{server.url}/v1/models/exported/translate", json=body).json()
        expected = rnnlab.load(translator_run).translate(lines, beam=3, n_best=2)
        assert [t["text"] for t in data["translations"]] == [t.text for t in expected]
        assert [t["score"] for t in data["translations"]] == pytest.approx(
            [t.score for t in expected], abs=1e-4
        )
        refused = httpx.post(f"{server.url}/v1/models/exported/tag", json={"text": ["a"]})
        assert refused.status_code == 404 and "error" in refused.json()
    finally:
        assert server.stop() == 0
