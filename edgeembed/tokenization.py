"""HF `tokenizers` set up the way sentence-transformers tokenizes: truncate to max_seq_length, pad each
batch to its own longest text (never to a fixed length), whatever the tokenizer.json itself says.

Texts are tokenized once, unpadded (in parallel, in Rust); batches are then cut by length and padded in
numpy, so sorting by length costs no second tokenization.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from edgeembed.errors import ArtifactError


@dataclass(frozen=True)
class Batch:
    """Model inputs of one batch, int64, shape (batch, seq)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray

    def as_inputs(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in names}


class TextTokenizer:
    """Truncation to max_seq_length, no padding inside the tokenizer; `pad` builds the batch arrays."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        max_seq_length: int,
        do_lower_case: bool = False,
        add_special_tokens: bool = True,
    ) -> None:
        self.max_seq_length = max_seq_length
        self.do_lower_case = do_lower_case
        # False for static embeddings: sentence-transformers' StaticEmbedding averages the text's tokens only.
        self.add_special_tokens = add_special_tokens
        self.pad_id = _pad_id(tokenizer)
        # Trap: all-MiniLM-L6-v2's tokenizer.json truncates AND pads to a fixed 128.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_seq_length)
        self._tok = tokenizer

    @classmethod
    def from_file(
        cls, path: Path, max_seq_length: int, do_lower_case: bool = False, add_special_tokens: bool = True
    ) -> TextTokenizer:
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise ArtifactError(f"cannot read tokenizer {path}: {exc}") from None
        return cls(tok, max_seq_length, do_lower_case, add_special_tokens)

    def encode(self, texts: Sequence[str]) -> list[Encoding]:
        if not texts:
            return []
        prepared = [t.lower() for t in texts] if self.do_lower_case else list(texts)
        return self._tok.encode_batch_fast(prepared, add_special_tokens=self.add_special_tokens)

    def pad(self, encodings: Sequence[Encoding], multiple_of: int | None = None) -> Batch:
        """Right-pad to the longest encoding of this batch; with `multiple_of`, further up to a multiple of
        it (never past max_seq_length), so a runtime that specializes per shape sees few shapes."""
        n = len(encodings)
        longest = max((len(e.ids) for e in encodings), default=0)
        if multiple_of and multiple_of > 1 and longest:
            longest = max(longest, min(-(-longest // multiple_of) * multiple_of, self.max_seq_length))
        ids = np.full((n, longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((n, longest), dtype=np.int64)
        types = np.zeros((n, longest), dtype=np.int64)
        for i, e in enumerate(encodings):
            k = len(e.ids)
            ids[i, :k] = e.ids
            mask[i, :k] = e.attention_mask
            types[i, :k] = e.type_ids
        return Batch(ids, mask, types)

    def __call__(self, texts: Sequence[str]) -> Batch:
        return self.pad(self.encode(texts))

    def prompt_length(self, prompt: str) -> int:
        """Tokens a prompt adds, as sentence-transformers counts them (all but the trailing special token)."""
        return len(self.encode([prompt])[0].ids) - (1 if self.add_special_tokens else 0)


def _pad_id(tok: Tokenizer) -> int:
    if tok.padding:
        return int(tok.padding["pad_id"])
    for token in ("[PAD]", "<pad>", "<|pad|>", "<|endoftext|>", "</s>"):
        tid = tok.token_to_id(token)
        if tid is not None:
            return tid
    return 0
