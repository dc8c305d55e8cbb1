#!/usr/bin/env bash
# EWT UPOS with and without word vectors pretrained by `rnnlab embeddings train` on English text from
# ../shared/data (training splits only: Tatoeba English side, Multi30k train.en, PTB train, The Time
# Machine, EWT train). Same budget for every run: train.max_minutes=$MINUTES of training-step time,
# 1 thread each, runs side by side. Dev accuracy and dev OOV accuracy are read from each run's best
# checkpoint. Figures: benchmarks/tagger_pretrained.md.
set -euo pipefail
S=${S:-../shared/data}
OUT=${OUT:-benchmarks/results/tagger_pretrained}
MINUTES=${MINUTES:-12}
RNNLAB=${RNNLAB:-.venv/bin/rnnlab}
mkdir -p "$OUT"
uptime
VECTORS=${VECTORS:-$OUT/english.w2v.txt}
if [ ! -s "$VECTORS" ]; then
  gzip -dc "$S/tatoeba-fra-eng/fra.txt.gz" | cut -f1 > "$OUT/tatoeba.en.txt"
  /usr/bin/time -v "$RNNLAB" embeddings train "$OUT/tatoeba.en.txt" "$S/multi30k/train.en.gz" \
    "$S/ptb/ptb.train.txt.gz" "$S/timemachine/timemachine.txt" \
    "$S/ud-english-ewt/en_ewt-ud-train.conllu.gz" \
    --out "$VECTORS" --algorithm word2vec --dim 100 --epochs 5 --min-count 2 \
    2> "$OUT/vectors.time" | tee "$OUT/vectors.log"
fi
uptime
common=(--config configs/tagger/ud-ewt-upos.yaml --overwrite
  --set "data.train=$S/ud-english-ewt/en_ewt-ud-train.conllu.gz"
  --set "data.valid=$S/ud-english-ewt/en_ewt-ud-dev.conllu.gz"
  --set "train.max_minutes=$MINUTES" --set train.num_threads=1)
vectors=(--set "model.pretrained_embeddings=$VECTORS")
RUNS=${RUNS:-none vectors vectors-extend-frozen}
declare -A variant=(
  [none]=""
  [vectors]="${vectors[*]}"
  [vectors-extend]="${vectors[*]} --set data.extend_vocab_from_embeddings=true"
  [vectors-extend-frozen]="${vectors[*]} --set data.extend_vocab_from_embeddings=true --set model.freeze_embeddings=true"
)
for run in $RUNS; do
  read -r -a extra <<< "${variant[$run]}"
  "$RNNLAB" train tagger "${common[@]}" "${extra[@]}" --out "$OUT/$run" > "$OUT/$run.log" 2>&1 &
done
while sleep 60; do uptime; jobs -r | grep -q . || break; done
wait
for run in $RUNS; do
  echo "== $run"
  grep -h "^pretrained" "$OUT/$run.log" || true
  "$RNNLAB" evaluate "$OUT/$run" --data "$S/ud-english-ewt/en_ewt-ud-dev.conllu.gz" --json \
    | grep -E '"(accuracy|oov_accuracy|tokens|oov_tokens)"'
  tail -1 "$OUT/$run/metrics.jsonl"
done
uptime
