"""Two small sentence encoders and a side-info extractor, built here from a generated corpus.

Nothing is downloaded. Every encoder is a hashed bag of features projected to a small dense
vector, as cheap stand-ins for real sentence-embedding models:

* ``old`` (version 1): character 3-grams hashed into 512 buckets, projected by a fixed random
  Gaussian matrix to 32 dimensions (what a first, quick index might use);
* ``new`` (version 2): word unigrams and bigrams hashed into 2048 buckets, tf-idf weighted,
  projected onto the corpus's top 64 principal directions (a richer encoder);
* ``side`` (the side-info extractor): word unigrams hashed into 1024 buckets, randomly projected
  to 16 dimensions (a small model kept beside every stored vector, as FCT asks).

The corpus: short sentences on eight topics, each mixing topic words with common filler words;
the topic is the label retrieval is scored on.
"""

from __future__ import annotations

import itertools
import zlib

import numpy as np

TOPICS = {
    "football": "goal striker keeper match league penalty referee pitch midfield tackle season "
    "cup derby corner offside header winger coach fans stadium",
    "cooking": "recipe oven flour butter simmer garlic onion sauce roast knead dough pepper "
    "saute whisk broth spice kitchen bake grill taste",
    "space": "orbit rocket launch planet moon telescope galaxy astronaut satellite comet "
    "gravity nebula crater mission probe solar lunar capsule booster star",
    "finance": "stock bond market yield dividend inflation rate bank equity investor portfolio "
    "share price loan credit fund asset trader profit index",
    "music": "guitar chord melody drum album concert rhythm tempo singer band piano chorus "
    "lyric bass tune stage record studio harmony verse",
    "medicine": "patient doctor clinic dose symptom fever vaccine therapy nurse surgery "
    "diagnosis tablet infection blood heart scan ward recovery pain health",
    "gardening": "soil seed compost prune bloom weed hedge shrub tulip rose water spade "
    "mulch harvest sapling leaf root greenhouse bulb lawn",
    "travel": "flight hotel passport luggage ticket beach museum tour airport train map "
    "journey visa hostel cruise guide island border suitcase trip",
}
FILLER = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "on",
    "with",
    "for",
    "at",
    "by",
    "from",
    "about",
    "after",
    "before",
    "during",
    "this",
    "that",
    "some",
    "many",
    "every",
    "our",
    "their",
    "new",
    "old",
    "great",
    "small",
    "quick",
    "long",
    "short",
    "good",
    "bad",
    "really",
    "very",
]


def corpus(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``n`` sentences and their topic ids: 5-12 words, half of them topic words, the rest
    filler (so a bag of character n-grams is easily confused)."""
    rng = np.random.default_rng(seed)
    vocab = [words.split() for words in TOPICS.values()]
    labels = rng.integers(0, len(vocab), n)
    sentences = []
    for label in labels:
        length = int(rng.integers(5, 13))
        topical = rng.random(length) < 0.45
        words = [
            vocab[label][rng.integers(len(vocab[label]))]
            if t
            else FILLER[rng.integers(len(FILLER))]
            for t in topical
        ]
        sentences.append(" ".join(words))
    return sentences, labels.astype(np.int64)


def _hash(feature: str, buckets: int) -> int:
    return zlib.crc32(feature.encode()) % buckets  # stable across runs (unlike hash())


def char_ngrams(text: str, n: int = 3) -> list[str]:
    padded = f" {text} "
    return [padded[i : i + n] for i in range(len(padded) - n + 1)]


def word_ngrams(text: str, bigrams: bool) -> list[str]:
    words = text.split()
    return words + ([f"{a}_{b}" for a, b in itertools.pairwise(words)] if bigrams else [])


def bag(texts: list[str], features, buckets: int) -> np.ndarray:
    counts = np.zeros((len(texts), buckets), np.float32)
    for row, text in enumerate(texts):
        for feature in features(text):
            counts[row, _hash(feature, buckets)] += 1
    return counts


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)


class Encoder:
    """A fitted encoder: ``encode(texts) -> float32 [N, dim]``."""

    def __init__(self, name: str, features, buckets: int, projection: np.ndarray, idf=None):
        self.name, self.features, self.buckets = name, features, buckets
        self.projection, self.idf = projection.astype(np.float32), idf

    @property
    def dim(self) -> int:
        return int(self.projection.shape[1])

    def encode(self, texts: list[str]) -> np.ndarray:
        x = bag(texts, self.features, self.buckets)
        if self.idf is not None:
            x = x * self.idf
        return (_unit(x) @ self.projection).astype(np.float32)


def build_encoders(train_texts: list[str], seed: int = 0) -> dict[str, Encoder]:
    """The three encoders; ``new`` fits its idf and principal directions on ``train_texts``."""
    rng = np.random.default_rng(seed)
    old = Encoder("old", char_ngrams, 512, rng.normal(size=(512, 32)) / np.sqrt(32))
    side = Encoder("side", lambda t: word_ngrams(t, False), 1024, rng.normal(size=(1024, 32)) / 6.0)

    def words(t: str) -> list[str]:
        return word_ngrams(t, True)

    counts = bag(train_texts, words, 2048)
    idf = np.log((1 + len(counts)) / (1 + (counts > 0).sum(0))).astype(np.float32) + 1.0
    x = _unit(counts * idf)
    x = x - x.mean(0)
    _, vectors = np.linalg.eigh(x.T @ x)  # principal directions, ascending variance
    new = Encoder("new", words, 2048, vectors[:, ::-1][:, :64] * 4.0, idf)
    return {"old": old, "new": new, "side": side}
