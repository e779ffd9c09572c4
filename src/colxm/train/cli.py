"""`colxm train`, `colxm mine` and `colxm add-language`: a Typer sub-app the main CLI mounts with
``app.add_typer(colxm.train.cli.app)`` (no name: the commands join the top level).

Imports stay light here (torch and transformers load inside the commands) so ``colxm --help`` is fast.
"""
from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from colxm.errors import ColxmError, InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Training commands.")


class Recipe(str, Enum):
    colbert = "colbert"
    dpr = "dpr"


class Mining(str, Enum):
    bm25 = "bm25"
    model = "model"


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(1)


def _detect_format(path: Path) -> str:
    """'pairs', 'triples' or 'nway', from the keys of the first JSON line."""
    try:
        with path.open(encoding="utf-8") as f:
            first = next((ln for ln in f if ln.strip()), "")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    try:
        keys = set(json.loads(first)) if first else set()
    except (json.JSONDecodeError, TypeError):
        raise InputError(f"{path}:1: not a JSON object") from None
    if {"query", "passages", "scores"} <= keys:
        return "nway"
    if {"query", "positive", "negative"} <= keys:
        return "triples"
    if {"query", "positive"} <= keys:
        return "pairs"
    raise InputError(f"{path}: lines need query+positive (pairs), +negative (triples) or "
                     "query+passages+scores (n-way tuples)")


def mine_examples(data: Path, *, method: Mining, encoder=None, corpus: Optional[Path] = None,
                  negatives: int = 1, depth: int = 30, limit: Optional[int] = None, show_progress: bool = False):
    """Pairs file -> Mined rows (BM25, or BM25 candidates re-ranked by ``encoder``'s MaxSim)."""
    from colxm.train import data as td

    pairs = td.read_pairs(data)[:limit]
    texts = None
    if corpus is not None:
        from colxm.collections import load_collection

        texts = [d["text"] for d in load_collection(corpus)]
    if method == Mining.bm25:
        return td.mine_bm25(pairs, texts, n_negatives=negatives, depth=depth, show_progress=show_progress)
    texts = texts if texts is not None else list(dict.fromkeys(p for _, p in pairs))
    cand = td.BM25Miner(texts, show_progress=show_progress).rank([q for q, _ in pairs], depth)
    return td.mine_with_model(encoder, pairs, texts, n_negatives=negatives, candidates=cand,
                              show_progress=show_progress)


@app.command("mine")
def mine_command(
    pairs: Path = typer.Argument(..., help="JSONL of {query, positive}"),
    out: Path = typer.Option(..., "--out", help="triples JSONL to write"),
    method: Mining = typer.Option(Mining.bm25, help="bm25, or model (BM25 candidates re-ranked by --model)"),
    model: Optional[str] = typer.Option(None, help="colxm model for --method model"),
    corpus: Optional[Path] = typer.Option(None, help="collection to mine from (default: all positives)"),
    negatives: int = typer.Option(1, help="hard negatives per pair"),
    depth: int = typer.Option(30, help="candidates looked at per query"),
    limit: Optional[int] = typer.Option(None, help="use only the first N pairs"),
) -> None:
    """Mine hard negatives for (query, positive) pairs, excluding positives and near-duplicates."""
    try:
        from colxm.train import data as td

        enc = None
        if method == Mining.model:
            if not model:
                raise InputError("--method model needs --model")
            from colxm.modeling.encoder import Encoder

            enc = Encoder.from_pretrained(model)
        mined = mine_examples(pairs, method=method, encoder=enc, corpus=corpus, negatives=negatives,
                              depth=depth, limit=limit, show_progress=True)
        n = td.write_jsonl(out, (t for m in mined for t in m.triples()))
        typer.echo(f"{n} triples written to {out}")
    except ColxmError as e:
        _fail(e)


@app.command("train")
def train_command(
    data: Path = typer.Argument(..., help="JSONL: pairs (negatives are mined), triples, or n-way tuples"),
    model: str = typer.Option(..., help="model folder to start from (HF_ColBERT, XMOD, or any HF encoder)"),
    out: Path = typer.Option(..., "--out", help="output folder (checkpoints, final model, summary.json)"),
    recipe: Recipe = typer.Option(Recipe.colbert, help="colbert (ColBERT-XM / ColBERTv2) or dpr (DPR-XM)"),
    pooling: str = typer.Option("mean", help="DPR-XM pooling: mean, max or cls"),
    steps: int = typer.Option(1000, help="optimizer steps"),
    batch_size: int = typer.Option(32, help="queries per step"),
    grad_accum: int = typer.Option(1, help="gradient accumulation steps"),
    lr: float = typer.Option(5e-6, help="peak learning rate (AdamW, warm-up then linear decay)"),
    projection_lr: Optional[float] = typer.Option(None, help="separate peak LR for the projection"),
    query_weights: bool = typer.Option(False, help="add and train learned query-token weights "
                                       "(score = sum_i w_i max_j q_i.d_j; documents unchanged)"),
    query_weights_lr: Optional[float] = typer.Option(None, help="separate peak LR for the query-weight head"),
    freeze_projection: bool = typer.Option(False, help="keep the projection as it is"),
    learn_temperature: Optional[bool] = typer.Option(None, "--learn-temperature/--no-learn-temperature",
                                                     help="learn a scale of the scores in the loss "
                                                     "(default: on with --query-weights)"),
    query_expansion: Optional[bool] = typer.Option(None, "--query-expansion/--no-query-expansion",
                                                   help="whether the [MASK] padding of queries scores, in "
                                                   "training and in the saved model (default: the model's own)"),
    warmup: float = typer.Option(0.1, help="warm-up fraction of the steps"),
    mine: Mining = typer.Option(Mining.bm25, help="negative mining for a pairs file: bm25 or model"),
    negatives: int = typer.Option(1, help="hard negatives per query (n-way = negatives + 1)"),
    teacher: Optional[Path] = typer.Option(None, help="cross-encoder folder (sentence-transformers) for "
                                           "distillation scores"),
    teacher_colxm: Optional[str] = typer.Option(None, help="colxm model whose MaxSim scores serve as teacher "
                                                "(ColBERTv2 second-round substitute for a cross-encoder)"),
    limit: Optional[int] = typer.Option(None, help="use only the first N examples"),
    trainable_layers: Optional[int] = typer.Option(None, help="train only the top N layers + projection"),
    freeze_embeddings: bool = typer.Option(True, help="ColBERT-XM: keep the embeddings frozen"),
    freeze_adapters: bool = typer.Option(True, help="ColBERT-XM: keep every language adapter frozen"),
    precision: str = typer.Option("auto", help="auto (bf16 where supported), bf16 or fp32"),
    cache_backbone: bool = typer.Option(True, help="with --trainable-layers 0: run the frozen backbone "
                                        "once per distinct text and keep its outputs in memory (float16)"),
    save_steps: int = typer.Option(500, help="checkpoint every N steps (resume continues from the last)"),
    tdp: float = typer.Option(65.0, help="device power (W) for the energy estimate"),
    carbon_intensity: float = typer.Option(0.432, help="kg CO2e per kWh for the estimate"),
    seed: int = typer.Option(0),
) -> None:
    """Fine-tune a model (ColBERT-XM / ColBERTv2 recipe, or DPR-XM) and write summary.json."""
    try:
        from colxm.train.trainer import TrainConfig

        cfg = TrainConfig(output_dir=str(out), max_steps=steps, batch_size=batch_size, grad_accum=grad_accum,
                          learning_rate=lr, projection_lr=projection_lr, warmup_ratio=warmup,
                          query_weights=query_weights, query_weights_lr=query_weights_lr,
                          freeze_projection=freeze_projection, learn_temperature=learn_temperature,
                          trainable_layers=trainable_layers,
                          freeze_embeddings=freeze_embeddings, freeze_adapters=freeze_adapters,
                          precision=precision, cache_backbone=cache_backbone, save_steps=save_steps, tdp_watts=tdp,
                          carbon_intensity=carbon_intensity, seed=seed)
        if (query_weights or query_expansion is not None) and recipe != Recipe.colbert:
            raise InputError("--query-weights and --query-expansion shape the query tokens of late "
                             "interaction: use them with --recipe colbert")
        if recipe == Recipe.colbert:
            from colxm.modeling.encoder import Encoder

            encoder = Encoder.from_pretrained(model, query_expansion=query_expansion)
        else:
            from colxm.train.dense import DenseConfig, DenseRetriever

            encoder = DenseRetriever.from_pretrained(model, DenseConfig(pooling=pooling))
        examples = _prepare(data, encoder if recipe == Recipe.colbert else None, mine, negatives, teacher,
                            teacher_colxm, limit, out)
        if recipe == Recipe.colbert:
            from colxm.train.trainer import train_colbert

            summary = train_colbert(encoder, examples, cfg)
        else:
            from colxm.train.dense import train_dense

            summary = train_dense(encoder, examples, cfg)
        typer.echo(json.dumps({k: v for k, v in summary.items() if k != "loss_curve"}))
    except ColxmError as e:
        _fail(e)


def _prepare(data: Path, encoder, mine: Mining, negatives: int, teacher, teacher_colxm, limit, out: Path):
    from colxm.train import data as td

    fmt = _detect_format(data)
    if fmt == "nway":
        return td.read_nway(data)[:limit]
    if fmt == "triples":
        if teacher or teacher_colxm:
            raise InputError("teacher scores are built from a pairs file (mined negatives); give pairs")
        return td.read_triples(data)[:limit]
    if mine == Mining.model and encoder is None:
        raise InputError("--mine model needs the colbert recipe (a colxm model ranks the candidates)")
    mined = mine_examples(data, method=mine, encoder=encoder, negatives=negatives, limit=limit,
                          show_progress=True)
    out.mkdir(parents=True, exist_ok=True)
    if teacher or teacher_colxm:
        if teacher:
            t = td.CrossEncoderTeacher(teacher)
        else:
            from colxm.modeling.encoder import Encoder

            t = td.ColxmTeacher(Encoder.from_pretrained(teacher_colxm))
        rows = td.build_nway(mined, t, nway=negatives + 1)
    else:
        rows = [t for m in mined for t in m.triples()]
    td.write_jsonl(out / "train_data.jsonl", rows)  # what the run trained on, for reproducibility
    if not rows:
        raise InputError(f"{data}: no training example left after mining")
    return rows


@app.command("add-language")
def add_language_command(
    lang: str = typer.Argument(..., help="language code to add, e.g. lb or lb_LU"),
    text: Path = typer.Option(..., "--text", help="monolingual UTF-8 text, one passage a line"),
    model: str = typer.Option(..., "--model", help="XMOD (ColBERT-XM) model folder"),
    out: Path = typer.Option(..., "--out", help="folder for the model with the new adapter"),
    init_from: Optional[str] = typer.Option(None, help="adapter to copy as the start (default: model's default)"),
    steps: int = typer.Option(200, help="optimizer steps"),
    batch_size: int = typer.Option(16),
    lr: float = typer.Option(1e-4, help="peak learning rate"),
    save_steps: int = typer.Option(500),
    tdp: float = typer.Option(65.0, help="device power (W) for the energy estimate"),
    seed: int = typer.Option(0),
) -> None:
    """Add a language adapter to every XMOD layer and train only it with masked-language modelling."""
    try:
        from colxm.train.adapters import add_language

        summary = add_language(model, lang, text, out, init_from=init_from, max_steps=steps,
                               batch_size=batch_size, learning_rate=lr, save_steps=save_steps,
                               tdp_watts=tdp, seed=seed)
        typer.echo(json.dumps({k: v for k, v in summary.items() if k != "loss_curve"}))
    except ColxmError as e:
        _fail(e)
