"""model.softmax=adaptive: an exactly normalised distribution, scored the same by every path.

The file score of an adaptive model against one step at a time is in tests/tasks/test_lm_perplexity.py.
"""

from __future__ import annotations

import json

import pytest
import torch

from rnnlab.cli import main
from rnnlab.models.language_model import RNNLanguageModel

V = 40


def adaptive_model(**overrides) -> RNNLanguageModel:
    torch.manual_seed(0)
    options = dict(vocab_size=V, embed_size=8, hidden_size=32, num_layers=1, cell="lstm",
                   softmax="adaptive", cutoffs=[5, 20])  # fmt: skip
    options.update(overrides)
    return RNNLanguageModel(**options).eval()


def test_adaptive_distribution_is_normalised_over_every_word():
    model = adaptive_model()
    features = torch.randn(7, 32)
    log_probs = model.log_probs(features)
    assert log_probs.shape == (7, V)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(7))
    # A head word and a word in each tail cluster, P(word) = P(cluster) P(word | cluster), by hand.
    head = torch.log_softmax(model.adaptive.head(features), -1)  # (7, 5 + 2 clusters)
    tail = model.adaptive.tail[1]
    in_cluster = torch.log_softmax(tail(features), -1)  # words 20 … 39
    torch.testing.assert_close(log_probs[:, 3], head[:, 3])
    torch.testing.assert_close(log_probs[:, 27], head[:, 6] + in_cluster[:, 7])


def test_token_nll_equals_the_log_probs_of_the_targets():
    model = adaptive_model()
    features, targets = torch.randn(30, 32), torch.randint(0, V, (30,))
    expected = -model.log_probs(features).gather(1, targets[:, None]).sum()
    torch.testing.assert_close(model.token_nll(features, targets), expected)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(tie_weights=True, embed_size=32), "tie_weights"),
        (dict(cutoffs=[5, 40]), "below the vocabulary size 40"),
        (dict(cutoffs=[20, 5]), "increasing"),
    ],
)
def test_bad_adaptive_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        adaptive_model(**overrides)


def test_cli_trains_and_scores_an_adaptive_word_lm(tmp_path, capsys):
    text = tmp_path / "text.txt"
    words = [f"w{i}" for i in range(30)]
    text.write_text("".join(" ".join(words[i : i + 6]) + "\n" for i in range(0, 24)) * 20)
    run = tmp_path / "run"
    args = ["train", "lm", "--out", str(run)]
    for item in (f"data.train={text}", f"data.valid={text}", "data.tokenizer=word",
                 "data.clean=none", "model.softmax=adaptive", "model.cutoffs=[8, 20]",
                 "model.hidden_size=32", "model.embed_size=16", "train.batch_size=4",
                 "train.bptt=12", "train.epochs=6", "train.lr=0.01"):  # fmt: skip
        args += ["--set", item]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(text), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["perplexity"] < 3  # 35 word types; the text is learnable

    bad = ["train", "lm", "--out", str(tmp_path / "bad"), "--set", f"data.train={text}",
           "--set", "data.tokenizer=word", "--set", "model.softmax=adaptive",
           "--set", "model.cutoffs=[8, 500]"]  # fmt: skip
    assert main(bad) == 2
    assert "model.cutoffs must be below the vocabulary size" in capsys.readouterr().err
