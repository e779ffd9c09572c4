"""Fine-tuning a colxm Encoder (ColBERT-XM / ColBERTv2 recipes) on transformers' Trainer.

The Trainer brings AdamW, warm-up then linear decay, gradient accumulation, bf16 autocast, the
progress bar, checkpoint rotation and resumption; this module adds the retrieval losses, the
ColBERT-XM freezing rule, HF_ColBERT checkpoints (written by the Encoder's own save_pretrained), and
a run summary (loss curve PNG, wall time, energy / CO2 estimate as in ColBERT-XM Table 3).
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from colxm.errors import InputError
from colxm.modeling.query_weights import QueryTokenWeights
from colxm.train import losses
from colxm.train.data import NwayTuple, Triple

log = logging.getLogger(__name__)

TRAINABLE_FILE = "trainable.safetensors"  # the trained tensors only, for resuming and small deltas
SUMMARY_FILE = "summary.json"
LOSS_PLOT = "loss.png"
_LAYER = re.compile(r"(?:^|\.)layer\.(\d+)\.")
_PROJECTION = re.compile(r"(?:^|\.)linear\.weight$")
_QUERY_WEIGHTS = re.compile(r"(?:^|\.)query_weights\.")
SCORE_SCALE_LR = 1e-2  # peak LR of the loss's learned temperature when query_weights_lr is not set
_SCORE_SCALE = re.compile(r"(?:^|\.)score_scale\.")  # the loss's learned temperature (not saved in models)


@dataclass
class TrainConfig:
    """Settings of one training run (saved as ``train_config.json`` next to the checkpoints)."""

    output_dir: str
    max_steps: int = 100
    batch_size: int = 8  # queries per step; each brings ``nway`` passages
    grad_accum: int = 1
    learning_rate: float = 5e-6
    projection_lr: float | None = None  # a separate peak LR for the projection (e.g. a fresh random one)
    query_weights: bool = False  # add (when the model has none) and train learned query-token weights
    query_weights_lr: float | None = None  # a separate peak LR for that head (it starts from scratch)
    freeze_projection: bool = False  # keep the projection as it is (e.g. train only the query weights)
    learn_temperature: bool | None = None  # learn a scale of the scores in the loss; None: with query_weights
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    in_batch: bool = True
    distillation_alpha: float = 1.0
    freeze_embeddings: bool = True  # ColBERT-XM: embeddings and every language adapter stay frozen
    freeze_adapters: bool = True
    trainable_layers: int | None = None  # train only the top N transformer layers (+ projection)
    precision: str = "auto"  # "auto" (bf16 where the GPU supports it), "bf16", "fp32"
    save_steps: int = 100
    save_total_limit: int | None = 2
    logging_steps: int = 10
    seed: int = 0
    resume: bool = True  # continue from the latest checkpoint-N in output_dir when there is one
    max_minutes: float | None = None  # stop (with a checkpoint) once training has run this long
    cache_backbone: bool = True  # projection-only runs: compute the frozen backbone once per text
    tdp_watts: float = 65.0  # power draw assumed for the energy estimate (set your device's TDP)
    carbon_intensity: float = 0.432  # kg CO2e per kWh (set your grid's)

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "bf16", "fp32"):
            raise InputError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        for name in ("max_steps", "batch_size", "grad_accum", "save_steps", "logging_steps"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        lrs = (self.learning_rate, self.projection_lr, self.query_weights_lr)
        if any(lr is not None and lr <= 0 for lr in lrs):
            raise InputError(f"learning rates must be positive, got {lrs}")
        if self.query_weights_lr is not None and not self.query_weights:
            raise InputError("query_weights_lr is set but query_weights is off; turn query_weights on")


# ------------------------------------------------------------------------------------------- freezing
def apply_freezing(
    model: nn.Module,
    *,
    freeze_embeddings: bool = True,
    freeze_adapters: bool = True,
    trainable_layers: int | None = None,
    freeze_projection: bool = False,
    freeze_query_weights: bool = False,
) -> tuple[list[str], list[str]]:
    """Set ``requires_grad`` by parameter name; returns (trainable names, frozen names).

    ColBERT-XM recipe: freeze ``*embeddings.*`` and every XMOD language adapter
    (``*.adapter_modules.*``), train the shared transformer weights and the projection.
    ``trainable_layers=N`` also freezes every transformer layer below the top N;
    ``freeze_projection`` freezes the projection too, ``freeze_query_weights`` the query-token weight head.
    """
    layers = [int(m.group(1)) for n, _ in model.named_parameters() if (m := _LAYER.search(n))]
    lowest_trained = (max(layers) + 1 - trainable_layers) if (trainable_layers is not None and layers) else None
    trainable, frozen = [], []
    for name, p in model.named_parameters():
        freeze = (freeze_embeddings and "embeddings." in name) or (freeze_adapters and ".adapter_modules." in name)
        freeze = freeze or bool(freeze_projection and _PROJECTION.search(name))
        freeze = freeze or bool(freeze_query_weights and _QUERY_WEIGHTS.search(name))
        if lowest_trained is not None:
            m = _LAYER.search(name)
            if m is not None and int(m.group(1)) < lowest_trained:
                freeze = True
            elif m is None and ("encoder." in name or "pooler." in name):
                freeze = True  # backbone parts outside the layers (e.g. final norms): not "top layers"
        p.requires_grad_(not freeze)
        (frozen if freeze else trainable).append(name)
    if not trainable:
        raise InputError("the freezing rule leaves no parameter to train")
    return trainable, frozen


# --------------------------------------------------------------------------------- batches and module
class ColbertCollator:
    """Tokenizes a batch of triples / n-way tuples with the Encoder's own tokenization."""

    def __init__(self, tokenize_queries: Callable, tokenize_documents: Callable):
        self.tokenize_queries = tokenize_queries
        self.tokenize_documents = tokenize_documents

    def __call__(self, batch: Sequence[Triple | NwayTuple]) -> dict[str, torch.Tensor]:
        queries = [ex.query for ex in batch]
        if isinstance(batch[0], NwayTuple):
            docs = [p for ex in batch for p in ex.passages]
            teacher = torch.tensor([ex.scores for ex in batch], dtype=torch.float32)
        else:
            docs = [p for ex in batch for p in (ex.positive, ex.negative)]
            teacher = None
        out = {f"q_{k}": v for k, v in self.tokenize_queries(queries).items()}
        out.update({f"d_{k}": v for k, v in self.tokenize_documents(docs).items()})
        if teacher is not None:
            out["teacher_scores"] = teacher
        return out


class ColbertLossModule(nn.Module):
    """The encoder's network plus the recipe's loss; what the Trainer optimises."""

    accepts_loss_kwargs = False  # the Trainer then scales the loss for gradient accumulation

    def __init__(self, net: nn.Module, nway: int, in_batch: bool = True, distillation_alpha: float = 1.0,
                 learn_temperature: bool = False):
        super().__init__()
        self.net = net
        self.nway = nway
        self.in_batch = in_batch
        self.alpha = distillation_alpha
        self.score_scale = losses.ScoreScale() if learn_temperature else None

    def forward(self, q_input_ids, q_attention_mask, d_input_ids, d_attention_mask,
                q_lang_ids=None, d_lang_ids=None, teacher_scores=None):
        Q = self.net.forward_queries(q_input_ids, q_attention_mask, lang_ids=q_lang_ids)
        D, d_mask = self.net.forward_documents(d_input_ids, d_attention_mask, lang_ids=d_lang_ids)
        scores = losses.maxsim_scores(Q.float(), D.float(), d_mask)
        if self.score_scale is not None:
            scores = self.score_scale(scores)
        return {"loss": losses.recipe_loss(scores, self.nway, self.in_batch, self.alpha, teacher_scores)}


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = list(rows)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


# ------------------------------------------------------------------------------------------- trainer
def _make_hf_trainer(**kwargs):
    """A transformers.Trainer subclass (built lazily: importing Trainer is slow)."""
    from safetensors.torch import load_file, save_file
    from transformers import Trainer

    class ColxmHFTrainer(Trainer):
        def __init__(self, *a, save_fn: Callable[[str], None], projection_lr: float | None = None,
                     query_weights_lr: float | None = None, **kw):
            super().__init__(*a, **kw)
            self._colxm_save_fn = save_fn
            self._own_lrs = [(_PROJECTION, projection_lr, "projection (linear.weight)"),
                             (_QUERY_WEIGHTS, query_weights_lr, "query-weight head")]
            # the learned temperature moves with the head; without a head LR it gets its own: one
            # log-scale scalar would barely move at a backbone's LR (~1e-5)
            if any(_SCORE_SCALE.search(n) for n, _ in self.model.named_parameters()):
                self._own_lrs.append((_SCORE_SCALE, query_weights_lr or SCORE_SCALE_LR, "score scale"))

        def create_optimizer(self):
            """AdamW with a group of its own for each part that has a separate peak LR."""
            own = [(pattern, lr, what) for pattern, lr, what in self._own_lrs if lr is not None]
            if not own or self.optimizer is not None:
                return super().create_optimizer()
            named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
            groups = []
            for pattern, lr, what in own:
                params = [p for n, p in named if pattern.search(n)]
                if not params and pattern is _SCORE_SCALE:
                    continue
                if not params:
                    raise InputError(f"a separate learning rate is set for the {what}, but it is not trained")
                groups.append({"params": params, "lr": lr, "weight_decay": 0.0})
            rest = [p for n, p in named if not any(pattern.search(n) for pattern, _, _ in own)]
            groups.append({"params": rest, "lr": self.args.learning_rate, "weight_decay": self.args.weight_decay})
            self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.args.learning_rate)
            return self.optimizer

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(**inputs)
            return (out["loss"], out) if return_outputs else out["loss"]

        def _save(self, output_dir=None, state_dict=None):
            output_dir = output_dir or self.args.output_dir
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            self._colxm_save_fn(output_dir)
            trained = {n: p.detach().cpu().contiguous() for n, p in self.model.named_parameters() if p.requires_grad}
            save_file(trained, str(Path(output_dir) / TRAINABLE_FILE))

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            model = model or self.model
            state = load_file(str(Path(resume_from_checkpoint) / TRAINABLE_FILE))
            own = dict(model.named_parameters())
            unknown = [k for k in state if k not in own]
            if unknown:
                raise InputError(
                    f"{resume_from_checkpoint} was written by a different model or freezing rule "
                    f"(unknown tensor {unknown[0]}); start in a fresh output folder"
                )
            with torch.no_grad():
                for k, v in state.items():
                    own[k].copy_(v)

        def _load_rng_state(self, checkpoint):
            # Same as the base class, with weights_only=True spelled out (no pickled code is run).
            from transformers.trainer import safe_globals

            path = Path(checkpoint) / "rng_state.pth"
            if not path.is_file():
                return
            import random

            import numpy as np

            with safe_globals():
                st = torch.load(str(path), weights_only=True)
            random.setstate(st["python"])
            np.random.set_state(st["numpy"])
            torch.random.set_rng_state(st["cpu"])
            if torch.cuda.is_available() and "cuda" in st:
                torch.cuda.random.set_rng_state(st["cuda"])

    return ColxmHFTrainer(**kwargs)


def _time_budget(minutes: float):
    """A callback that ends training (saving a checkpoint) after ``minutes`` of wall time."""
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if time.perf_counter() - self.t0 > minutes * 60:
                log.info("time budget of %.1f min reached at step %d", minutes, state.global_step)
                control.should_training_stop = True
                control.should_save = True

    return TimeBudget()


def _use_bf16(precision: str) -> bool:
    if precision == "bf16":
        return True
    if precision == "fp32":
        return False
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def run_training(
    module: nn.Module,
    dataset: Sequence,
    collator: Callable,
    cfg: TrainConfig,
    save_fn: Callable[[str], None],
    prepare_seconds: float = 0.0,
) -> dict:
    """Train ``module`` (returns ``{"loss": ...}``) on ``dataset`` with transformers' Trainer.

    Checkpoints go to ``cfg.output_dir/checkpoint-N`` (``save_fn`` writes the model, plus the
    trained tensors for resuming); the final model to ``cfg.output_dir``. Returns the run summary;
    ``prepare_seconds`` (e.g. caching the frozen backbone) counts in its wall time and energy.
    """
    from transformers import TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    if len(dataset) < cfg.batch_size:
        raise InputError(f"{len(dataset)} training examples is fewer than one batch of {cfg.batch_size}")
    use_cuda = torch.cuda.is_available()
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_ratio=cfg.warmup_ratio,
        lr_scheduler_type="linear",
        optim="adamw_torch",
        bf16=_use_bf16(cfg.precision),
        use_cpu=not use_cuda,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        report_to=[],
        disable_tqdm=not sys.stderr.isatty(),
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    callbacks = [_time_budget(cfg.max_minutes)] if cfg.max_minutes else None
    trainer = _make_hf_trainer(
        callbacks=callbacks, model=module, args=args, train_dataset=_ListDataset(dataset),
        data_collator=collator, save_fn=save_fn, projection_lr=cfg.projection_lr,
        query_weights_lr=cfg.query_weights_lr,
    )
    last = get_last_checkpoint(str(out)) if cfg.resume else None
    if last:
        log.info("resuming from %s", last)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=last)
    wall = time.perf_counter() - t0
    trainer.save_model(str(out))
    trainer.save_state()
    return write_summary(out, trainer.state.log_history, trainer.state.global_step, wall, cfg,
                         prepare_seconds=prepare_seconds,
                         extra={"resumed_from": last, "train_loss": result.training_loss,
                                "trainable_params": sum(p.numel() for p in module.parameters() if p.requires_grad),
                                "frozen_params": sum(p.numel() for p in module.parameters() if not p.requires_grad),
                                "device": "cuda" if use_cuda else "cpu", "bf16": args.bf16})


def energy_estimate(wall_seconds: float, tdp_watts: float, carbon_intensity: float) -> dict:
    """ColBERT-XM Table 3's estimate: energy = TDP x time; CO2 = energy x carbon intensity."""
    kwh = tdp_watts * wall_seconds / 3600.0 / 1000.0
    return {"tdp_watts": tdp_watts, "energy_kwh": kwh, "carbon_intensity_kg_per_kwh": carbon_intensity,
            "co2_kg": kwh * carbon_intensity}


def write_summary(out: Path, log_history: list[dict], steps: int, wall: float, cfg: TrainConfig,
                  extra: dict | None = None, prepare_seconds: float = 0.0) -> dict:
    """``summary.json`` and ``loss.png`` (when matplotlib is installed) in ``out``.

    ``wall_time_s`` (and the energy estimate) = ``prepare_time_s`` + ``train_time_s`` (the steps)."""
    curve = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    total = wall + prepare_seconds
    summary = {"steps": steps, "wall_time_s": round(total, 3), "prepare_time_s": round(prepare_seconds, 3),
               "train_time_s": round(wall, 3), "loss_curve": curve,
               **energy_estimate(total, cfg.tdp_watts, cfg.carbon_intensity), **(extra or {})}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot([s for s, _ in curve], [v for _, v in curve], marker=".")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        fig.tight_layout()
        fig.savefig(out / LOSS_PLOT, dpi=100)
        plt.close(fig)
        summary["loss_plot"] = LOSS_PLOT
    except ImportError:
        log.warning("matplotlib is not installed: no %s (pip install matplotlib)", LOSS_PLOT)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def train_colbert(encoder, examples: Sequence[Triple | NwayTuple], cfg: TrainConfig) -> dict:
    """Fine-tune ``encoder`` in place on triples (ColBERT-XM loss) or n-way tuples (ColBERTv2 KL).

    Checkpoints and the final model are HF_ColBERT folders written by ``encoder.save_pretrained``.
    """
    if not examples:
        raise InputError("no training examples")
    kinds = {type(e) for e in examples}
    if len(kinds) != 1:
        raise InputError("mixing triples and n-way tuples in one run is not supported")
    nway = len(examples[0].passages) if isinstance(examples[0], NwayTuple) else 2
    if cfg.query_weights and getattr(encoder.model, "query_weights", None) is None:
        encoder.model.query_weights = QueryTokenWeights(encoder.model.backbone.config.hidden_size)
    t0 = time.perf_counter()
    # a saved query-weight head stays as it is unless asked
    trainable, frozen = apply_freezing(encoder.model, freeze_embeddings=cfg.freeze_embeddings,
                                       freeze_adapters=cfg.freeze_adapters, trainable_layers=cfg.trainable_layers,
                                       freeze_projection=cfg.freeze_projection,
                                       freeze_query_weights=not cfg.query_weights)
    log.info("training %d tensors, %d frozen", len(trainable), len(frozen))
    learn_temperature = cfg.query_weights if cfg.learn_temperature is None else cfg.learn_temperature
    if cfg.cache_backbone and _head_only(encoder.model, trainable):
        module, examples, collator = _cached_head_setup(encoder, examples, nway, cfg, learn_temperature)
    else:
        module = ColbertLossModule(encoder.model, nway, cfg.in_batch, cfg.distillation_alpha, learn_temperature)
        collator = ColbertCollator(encoder.tokenize_queries, encoder.tokenize_documents)
    encoder.model.train()
    try:
        return run_training(module, examples, collator, cfg, save_fn=lambda d: encoder.save_pretrained(d),
                            prepare_seconds=time.perf_counter() - t0)
    finally:
        encoder.model.eval()


def _head_only(net: nn.Module, trainable: list[str]) -> bool:
    """Whether only the projection and / or the query-weight head train, on a network that exposes
    its backbone output separately (then the backbone's outputs can be cached)."""
    return all(_PROJECTION.search(n) or _QUERY_WEIGHTS.search(n) for n in trainable) and all(
        hasattr(net, a) for a in ("hidden", "document_mask", "query_mask"))


def _cached_head_setup(encoder, examples, nway: int, cfg: TrainConfig, learn_temperature: bool):
    """Module, dataset and collator of a projection-only run over cached backbone outputs."""
    from colxm.train import cached_head as ch

    queries, passages, rows = ch.index_examples(examples)
    log.info("backbone frozen: caching its outputs for %d queries and %d passages",
             len(queries), len(passages))
    net = encoder.model
    q_cache = ch.cache_texts(net, encoder.tokenize_queries, queries, documents=False, show_progress=True)
    p_cache = ch.cache_texts(net, encoder.tokenize_documents, passages, documents=True, show_progress=True)
    gib = (q_cache.states.numel() + p_cache.states.numel()) * 2 / 2**30
    log.info("backbone outputs cached: %.2f GiB in memory (cache_backbone=False trades it for time)", gib)
    module = ch.CachedHeadLossModule(net.linear, nway, cfg.in_batch, cfg.distillation_alpha,
                                     query_weights=getattr(net, "query_weights", None),
                                     learn_temperature=learn_temperature)
    return module, rows, ch.CachedCollator(q_cache, p_cache)
