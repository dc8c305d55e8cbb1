"""Edge cases of the multi-process carry and setup, strict JSON metrics, resume refusals, vector
files, tagger ensembles, export runtimes and the page's request tickets. References are independent where possible: a
slice of the global state, hand-permuted CRF scores, the run's own (eager) output for an export.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from rnnlab.config import from_dict, to_dict
from rnnlab.data.embeddings import iter_vectors, match_vocabulary
from rnnlab.errors import ConfigError, DataError, RnnlabError
from rnnlab.inference.ensemble import decode_mean, mean_crf
from rnnlab.metrics.bleu import corpus_bleu_with_signature
from rnnlab.models.crf import LinearChainCRF
from rnnlab.plotting import _series
from rnnlab.rundir import read_run_config, refuse_vocabulary_changes, task_class
from rnnlab.tasks.lm import LMBatch
from rnnlab.training.distributed import DistributedContext
from rnnlab.training.trainer import MetricsLog
from rnnlab.tuning.space import load_space

REPO = Path(__file__).resolve().parents[1]
APP_JS = REPO / "src" / "rnnlab" / "serve" / "static" / "app.js"
CPU = torch.device("cpu")


def strict_loads(line: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


# -- tiny runs shared by the export and generation tests ------------------------------------------


@pytest.fixture(scope="module")
def char_lm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Path]:
    """A character-level LM whose output layer prefers <eos> above everything: only a ban keeps
    it out of a generation."""
    from tests.export.runs import make_run

    root = tmp_path_factory.mktemp("char_lm")
    config = {
        "data": {
            "train": str(REPO / "data/timemachine/train.txt"),
            "valid": "",
            "max_examples": 40,
            "tokenizer": "char",
        },
        "model": {"embed_size": 8, "hidden_size": 12, "num_layers": 1},
        "train": {"batch_size": 8, "bptt": 16, "lr": 0.01},
    }
    task, model = make_run(root, "lm", config, train_steps=2)
    with torch.no_grad():
        model.output.bias[task.vocab.eos_id] += 50.0
    return task, model, root


@pytest.fixture(scope="module")
def char_lm_export(char_lm: tuple[Any, Any, Path]) -> Path:
    pytest.importorskip("onnxruntime")
    from rnnlab.export.onnx import export_run

    task, model, root = char_lm
    return export_run(task, model, root / "export")


def test_char_lm_generation_never_emits_eos_and_the_export_agrees(char_lm, char_lm_export):
    from rnnlab.export.runtime import load

    task, model, _ = char_lm
    eager = task.generate(model, "the", CPU, length=8, greedy=True)[0]
    assert "<eos>" not in eager and len(eager) == 3 + 8
    assert load(char_lm_export).generate("the", length=8, temperature=0) == eager


def test_an_old_char_lm_export_generates_what_its_run_generates(char_lm, char_lm_export, tmp_path):
    from rnnlab.export.runtime import MANIFEST, load

    task, model, _ = char_lm
    old = shutil.copytree(char_lm_export, tmp_path / "old")
    manifest = json.loads((old / MANIFEST).read_text(encoding="utf-8"))
    del manifest["never_generated"]  # as written before the key existed
    (old / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    eager = task.generate(model, "the", CPU, length=8, greedy=True)[0]
    assert load(old).generate("the", length=8, temperature=0) == eager


def test_lm_generation_runs_without_autograd(char_lm):
    task, model, _ = char_lm
    grad_enabled: list[bool] = []
    hook = model.register_forward_hook(
        lambda module, args, output: grad_enabled.append(torch.is_grad_enabled())
    )
    try:
        task.generate(model, "the time", CPU, length=3, greedy=True)
    finally:
        hook.remove()
    assert grad_enabled and not any(grad_enabled)


# -- seq2seq: textbook cut and attention rows, eager and exported ---------------------------------


def test_textbook_cut_and_max_len_attention_rows_agree_in_eager_and_export(tmp_path):
    pytest.importorskip("onnxruntime")
    from rnnlab.export.onnx import export_run
    from rnnlab.export.runtime import load
    from rnnlab.inference import Translator
    from tests.export.runs import make_run, reverse_lines, seq2seq_config

    train = tmp_path / "train.tsv"
    train.write_text("\n".join(reverse_lines(200, seed=1)) + "\n", encoding="utf-8")
    config = seq2seq_config(train, attention="bahdanau")
    config["data"]["num_steps"] = 4
    config["decode"]["max_len"] = 3
    task, model = make_run(tmp_path, "seq2seq", config, train_steps=3)
    runtime = load(export_run(task, model, tmp_path / "export"))
    sentence = "a b c d e f"
    src = task.encode_source(sentence)
    assert len(src) == 4  # cut to num_steps, <eos> cut away with the rest
    [eager] = Translator(task=task, model=model, device=CPU).translate([sentence], attention=True)
    [onnx] = runtime.translate([sentence], attention=True)
    assert onnx.text == eager.text
    for result in (eager, onnx):
        attention = result.attention
        assert len(attention.src_tokens) == 4
        assert len(attention.weights) == len(attention.out_tokens)
        ended = len(result.tokens) < 3
        assert (attention.out_tokens[-1:] == ["<eos>"]) == ended
    assert onnx.attention.out_tokens == eager.attention.out_tokens
    torch.testing.assert_close(
        torch.as_tensor(onnx.attention.weights),
        torch.as_tensor(eager.attention.weights),
        atol=1e-4,
        rtol=0,
    )


# -- resume: vocabulary keys --------------------------------------------------------------------


def _lm_run_dir(root: Path, **model: Any) -> Path:
    run = root / "run"
    run.mkdir()
    cfg = from_dict(
        task_class("lm").config_class,
        {"task": "lm", "data": {"train": "train.txt", "valid": ""}},
    )
    data = to_dict(cfg)
    data["model"].update(model)
    (run / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return run


def test_resume_overrides_equal_to_the_saved_vocabulary_keys_are_accepted(tmp_path):
    run = _lm_run_dir(tmp_path)
    same = read_run_config(run, ["data.tokenizer=char", "data.min_freq=1", "train.lr=0.5"])
    refuse_vocabulary_changes(run, same)
    changed = read_run_config(run, ["data.min_freq=3"])
    with pytest.raises(RnnlabError, match=r"data\.min_freq"):
        refuse_vocabulary_changes(run, changed)


def test_seq2seq_tsv_langs_given_again_is_not_a_change(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cfg = from_dict(task_class("seq2seq").config_class, {"task": "seq2seq"})
    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)), encoding="utf-8")
    again = read_run_config(run, ["data.tsv_langs=[en, fr]"])
    refuse_vocabulary_changes(run, again)
    with pytest.raises(RnnlabError, match="tsv_langs"):
        refuse_vocabulary_changes(run, read_run_config(run, ["data.tsv_langs=[fr, en]"]))


def test_a_resume_that_fixes_a_config_saved_before_a_new_check_is_not_refused(tmp_path):
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("the 0.1 0.2\n", encoding="utf-8")
    # Saved before LMConfig refused tie_weights with freeze_embeddings.
    run = _lm_run_dir(
        tmp_path,
        embed_size=2,
        hidden_size=2,
        pretrained_embeddings=str(vectors),
        tie_weights=True,
        freeze_embeddings=True,
    )
    fixed = read_run_config(run, ["model.freeze_embeddings=false"])
    assert fixed.model.tie_weights and not fixed.model.freeze_embeddings
    refuse_vocabulary_changes(run, fixed)  # no data.* key changed


# -- strict JSON metrics and their readers ----------------------------------------------------


def test_metrics_log_writes_null_for_nan_and_readers_keep_the_gap(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.append({"step": 1, "train_loss": 2.0, "lr": 0.1})
    log.append({"step": 2, "train_loss": math.nan, "lr": 0.1, "nested": {"ppl": math.inf}})
    log.append({"step": 3, "train_loss": 1.5, "lr": 0.1})
    log.truncate_after(2)
    lines = (tmp_path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    parsed = [strict_loads(line) for line in lines]
    assert [r["step"] for r in parsed] == [1, 2]
    assert parsed[1]["train_loss"] is None and parsed[1]["nested"] == {"ppl": None}
    xs, ys = _series(log.read(), "train_loss", "step")
    assert xs == [1, 2] and ys[0] == 2.0 and math.isnan(ys[1])


def test_an_empty_corpus_scores_bleu_zero():
    score, signature = corpus_bleu_with_signature([], [])
    assert score == 0.0 and "nrefs:1" in signature
    assert corpus_bleu_with_signature(["a b c d"], ["a b c d"])[0] == pytest.approx(100.0)


# -- tuning spaces ---------------------------------------------------------------------------


def _space(tmp_path: Path, spec: dict[str, Any]) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["lm-timemachine", "seq2seq-multi30k", "tagger-ewt"])
def test_shipped_spaces_still_load(name):
    task = name.split("-")[0]
    assert load_space(REPO / "configs/spaces" / f"{name}.yaml", task_class(task).config_class)


def test_space_refusals_and_acceptances(tmp_path):
    lm = task_class("lm").config_class
    ok = {
        "train.lr": {"type": "float", "low": 0.1, "high": 0.5, "step": 0.2},
        "model.hidden_size": {"type": "int", "low": 16, "high": 256, "log": True, "step": 1},
    }
    specs = load_space(_space(tmp_path, ok), lm)
    assert sorted(s.key for s in specs) == ["model.hidden_size", "train.lr"]
    refused = [
        {"data.max_len": {"type": "int", "low": 10, "high": 20}},  # an LM never reads it
        {"train.bucket": {"type": "categorical", "choices": [True, False]}},
        {"train.lr": {"type": "float", "low": 0.1, "high": 0.6, "step": 0.2}},  # off the grid
        {"train.lr": {"type": "categorical", "choices": [0.1], "low": 0.1}},  # ignored field
    ]
    for spec in refused:
        with pytest.raises(ConfigError):
            load_space(_space(tmp_path, spec), lm)


# -- embeddings -------------------------------------------------------------------------------


def _vectors(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vectors.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_glove_840b_phrases_and_word2vec_trailing_spaces_are_read(tmp_path):
    glove = _vectors(tmp_path, "the 0.1 0.2\n. . . 0.3 0.4\nat name@domain.com 0.5 0.6\n")
    assert [w for w, _ in iter_vectors(glove)] == ["the", ". . .", "at name@domain.com"]
    word2vec = tmp_path / "w2v.txt"
    word2vec.write_text("2 2\nthe 0.1 0.2 \nof 0.3 0.4 \n", encoding="utf-8")
    assert [w for w, _ in iter_vectors(word2vec)] == ["the", "of"]
    too_many = _vectors(tmp_path, "the 0.1 0.2\ndog 3 0.3 0.4\n")
    with pytest.raises(DataError, match="3 numbers"):
        list(iter_vectors(too_many))


@pytest.mark.parametrize("phrase", ["to Infinity", "Baby nan"])
def test_a_glove_phrase_ending_in_a_word_float_parses_is_read(tmp_path, phrase):
    path = _vectors(tmp_path, f"the 0.1 0.2\n{phrase} 0.3 0.4\n")
    assert [w for w, _ in iter_vectors(path)] == ["the", phrase]


def test_an_added_word_takes_its_exact_spellings_vector(tmp_path):
    path = _vectors(tmp_path, "the 1 1\nZebra 2 2\nzebra 3 3\n")
    match = match_vocabulary(
        path,
        ["<unk>", "the"],
        specials=["<unk>"],
        embed_size=2,
        extend=True,
        normalise=str.lower,
    )
    assert match.words == ["<unk>", "the", "zebra"]
    assert match.vectors[2].tolist() == [3.0, 3.0]
    assert match.vectors[1].tolist() == [1.0, 1.0]


# -- ensembles: tag sets in another order -----------------------------------------------------


def test_mean_crf_puts_each_members_scores_in_the_ensembles_tag_order():
    torch.manual_seed(0)
    first = LinearChainCRF(4)
    for name in ("transitions", "start_transitions", "end_transitions"):
        getattr(first, name).data.normal_()
    order = torch.tensor([2, 0, 3, 1])  # the second member's id of each ensemble tag
    second = LinearChainCRF(4)
    with torch.no_grad():
        for i in range(4):
            second.start_transitions[order[i]] = first.start_transitions[i]
            second.end_transitions[order[i]] = first.end_transitions[i]
            for j in range(4):
                second.transitions[order[i], order[j]] = first.transitions[i, j]
    identity = torch.arange(4)
    members = [SimpleNamespace(crf=first), SimpleNamespace(crf=second), SimpleNamespace(crf=None)]
    mean = mean_crf(members, [identity, order, identity])  # type: ignore[arg-type]
    assert mean is not None
    for name in ("transitions", "start_transitions", "end_transitions"):
        expected = getattr(first, name) * 2 / 3  # the softmax member adds zero
        torch.testing.assert_close(getattr(mean, name), expected)
    # Emissions permuted as TaggerEnsemble.decode does: the same Viterbi path as one member.
    emissions = torch.randn(1, 5, 4)
    lengths = torch.tensor([5])
    theirs = torch.empty_like(emissions)  # the second member's emissions, in its own tag ids
    theirs[..., order] = emissions
    pair = mean_crf(members[:2], [identity, order])  # type: ignore[arg-type]
    got = decode_mean([emissions, theirs[..., order]], pair, lengths)
    assert got.tolist() == first.viterbi(emissions, lengths).tolist()


# -- carried state under several processes ----------------------------------------------------


def _gather_worker(rank: int, world: int, store: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        context = DistributedContext(rank=rank, world_size=world)
        for rows in (2, 3, 7):
            h = torch.arange(2 * rows * 3, dtype=torch.float32).reshape(2, rows, 3)
            state = (h, -h)
            inputs = torch.arange(rows * 2).reshape(rows, 2)
            _, has_rows = context.shard(LMBatch(inputs, inputs))
            expected_rows = slice(rank, None, world) if rank < rows else slice(0, 1)
            local = context.local_state(state)
            assert torch.equal(local[0], h[:, expected_rows]), (rank, rows)
            gathered = context.gather_state(local, has_rows)
            assert torch.equal(gathered[0], h) and torch.equal(gathered[1], -h), (rank, rows)
            assert torch.equal(context.gather_state(local[0], has_rows), h)
    finally:
        dist.destroy_process_group()


def test_carried_state_gathers_in_global_row_order_also_with_fewer_rows_than_ranks():
    store = Path(tempfile.mkdtemp()) / "store"
    try:
        mp.spawn(_gather_worker, args=(3, str(store)), nprocs=3, join=True)
    finally:
        shutil.rmtree(store.parent, ignore_errors=True)


def test_agreement_in_one_process_reraises_the_error_itself():
    with pytest.raises(ConfigError, match="mine"), DistributedContext().agreement():
        raise ConfigError("mine")


# -- the web page's script --------------------------------------------------------------------

HARNESS = r"""
const fs = require("fs");
const vm = require("vm");
const elements = {};
function makeEl(tag) {
  return {
    tag, children: [], attrs: {}, style: {}, hidden: false, textContent: "", value: "",
    checked: false, listeners: {},
    append(...c) { this.children.push(...c); },
    replaceChildren(...c) {
      this.children = [...c];
      if (this.tag === "select") this.value = c.length ? c[0].attrs.value : "";
    },
    setAttribute(k, v) { this.attrs[k] = v; },
    addEventListener(ev, f) { this.listeners[ev] = f; },
  };
}
elements.model = makeEl("select");
const $ = (id) => (elements[id] ??= makeEl("div"));
const timers = [];
const pending = [];
const sandbox = {
  document: { getElementById: $, createElement: makeEl },
  setTimeout: (f) => timers.push(f),
  fetch: (path, options) => new Promise((resolve) => pending.push({ path, options, resolve })),
  console,
  encodeURIComponent,
};
const flush = () => new Promise((r) => setImmediate(r));
function answer(data, path = "/v1/models") {
  const index = pending.findIndex((p) => p.path === path);
  const [request] = pending.splice(index, 1);
  request.resolve({ ok: true, status: 200, json: async () => data });
}
const loading = { models: [{ name: "A", ready: false }, { name: "B", ready: false }] };
const ready = { models: [
  { name: "A", ready: true, task: "seq2seq", has_attention: false },
  { name: "B", ready: true, task: "seq2seq", has_attention: false },
] };
(async () => {
  vm.createContext(sandbox);
  vm.runInContext(fs.readFileSync(process.argv[2], "utf8"), sandbox);
  await flush();
  answer(loading); await flush();
  if (process.argv[3] === "switch") {  // the person picks B while both models still load
    elements.model.value = "B";
    elements.model.listeners.change(); await flush();
  }
  timers.shift()(); await flush();  // the first poll finds the models ready
  answer(ready); await flush();
  const shown = !$("translate-panel").hidden;
  $("translate-input").value = "a b";
  $("beam").value = "1"; $("n-best").value = "1";
  $("translate-button").listeners.click(); await flush();
  const asked = pending[pending.length - 1].path;
  while (timers.length) { timers.shift()(); await flush(); answer(ready); await flush(); }
  answer({ translations: [{ text: "b a", score: -0.5, n_best: null }] }, asked); await flush();
  console.log(JSON.stringify({
    shown, asked, blocks: $("translate-output").children.length, error: $("error").textContent,
    polls_left: timers.length,
  }));
})();
"""


def _page(tmp_path: Path, *args: str) -> dict[str, Any]:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("no node on PATH")
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS, encoding="utf-8")
    done = subprocess.run(
        [node, str(harness), str(APP_JS), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_page_shows_a_translation_asked_once_the_loading_model_is_ready(tmp_path):
    state = _page(tmp_path)
    assert state["shown"] and state["asked"] == "/v1/models/A/translate"
    assert state["blocks"] == 1 and state["error"] == "" and state["polls_left"] == 0


def test_page_keeps_the_answer_when_a_second_poll_lands_while_it_is_out(tmp_path):
    state = _page(tmp_path, "switch")
    assert state["shown"] and state["asked"] == "/v1/models/B/translate"
    assert state["blocks"] == 1 or state["error"] != ""
