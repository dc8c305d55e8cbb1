"""The shipped Multi30k recipes load strictly and build the model they describe."""

from __future__ import annotations

from pathlib import Path

import pytest

from rnnlab.config import load_config
from rnnlab.models.attention_decoder import BahdanauDecoder
from rnnlab.models.decoder import ContextDecoder
from rnnlab.models.seq2seq import build_seq2seq
from rnnlab.tasks.seq2seq_config import Seq2SeqConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "seq2seq"


@pytest.mark.parametrize(
    ("name", "decoder", "bridged"),
    [
        ("multi30k-de-en-attention.yaml", BahdanauDecoder, True),
        ("multi30k-de-en-gru.yaml", ContextDecoder, False),
    ],
)
def test_recipe_loads_and_builds(name, decoder, bridged):
    config = load_config(Seq2SeqConfig, CONFIGS / name)
    assert config.data.format == "aligned" and (config.data.src_lang, config.data.tgt_lang) == (
        "de",
        "en",
    )
    model = build_seq2seq(config.model, src_vocab_size=50, tgt_vocab_size=40)
    assert isinstance(model.decoder, decoder)
    assert (model.bridge is not None) == bridged
