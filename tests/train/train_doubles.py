"""Tiny, contract-shaped models for the training tests (built in milliseconds, no files needed).

`TinyEncoder` follows the Encoder contract the trainer uses (model.forward_queries /
forward_documents, tokenize_queries / tokenize_documents, save_pretrained) on a 2-layer BERT or XMOD
backbone, so the trainer is tested on its own; tests/train/test_trainer.py also runs it through the
real colxm Encoder when that is available.
"""
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WORDS = (
    "gzip bzip2 compress files archive music audio player plays songs vector graphics editor draw "
    "image raster paint web browser pages internet mail client email read write text document the "
    "a of for and with to is tool program"
).split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_word_tokenizer():
    """A whitespace word-level fast tokenizer with BERT's special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def tiny_backbone(kind="bert", languages=("en_XX", "de_DE")):
    from transformers import BertConfig, BertModel, XmodConfig, XmodModel

    common = dict(vocab_size=len(SPECIALS) + len(WORDS), hidden_size=16, num_hidden_layers=2,
                  num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    if kind == "xmod":
        cfg = XmodConfig(**common, pad_token_id=0, languages=list(languages), default_language=languages[0],
                         adapter_reduction_factor=2)
        return XmodModel(cfg, add_pooling_layer=False)
    return BertModel(BertConfig(**common), add_pooling_layer=False)


class TinyNet(nn.Module):
    def __init__(self, backbone, dim=8):
        super().__init__()
        self.backbone = backbone
        self.linear = nn.Linear(backbone.config.hidden_size, dim, bias=False)

    def _hidden(self, input_ids, attention_mask, lang_ids):
        kw = {}
        if self.backbone.config.model_type == "xmod":
            kw["lang_ids"] = lang_ids if lang_ids is not None else torch.zeros(len(input_ids), dtype=torch.long)
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kw)[0]

    def forward_queries(self, input_ids, attention_mask, lang_ids=None):
        return F.normalize(self.linear(self._hidden(input_ids, attention_mask, lang_ids)), dim=-1)

    def forward_documents(self, input_ids, attention_mask, lang_ids=None):
        mask = attention_mask.bool()
        D = self.linear(self._hidden(input_ids, attention_mask, lang_ids)) * mask[..., None]
        return F.normalize(D, dim=-1), mask


class TinyEncoder:
    def __init__(self, kind="bert"):
        self.tokenizer = make_word_tokenizer()
        self.model = TinyNet(tiny_backbone(kind))
        self.dim = 8
        self.saved = []

    def tokenize_queries(self, texts):
        t = self.tokenizer(list(texts), padding="max_length", max_length=8, truncation=True, return_tensors="pt")
        return {"input_ids": t["input_ids"], "attention_mask": t["attention_mask"]}

    def tokenize_documents(self, texts):
        t = self.tokenizer(list(texts), padding=True, max_length=16, truncation=True, return_tensors="pt")
        return {"input_ids": t["input_ids"], "attention_mask": t["attention_mask"]}

    def save_pretrained(self, path):
        from safetensors.torch import save_file

        Path(path).mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(Path(path) / "model.safetensors"))
        (Path(path) / "config.json").write_text(json.dumps({"architectures": ["HF_ColBERT"]}))
        self.saved.append(str(path))
        return Path(path)
