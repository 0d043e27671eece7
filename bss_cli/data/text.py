"""A text modality: a manifest column of strings, declared as text (never guessed from content),
tokenized once when the manifest is read.

Declared in the manifest's metadata, ``bss.text = {"caption": {"max_tokens": 30, "max_words": 20,
"clean": true}}`` (what ``bss build-manifest twitter2015`` and ``sarcasm`` write), or by
``bss train --text caption``. Two tokenizers:

* built in (the default): words hashed into :data:`VOCAB` buckets (CRC-32, stable across runs and
  machines; no vocabulary to download or fit), id 0 = padding;
* a Hugging Face tokenizer from a **local folder** (``--text-model PATH``: the folder
  ``save_pretrained`` writes; never a hub download), whose model is then the text encoder.

``clean`` is the paper's preprocessing (the Twitter2015 / Sarcasm loaders): English words only,
lower-case, punctuation stripped, at most ``max_words`` words; ``max_tokens`` cuts or pads every
text to that many tokens (the loaders' tokenizer max length 30). numpy only (transformers is
imported only for ``--text-model``).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bss_cli.data.columns import column_settings
from bss_cli.errors import ConfigError

VOCAB = 1 << 15  # hashed-word buckets (id 0 is padding)
WORD = re.compile(r"[A-Za-z0-9']+")
ENGLISH_WORD = re.compile(r"[A-Za-z]+")


@dataclass
class TextSpec:
    max_tokens: int = 30
    max_words: int | None = None
    clean: bool = False
    model: str | None = None  # a local Hugging Face folder: its tokenizer (and model, as the encoder)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self, column: str) -> "TextSpec":
        problems = []
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or not 1 <= self.max_tokens <= 4096:
            problems.append(f"max_tokens {self.max_tokens!r}: expected an integer from 1 to 4096")
        if self.max_words is not None and (isinstance(self.max_words, bool) or not isinstance(self.max_words, int)
                                           or self.max_words < 1):
            problems.append(f"max_words {self.max_words!r}: expected an integer >= 1 or none")
        if not isinstance(self.clean, bool):
            problems.append(f"clean {self.clean!r}: expected true or false")
        if problems:
            raise ConfigError(f"text column {column!r}: " + "; ".join(problems))
        return self


def text_specs(metadata: dict | None, columns: list[str] | None = None, overrides: dict | None = None
               ) -> dict[str, TextSpec]:
    """The text columns: the manifest's ``bss.text`` metadata, plus ``columns`` (a flag), each with
    ``overrides`` (flag values that are not None) applied on top."""
    declared = column_settings(metadata, "bss.text", '{"column": {"max_tokens": 30, "max_words": 20, "clean": true}}')
    for c in columns or []:
        declared.setdefault(c, {})
    known = set(TextSpec.__dataclass_fields__)
    out = {}
    for column, spec in declared.items():
        unknown = set(spec) - known
        if unknown:
            raise ConfigError(f"manifest metadata bss.text[{column!r}]: unknown key(s) {', '.join(sorted(unknown))}; "
                              f"keys are {', '.join(sorted(known))}")
        merged = {**spec, **{k: v for k, v in (overrides or {}).items() if v is not None}}
        out[column] = TextSpec(**merged).validate(column)
    return out


def clean(text: str, max_words: int | None) -> str:
    """The paper's preprocessing: English words only, lower-case, punctuation stripped, the first
    ``max_words`` words."""
    words = ENGLISH_WORD.findall(text.lower())
    return " ".join(words[:max_words] if max_words else words)


def prepare(texts: list[str], spec: TextSpec) -> list[str]:
    if spec.clean:
        return [clean(t, spec.max_words) for t in texts]
    if spec.max_words:
        return [" ".join(t.split()[:spec.max_words]) for t in texts]
    return list(texts)


def hashed_ids(texts: list[str], spec: TextSpec) -> np.ndarray:
    """[N, max_tokens] token ids: each word (lower-cased) hashed into 1..VOCAB-1, 0 = padding."""
    out = np.zeros((len(texts), spec.max_tokens), np.int64)
    for i, text in enumerate(prepare(texts, spec)):
        words = WORD.findall(text.lower())[:spec.max_tokens]
        out[i, :len(words)] = [1 + zlib.crc32(w.encode()) % (VOCAB - 1) for w in words]
    return out


def local_model_folder(path: str, what: str = "--text-model") -> Path:
    """A folder written by ``save_pretrained`` (config.json and safetensors weights), checked before
    transformers sees it: no hub name, no pickled weights."""
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"{what} {path}: not a folder; give the folder a Hugging Face model was saved to "
                          "(save_pretrained), not a hub name: bss never downloads")
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{what} {path}: no config.json; give the folder save_pretrained wrote")
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"))
    if pickles and not any(p.suffix == ".safetensors" for p in folder.iterdir()):
        raise ConfigError(f"{what} {path}: its weights ({', '.join(pickles[:3])}) are pickled files, which can run "
                          "code when loaded; bss reads safetensors only. Convert once where you trust the file: "
                          "AutoModel.from_pretrained(PATH).save_pretrained(PATH, safe_serialization=True)")
    return folder


def hf_ids(texts: list[str], spec: TextSpec) -> tuple[np.ndarray, int]:
    """[N, max_tokens] input ids from the local tokenizer in ``spec.model``, and its padding id."""
    folder = local_model_folder(spec.model)
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ConfigError("--text-model needs transformers: pip install 'bss[hf]'") from None
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise ConfigError(f"--text-model {spec.model}: its tokenizer cannot be loaded ({type(exc).__name__}: "
                          f"{str(exc)[:300]})") from None
    enc = tok(prepare(texts, spec), max_length=spec.max_tokens, truncation=True, padding="max_length")
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    return np.asarray(enc["input_ids"], np.int64), int(pad)


def token_ids(texts: list[str], spec: TextSpec) -> tuple[np.ndarray, int]:
    """Token ids [N, max_tokens] and the padding id, by the spec's tokenizer."""
    if spec.model:
        return hf_ids(texts, spec)
    return hashed_ids(texts, spec), 0
