#!/usr/bin/env bash
# Train (and evaluate) colxm's default model on a lent GPU machine (the `device` tool), from the
# repository root. See scripts/gpu/README.md for what is carried and the exact calls.
# Env: VARIANTS="top4:colbert:4 dpr4:dpr:4 top4lo:colbert:4:1e-5" (name:recipe:layers[:lr]) STEPS=1000 BATCH=64 LR=3e-5 SETS=xquad-r/en,...
#      DIM=384 (projection size; 384 = identity, every e5 dimension kept) TRAIN_ARGS="..." (extra flags)
#      BASELINES=1 (evaluate untrained MaxSim and e5 mean-pooled dense too) SHIP="top4" (or "all": $OUT/ship-NAME per ColBERT variant)
set -euo pipefail
OUT=${OUT:-/tmp/out}
STEPS=${STEPS:-1000}; BATCH=${BATCH:-64}; LR=${LR:-3e-5}
VARIANTS=${VARIANTS:-"top4:colbert:4"}; SHIP=${SHIP:-top4}; BASELINES=${BASELINES:-1}
SETS=${SETS:-}
W=/tmp/work; mkdir -p $W/runs $W/quality
if [ ! -d /tmp/site/transformers ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
if [ ! -f $W/base/model.safetensors ]; then
  gunzip -c .carry/backbone/tokenizer.json.gz > .carry/backbone/tokenizer.json
  python3 scripts/gpu/unpack_backbone.py .carry/backbone $W/base ${DIM:-128}
  if [ -n "${QUERY_PREFIX:-}" ]; then  # e5 was trained with "query: " / "passage: " prefixes
    python3 - "$W/base/artifact.metadata" "$QUERY_PREFIX" "$DOC_PREFIX" <<'PY'
import json, sys
m = json.load(open(sys.argv[1])); m.update(colxm_query_prefix=sys.argv[2], colxm_doc_prefix=sys.argv[3])
json.dump(m, open(sys.argv[1], "w"), indent=4)
PY
  fi
fi
[ -f $W/triples.jsonl ] || gunzip -c .carry/triples2.jsonl.gz > $W/triples.jsonl
for t in .carry/data*.tar.gz; do [ -f "$t" ] && mkdir -p $W/data && tar xzf "$t" -C $W/data; done
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader

MODELS=""
if [ "$BASELINES" = 1 ]; then MODELS="--colbert base=$W/base --dense e5-mean=$W/base:mean"; fi
for v in $VARIANTS; do
  IFS=: read -r name recipe layers vlr <<<"$v"
  python3 -c "from colxm.train.cli import app; app()" train $W/triples.jsonl --model $W/base \
      --out $W/runs/$name --recipe $recipe --steps $STEPS --batch-size $BATCH --lr ${vlr:-$LR} --warmup 0.1 \
      --trainable-layers $layers ${TRAIN_ARGS:-} --save-steps 100000 --tdp 700 --carbon-intensity 0.432 2>&1 | tail -1
  python3 - "$W/runs" "$OUT/summaries.json" <<'PY'
import json, sys, pathlib
out = {d.name: json.loads((d / "summary.json").read_text()) for d in pathlib.Path(sys.argv[1]).iterdir()
       if (d / "summary.json").is_file()}
pathlib.Path(sys.argv[2]).write_text(json.dumps(out, indent=1))
PY
  if [ "$recipe" = colbert ]; then
    MODELS="$MODELS --colbert $name=$W/runs/$name"
    if [ "$SHIP" = all ] || [ "$name" = "$SHIP" ]; then
      dest=$OUT/ship; [ "$SHIP" = all ] && dest=$OUT/ship-$name
      python3 scripts/gpu/extract_delta.py $W/runs/$name $W/base $dest
      cp $W/runs/$name/loss.png $dest/loss.png 2>/dev/null || true
    fi
  else
    MODELS="$MODELS --dense $name=$W/runs/$name:mean"
  fi
done
if [ -d $W/data ] && [ -n "$MODELS" ]; then
  sets=${SETS:-$(cd $W/data && ls -d */* | sort -r | tr '\n' ',')}
  python3 benchmarks/quality_models.py --data $W/data --sets "$sets" $MODELS --out $OUT/quality.json
fi
