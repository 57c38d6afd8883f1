"""Prompt-injection detection: a phrase rule pack plus a small learned classifier, over normalised text.

Two tiers, either of which raises a finding:

- the rules of ``rules/injection.yaml`` (instruction overrides, role resets, jailbreak personas, prompt
  extraction, chat-template tokens, forged system markers ...), run on every normal form
  that ``proxy.scanning.normalize`` produces, so invisible characters, look-alike letters, letter spacing
  and encoded segments do not hide a phrase;
- a logistic regression over hashed character and word n-grams (``rules/injection_model.json``, trained
  by ``bench/train_injection.py`` on benign tool results of many kinds and on attacks planted in them),
  which generalises to phrasings no rule lists. Featurisation is a handful of numpy array operations per
  window size, with no Python object per n-gram.

Text that reaches the model from tools or documents (indirect injection) also raises a
``context_poisoning`` finding. Findings name the rule or the classifier score, never the text, and say
whether the text came from the user (``origin: user``, an attacker) or from content the agent read
(``origin: content``, whose user is a victim). Verdicts are cached by the text's hash and source: agents
resend the whole conversation every turn.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.resources
import json
import math
import os
import re
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from proxy.detectors.quoting import discussion_frame
from proxy.exchange import Source
from proxy.model import SEVERITY_ORDER, Action, Finding, Severity, Threat
from proxy.scanning.normalize import normalize
from proxy.scanning.rulepack import (
    RULES_PACKAGE,
    Rule,
    RulePack,
    ScanBudget,
    Scanner,
    load_pack,
    pack_path,
    scan_timeout_finding,
    unread_rule,
)
from proxy.scanning.structure import Structure, structure_of

OWASP = "LLM01"
# The poisoning that matters for an agent is of its context (docs/owasp.md, LLM03).
CONTEXT_POISONING_OWASP = "LLM03"
CLASSIFIER_RULE = "injection-classifier"
UNREAD = unread_rule(
    "injection", Threat.PROMPT_INJECTION, OWASP, "The injection detector (its rules, its classifier)"
)
"""What a text the detector did not read is out of time for (``_judge``): one finding for the text, not
one for each rule and the classifier."""
INDIRECT_SOURCES = frozenset({Source.TOOL_RESULT, Source.RETRIEVED_DOCUMENT, Source.TOOL_DESCRIPTION})
READ_CONTENT_SOURCES = frozenset({Source.TOOL_RESULT, Source.RETRIEVED_DOCUMENT})
"""Data the agent read: judged against documents, where an imperative addressed to the AI is itself the
anomaly. Tool descriptions are indirect too, but they are written to instruct the model, like a prompt."""
INDIRECT_ONLY_RULE_PREFIX = "injection-indirect-"
"""Rules about "your response" or "the following code": an attack inside read content, an ordinary
request when the user types it."""

MODEL_FILE = "injection_model.json"
MODEL_FORMAT = "egressguard-injection-logreg-2"

# The classifier reads windows, not whole texts: an instruction planted in a long document is a small
# part of it, and a window keeps its share of the features large enough to count. Windows overlap by
# half so a planted sentence always lies whole inside one. Long texts are read in blocks so the arrays
# stay small whatever the size of the text; blocks overlap by a window so no window is lost between them.
WINDOW_CHARS = 256
WINDOW_STEP = 128
BLOCK_CHARS = 1 << 16
_CHUNK = 1 << 14
"""Positions of a block whose n-grams are hashed and weighed together (the arrays stay in the cache)."""
_STEPS_PER_WINDOW = WINDOW_CHARS // WINDOW_STEP
assert _STEPS_PER_WINDOW * WINDOW_STEP == WINDOW_CHARS, "a window spans whole steps"

# Polynomial hashing modulo 2**64 (numpy's unsigned arithmetic wraps): prefix sums of c[j] * P**j give
# the hash of any span from two prefixes and one power of P's inverse, so every n-gram of every size
# costs a few array operations and no Python object.
_BASE = 0x9E3779B97F4A7C15
_BASE_INVERSE = pow(_BASE, -1, 1 << 64)
_MIX = np.uint64(0xBF58476D1CE4E5B9)
_CHAR_SALT, _WORD_SALT = 0x5BD1E995, 0x1B873593
_SPACE = 32
_DIGIT_ZERO, _DIGIT_NINE = 48, 57
_DELETE, _C1_END = 0x7F, 0xA0
# Word characters: ASCII letters, digits and underscore, and every character past ASCII (squeezed text
# has no blank there), as a bytes.translate table from a code (past ASCII: clipped to 128) to 1 or 0.
_WORD_CHARACTERS = "0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_WORDY = bytes(code >= 128 or chr(code) in _WORD_CHARACTERS for code in range(256))


def _powers(base: int, length: int) -> npt.NDArray[np.uint64]:
    powers = np.full(length, base, dtype=np.uint64)
    powers[0] = 1
    return np.cumprod(powers, dtype=np.uint64)


_POWERS = _powers(_BASE, BLOCK_CHARS + 1)
_INVERSE_POWERS = _powers(_BASE_INVERSE, BLOCK_CHARS + 1)
_MIXED_INVERSE_POWERS = _INVERSE_POWERS * _MIX
"""A span's hash times the mixing constant, in one product: (p[e] - p[s]) * P**-s * M."""


def _mixed(salt: int) -> int:
    """A salt times the mixing constant, modulo 2**64."""
    return salt * int(_MIX) % (1 << 64)


# For ASCII text, the same squeeze in C: every blank byte (controls, DEL) a space and every digit 0.
_ASCII_SQUEEZE = bytes(
    _SPACE
    if byte <= _SPACE or byte == _DELETE
    else _DIGIT_ZERO
    if _DIGIT_ZERO <= byte <= _DIGIT_NINE
    else byte
    for byte in range(256)
)

MAX_RUN = 3
SHORT_TEXT = WINDOW_CHARS
"""Texts up to this many characters are squeezed by two regular-expression substitutions, which cost less
than a dozen array operations there (and far more over a long text)."""
# NFKC has made the Unicode spaces U+0020; what is left blank is controls (C0, DEL, C1).
_BLANK_RUN = re.compile(r"[\x00-\x20\x7f-\xa0]+")
_DIGITS_AS_ZERO = str.maketrans("123456789", "0" * 9)
_LONG_RUN = re.compile(f"(.)\\1{{{MAX_RUN},}}", re.DOTALL)
_RUN_KEPT = "\\1" * MAX_RUN


def squeezed_codes(text: str) -> npt.NDArray[np.uint8] | npt.NDArray[np.uint32]:
    """The code points the classifier reads: whitespace runs collapsed to one space, one space at each
    end, every ASCII digit read as 0 (ids, timestamps and counts say nothing about intent) and every run
    of one character cut to its first ``MAX_RUN`` (a rule of 70 "#" or "=" in a source file's banner
    would otherwise weigh as 70 markers). One byte per code for ASCII text."""
    if len(text) <= SHORT_TEXT:
        squeezed = _LONG_RUN.sub(_RUN_KEPT, _BLANK_RUN.sub(" ", f" {text} ").translate(_DIGITS_AS_ZERO))
        if squeezed.isascii():
            return np.frombuffer(squeezed.encode("ascii"), dtype=np.uint8)
        return np.frombuffer(squeezed.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    if text.isascii():
        return _squeezed(np.frombuffer(f" {text} ".encode("ascii").translate(_ASCII_SQUEEZE), dtype=np.uint8))
    codes = np.frombuffer(f" {text} ".encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    blank = (codes <= _SPACE) | ((codes - np.uint32(_DELETE)) <= np.uint32(_C1_END - _DELETE))
    spaced = np.where(blank, np.uint32(_SPACE), codes)
    spaced[(spaced >= _DIGIT_ZERO) & (spaced <= _DIGIT_NINE)] = _DIGIT_ZERO
    return _squeezed(spaced)


def _squeezed[Codes: (np.uint8, np.uint32)](codes: npt.NDArray[Codes]) -> npt.NDArray[Codes]:
    """``codes`` (blanks already spaces) without each space that follows a space and each code that
    repeats the ``MAX_RUN`` before it. Dropping spaces joins no two runs of another character, so one
    mask over the codes as they are gives both steps."""
    repeats = codes[1:] == codes[:-1]
    dropped = repeats & (codes[1:] == _SPACE)
    long_run = repeats[MAX_RUN - 1 :]
    for back in range(1, MAX_RUN):
        long_run = long_run & repeats[MAX_RUN - 1 - back : len(repeats) - back]
    dropped[MAX_RUN - 1 :] |= long_run
    if not dropped.any():
        # A text with no blank run and no long run (much typed prose) is kept whole: picking the kept
        # codes out is most of the squeeze's time.
        return codes
    kept = np.empty(len(codes), dtype=bool)
    kept[0] = True
    np.logical_not(dropped, out=kept[1:])
    return codes[kept]


def _word_mask(codes: npt.NDArray[np.uint8] | npt.NDArray[np.uint32]) -> npt.NDArray[np.bool_]:
    """Whether each of ``codes`` is a word character, with False before and after them all: where it
    changes, words start and end by turns."""
    if codes.dtype != np.uint8:
        codes = np.minimum(codes, 128).astype(np.uint8)
    return np.frombuffer(b"\0" + codes.tobytes().translate(_WORDY) + b"\0", dtype=np.bool_)


def _rows(values: npt.NDArray[np.uint64], first: int, count: int, columns: int) -> npt.NDArray[np.uint64]:
    """A view of ``values`` as ``count`` rows of ``columns``, row r starting at ``values[first + r]``."""
    step = values.itemsize
    return np.ndarray((count, columns), values.dtype, values, first * step, (step, step))


@functools.cache
def _mixed_salts(salt: int, sizes: tuple[int, ...]) -> npt.NDArray[np.uint64]:
    """The salt of each n-gram size times the mixing constant (``_mixed``), one row each, made once."""
    return np.array([[_mixed(salt * size)] for size in sizes], dtype=np.uint64)


_SHIFTS = [np.uint64(64 - bits) for bits in range(65)]
"""The shift that keeps the top ``bits`` bits of a hash, for each number of bits."""


@dataclass(frozen=True, slots=True)
class Grams:
    """The n-grams of a block of squeezed codes, as buckets, one row per n-gram size. ``chars`` has one
    column per start position, ``words`` one per word (its n-grams start where that word does, at
    ``word_starts``); a row's last columns, n-grams that would run past the block's end, hold the empty
    bucket ``dim``, whose weight is 0."""

    chars: npt.NDArray[np.intp]
    word_starts: npt.NDArray[np.intp]
    words: npt.NDArray[np.intp]
    every: npt.NDArray[np.intp]
    """The buckets of ``chars`` then ``words``, in one array (of which they are views)."""


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """How text becomes features; stored in the model file so training and inference agree.

    A feature is a hashed character n-gram or word n-gram; each occurrence counts once, and a window's
    vector is its counts divided by the square root of its number of occurrences, so short prompts and
    long windows weigh alike.
    """

    bits: int
    char_ngrams: tuple[int, ...]
    word_ngrams: tuple[int, ...]
    """Each kind's sizes are consecutive, smallest first (3, 4, 5): their n-grams are read as rows of
    one view."""

    def __post_init__(self) -> None:
        for sizes in (self.char_ngrams, self.word_ngrams):
            if sizes and (sizes[0] < 1 or sizes != tuple(range(sizes[0], sizes[0] + len(sizes)))):
                raise ValueError(f"n-gram sizes {sizes} are not consecutive from the smallest")

    @property
    def dim(self) -> int:
        return 1 << self.bits

    def grams(self, codes: npt.NDArray[np.uint8] | npt.NDArray[np.uint32]) -> Grams:
        """The n-grams of a block of at most ``BLOCK_CHARS`` squeezed codes."""
        length = len(codes)
        if length > BLOCK_CHARS:
            raise ValueError(f"a block holds at most {BLOCK_CHARS} characters, not {length}")
        # Prefix sums of codes[j] * P**j, then zeros: n-grams that would run past the end read them, and
        # are emptied at the end.
        prefix = np.empty(length + max(self.char_ngrams, default=0) + 1, dtype=np.uint64)
        prefix[0] = 0
        prefix[length + 1 :] = 0
        sums = prefix[1 : length + 1]
        np.multiply(codes, _POWERS[:length], out=sums)
        np.add.accumulate(sums, out=sums)
        wordy = _word_mask(codes)
        edges = (wordy[1:] != wordy[:-1]).nonzero()[0]
        word_starts = edges[0::2]
        count = len(word_starts)
        # One array for every n-gram: shifting and weighing them is one operation each.
        char_columns = len(self.char_ngrams) * length
        every = np.empty(char_columns + len(self.word_ngrams) * count, dtype=np.uint64)
        chars = every[:char_columns].reshape(len(self.char_ngrams), length)
        words = every[char_columns:].reshape(len(self.word_ngrams), count)
        if self.char_ngrams:
            # The n-gram of size n at i ends at i + n; sizes are consecutive: one row each, in one view.
            ends = _rows(prefix, self.char_ngrams[0], len(self.char_ngrams), length)
            np.subtract(ends, prefix[:length], out=chars)
        chars *= _MIXED_INVERSE_POWERS[:length]
        chars += _mixed_salts(_CHAR_SALT, self.char_ngrams)
        if self.word_ngrams:
            # The word n-gram of size n at word k ends where word k + n - 1 does.
            end_prefix = np.zeros(count + self.word_ngrams[-1], dtype=np.uint64)
            # Word ends are places of the block, all in range: "raise" would copy through a buffer.
            np.take(prefix, edges[1::2], out=end_prefix[:count], mode="clip")
            word_ends = _rows(end_prefix, self.word_ngrams[0] - 1, len(self.word_ngrams), count)
            np.subtract(word_ends, prefix.take(word_starts), out=words)
        words *= _MIXED_INVERSE_POWERS.take(word_starts)
        words += _mixed_salts(_WORD_SALT, self.word_ngrams)
        # Multiplicative hashing: the top bits of (hash + salt) times an odd constant, from the hashes
        # and the salts each already multiplied by it (modulo 2**64, (h + s) * M = h * M + s * M).
        every >>= _SHIFTS[self.bits]
        # N-grams that would run past the end, the last size - 1 of each row, are emptied.
        for rows, sizes in ((chars, self.char_ngrams), (words, self.word_ngrams)):
            for row, size in enumerate(sizes):
                rows[row, max(0, rows.shape[1] - size + 1) :] = self.dim
        return Grams(chars.view(np.intp), word_starts, words.view(np.intp), every.view(np.intp))

    def features(self, text: str) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        """The sparse vector of a whole (short) text, as training sees it: distinct buckets and values."""
        grams = self.grams(squeezed_codes(text)[:BLOCK_CHARS])
        buckets = grams.every[grams.every < self.dim]
        if not len(buckets):
            return buckets, np.zeros(0)
        unique, counts = np.unique(buckets, return_counts=True)
        return unique, counts / math.sqrt(len(buckets))


WEIGHT_SCALE = 24
"""Half-precision weights are multiples of 2**-24: times 2**24 each is an integer."""
_MAX_WEIGHT = 1 << 7
"""Weights lie below this in magnitude (the trained ones are under 5), so a window's tallies add up to
well under 2**63."""
MAX_SIZES = 8
"""N-gram sizes a model may have, character and word ones together."""
_COUNT_BITS = (WINDOW_CHARS * MAX_SIZES).bit_length()
"""A window's tally keeps its number of n-grams in these low bits: at most one n-gram of each size
starts at each position."""
_COUNT_MASK = (1 << _COUNT_BITS) - 1


def _tallies(weights: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Each bucket's tally: its weight times 2**24 (an integer) shifted past ``_COUNT_BITS`` bits that
    count the n-gram, and 0 for the empty bucket (the last), which is no n-gram. Tallies add up as the
    weights and the counts do side by side: the count bits never carry into the weight's, and an
    arithmetic shift gives the weight back whatever its sign."""
    scaled = np.ldexp(weights, WEIGHT_SCALE)
    if not (np.all(np.abs(weights) < _MAX_WEIGHT) and np.array_equal(scaled, np.round(scaled))):
        raise ValueError(f"weights must be half-precision numbers under {_MAX_WEIGHT} in magnitude")
    tallies = (scaled.astype(np.int64) << _COUNT_BITS) + 1
    tallies[-1] = 0
    return tallies


@dataclass(frozen=True, slots=True)
class InjectionClassifier:
    """Two thresholds, each the score that keeps false positives at or under 1 % in cross-validation on
    its own benign population: requests users type (which are often imperatives addressed to the model)
    and documents tools return (where such an imperative is itself the anomaly). Documents may also have
    one threshold per kind of text (``proxy.scanning.structure``): code addresses its reader far more
    often than a JSON answer or a log does."""

    spec: FeatureSpec
    weights: npt.NDArray[np.float64]
    """One weight per bucket, and a last one of 0 for the empty bucket."""
    bias: float
    threshold_direct: float
    threshold_indirect: float
    threshold_by_structure: Mapping[str, float] = field(default_factory=dict)
    """Thresholds for read content by ``Structure``; a kind not named here takes ``threshold_indirect``."""
    _tallies: npt.NDArray[np.int64] = field(init=False, repr=False, compare=False)
    """Each bucket's weight and count in one integer (``_tally``): a window's sum of them is both its
    sum of weights and its number of n-grams, from one lookup per n-gram."""
    _scratch: threading.local = field(init=False, repr=False, compare=False)
    """Per thread, an array the n-grams' tallies are looked up into (``_scratch_for``)."""

    def __post_init__(self) -> None:
        sizes = len(self.spec.char_ngrams) + len(self.spec.word_ngrams)
        if sizes > MAX_SIZES:
            raise ValueError(f"model has {sizes} n-gram sizes, more than {MAX_SIZES}")
        object.__setattr__(self, "_tallies", _tallies(self.weights))
        object.__setattr__(self, "_scratch", threading.local())

    @classmethod
    def create(
        cls,
        spec: FeatureSpec,
        weights: npt.NDArray[np.floating[Any]],
        bias: float,
        direct: float,
        indirect: float,
        by_structure: Mapping[str, float] | None = None,
    ) -> InjectionClassifier:
        if len(weights) != spec.dim:
            raise ValueError(f"model has {len(weights)} weights for a dimension of {spec.dim}")
        unknown = set(by_structure or ()) - set(Structure)
        if unknown:
            raise ValueError(f"thresholds for unknown kinds of text: {sorted(unknown)}")
        weights64 = np.append(weights, 0.0).astype(np.float64)
        return cls(spec, weights64, bias, direct, indirect, dict(by_structure or {}))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InjectionClassifier:
        if data.get("format") != MODEL_FORMAT:
            raise ValueError(f"model format {data.get('format')!r} is not {MODEL_FORMAT}")
        spec = FeatureSpec(
            bits=int(data["bits"]),
            char_ngrams=tuple(int(size) for size in data["char_ngrams"]),
            word_ngrams=tuple(int(size) for size in data["word_ngrams"]),
        )
        raw = zlib.decompress(base64.b64decode(data["weights_f16"]))
        weights = np.frombuffer(raw, dtype="<f2")
        return cls.create(
            spec,
            weights,
            float(data["bias"]),
            float(data["threshold_direct"]),
            float(data["threshold_indirect"]),
            {str(kind): float(value) for kind, value in data.get("threshold_by_structure", {}).items()},
        )

    def to_dict(self) -> dict[str, Any]:
        packed = zlib.compress(self.weights[:-1].astype("<f2").tobytes(), 9)
        return {
            "format": MODEL_FORMAT,
            "bits": self.spec.bits,
            "char_ngrams": list(self.spec.char_ngrams),
            "word_ngrams": list(self.spec.word_ngrams),
            "bias": round(self.bias, 5),
            "threshold_direct": round(self.threshold_direct, 4),
            "threshold_indirect": round(self.threshold_indirect, 4),
            "threshold_by_structure": {
                kind: round(value, 4) for kind, value in sorted(self.threshold_by_structure.items())
            },
            "weights_f16": base64.b64encode(packed).decode("ascii"),
        }

    @classmethod
    def load(cls, path: Path) -> InjectionClassifier:
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def score(self, text: str) -> float:
        """The highest window score of a normalised text: that of the window with the highest logit, as
        every step from a window's tally to its score keeps the order (the bias is added and the scale
        applied to that window alone, which rounds as adding and scaling each would)."""
        tallies = self._window_tallies(text)
        if len(tallies) == 1:
            return self._probability(int(tallies[0]))
        ratios = (tallies >> _COUNT_BITS) / np.sqrt(np.maximum(tallies & _COUNT_MASK, 1))
        return self._probability(int(tallies[np.argmax(ratios)]))

    def window_scores(self, text: str) -> list[float]:
        """The probability that each window of a normalised text carries an injection."""
        return [self._probability(int(tally)) for tally in self._window_tallies(text)]

    def _probability(self, tally: int) -> float:
        """A window's score from its tally: the logistic of the bias plus its sum of weights over the
        square root of its number of n-grams (at least 1)."""
        ratio = (tally >> _COUNT_BITS) / math.sqrt(max(tally & _COUNT_MASK, 1))
        logit = self.bias + math.ldexp(ratio, -WEIGHT_SCALE)
        return float(1.0 / (1.0 + np.exp(-min(max(logit, -60.0), 60.0))))

    def _window_tallies(self, text: str) -> npt.NDArray[np.int64]:
        """The tally of each window of a normalised text, block by block."""
        codes = squeezed_codes(text)
        if len(codes) <= BLOCK_CHARS:
            return self._block_tallies(codes)
        reach = BLOCK_CHARS - WINDOW_CHARS
        return np.concatenate(
            [
                self._block_tallies(codes[start : start + BLOCK_CHARS])
                for start in range(0, max(1, len(codes) - WINDOW_CHARS), reach)
            ]
        )

    def _block_tallies(self, codes: npt.NDArray[np.uint8] | npt.NDArray[np.uint32]) -> npt.NDArray[np.int64]:
        """Each window's tally (``_tallies``): the sum of those of the n-grams starting in it (an n-gram
        belongs to the window it starts in), summed by steps of WINDOW_STEP, a window being whole steps.
        The sums are of integers, exact in any order: each window's sum of weights is exactly what adding
        its half-precision weights in double precision gives."""
        spec = self.spec
        length = len(codes)
        if length <= WINDOW_CHARS:
            # One window: where each n-gram starts does not matter.
            return np.add.reduce(self._tallies.take(spec.grams(codes).every), keepdims=True)
        per_position = np.empty(length, dtype=np.int64)
        if length <= _CHUNK:
            self._weigh(codes, length, False, per_position)
        else:
            # A long block is weighed a chunk of positions at a time, so that the arrays stay in the
            # cache: each chunk's n-grams are those of a slice that reaches as far as they do.
            wordy = _word_mask(codes)
            edges = (wordy[1:] != wordy[:-1]).nonzero()[0]
            starts, ends = edges[0::2], edges[1::2]
            reach = max(spec.word_ngrams, default=1) - 1
            for start in range(0, length, _CHUNK):
                stop = min(length, start + _CHUNK)
                needed = min(len(starts), int(np.searchsorted(starts, stop)) + reach)
                end = max(stop + max(spec.char_ngrams, default=1) - 1, ends[needed - 1] if needed else 0)
                # wordy[start] is whether the code just before the chunk is a word character.
                self._weigh(
                    codes[start : min(length, end)],
                    stop - start,
                    bool(wordy[start]),
                    per_position[start:stop],
                )
        # Every window but the last (flush with the end) starts on a step and spans whole steps.
        regular = -(-(length - WINDOW_CHARS) // WINDOW_STEP)
        steps = regular + _STEPS_PER_WINDOW - 1
        step_sums = np.add.reduce(per_position[: steps * WINDOW_STEP].reshape(steps, WINDOW_STEP), axis=1)
        sums = np.empty(regular + 1, dtype=np.int64)
        np.add(step_sums[:regular], step_sums[1 : regular + 1], out=sums[:regular])
        for step in range(2, _STEPS_PER_WINDOW):
            sums[:regular] += step_sums[step : step + regular]
        sums[regular] = np.add.reduce(per_position[length - WINDOW_CHARS :])
        return sums

    def _weigh(
        self,
        codes: npt.NDArray[np.uint8] | npt.NDArray[np.uint32],
        kept: int,
        word_continues: bool,
        out: npt.NDArray[np.int64],
    ) -> None:
        """Into ``out`` (``kept`` tallies): the sum of the tallies of the n-grams starting at each of the
        first ``kept`` positions of ``codes``. ``codes`` reaches past them as far as their n-grams do;
        when it starts inside a word (``word_continues``) that word's n-grams belong before it and are
        left out."""
        grams = self.spec.grams(codes)
        # The tallies go to a scratch array kept for the thread, grown to the largest block seen: no
        # array of the block's size is allocated again. Every bucket is in range by construction (the top
        # ``bits`` bits of a hash, or ``dim``), so "clip" changes none: "raise" would have numpy write the
        # tallies to a buffer of its own and copy them over, a third of the lookup's time.
        tallies = self._scratch_for(grams.every.size)
        np.take(self._tallies, grams.every, out=tallies, mode="clip")
        char_columns = grams.chars.size
        chars = tallies[:char_columns].reshape(grams.chars.shape)
        words = tallies[char_columns:].reshape(grams.words.shape)
        np.add.reduce(chars[:, :kept], axis=0, out=out)
        starts = grams.word_starts
        first = 1 if word_continues and len(starts) and starts[0] == 0 else 0
        last = int(np.searchsorted(starts, kept)) if len(codes) > kept else len(starts)
        if last > first:
            # Each word starts at a place of its own: its sums go there, no two into one.
            out[starts[first:last]] += np.add.reduce(words[:, first:last], axis=0)

    def _scratch_for(self, size: int) -> npt.NDArray[np.int64]:
        """The first ``size`` places of this thread's scratch array, grown when a block needs more."""
        scratch: npt.NDArray[np.int64] | None = getattr(self._scratch, "tallies", None)
        if scratch is None or len(scratch) < size:
            scratch = np.empty(size, dtype=np.int64)
            self._scratch.tallies = scratch
        return scratch[:size]

    def threshold(self, source: Source, structure: Structure | None = None) -> float:
        """The threshold for text from ``source``; for read content, that of its kind when known."""
        if source not in READ_CONTENT_SOURCES:
            return self.threshold_direct
        return self.threshold_by_structure.get(structure or "", self.threshold_indirect)

    def needs_structure(self, source: Source, score: float) -> bool:
        """Whether the kind of a text with this score from this source could change the verdict."""
        return (
            source in READ_CONTENT_SOURCES
            and bool(self.threshold_by_structure)
            and score >= min(self.threshold_indirect, *self.threshold_by_structure.values())
        )


def _severity_for_score(score: float) -> Severity:
    return Severity.HIGH if score >= 0.9 else Severity.MEDIUM


QUARANTINE_NOTICE = "[egressguard: content withheld as a suspected prompt injection"
"""How a quarantined span reads: it goes on with the rules that matched and, in the proxy, the event id."""


def quarantine_marker(rules: Iterable[str], event_id: str | None = None) -> str:
    """What stands in for a withheld span: the notice, the rules that found it and the audit event."""
    named = f"{QUARANTINE_NOTICE} ({', '.join(sorted(set(rules)))})"
    return f"{named}; event {event_id}]" if event_id else f"{named}]"


def withhold(text: str, spans: Iterable[tuple[int, int]], marker: str) -> str:
    """``text`` with each of the (start, end) ``spans``, in order and apart, replaced by ``marker``."""
    for start, end in reversed(list(spans)):
        text = text[:start] + marker + text[end:]
    return text


USER_ORIGIN = "user"
CONTENT_ORIGIN = "content"
CACHE_ENTRIES = 4096
"""Verdicts kept, the least recently used dropped first, keyed by a digest of (source, text): a
conversation's history comes back every turn. A new policy or model makes a new detector, whose cache
starts empty."""

# Where a flagged text is cut into pieces to find the offending ones: blank lines, line breaks, the end
# of a sentence, and the boundary between two JSON string values.
_SEGMENT_BREAK = re.compile(r'\n|(?<=[.!?])\s+|(?<=")\s*[,:]\s*(?=")')


def origin_of(source: Source) -> str:
    """Who put an injection there: the user who typed it, or content the agent read."""
    return USER_ORIGIN if source is Source.USER else CONTENT_ORIGIN


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What the detector found in one text from one source, before the finding is placed (``where``)."""

    hits: tuple[tuple[str, Severity], ...]
    score: float | None
    signals: tuple[str, ...]
    structure: Structure | None = None
    """The text's kind, when its score made it matter (``InjectionClassifier.needs_structure``)."""
    timed_out: tuple[str, ...] = field(default=(), compare=False)
    """The rules that ran out of time on the text even when run again (``Scanner.scan``'s ``timed_out``):
    what they would have found is unknown, so the verdict is not cached and the text is judged again when
    it returns, and each is a finding of its own (``SCAN_TIMEOUT_RULE``)."""


class InjectionDetector:
    def __init__(
        self,
        packs: Iterable[RulePack],
        classifier: InjectionClassifier | None,
        *,
        cache_entries: int = CACHE_ENTRIES,
        timeout_s: float = 0.05,
    ) -> None:
        """``timeout_s``: each rule's time limit over a text (``Scanner``)."""
        self._scanner = Scanner(packs, timeout_s=timeout_s)
        self._rules = {rule.id: rule for rule in (*self._scanner.rules, UNREAD)}
        self.classifier = classifier
        self._cache: OrderedDict[bytes, _Verdict] = OrderedDict()
        self._cache_entries = cache_entries
        # Large bodies are inspected in worker threads beside the event loop's: a verdict found must
        # not be evicted by another thread before it is marked recent.
        self._cache_lock = threading.Lock()
        # A secret of this detector's own: nobody can make two texts that share a key without it.
        self._cache_salt = os.urandom(16)

    def detect(
        self, text: str, where: str, source: Source, budget: ScanBudget | None = None
    ) -> list[Finding]:
        """Findings for one piece of prompt text: at most one per rule, plus one for the classifier. Its
        scans are charged to ``budget`` (that of the request, response or message the text is part of;
        else one of its own)."""
        if not text.strip():
            return []
        return self._findings(self._verdict(text, source, budget or self._scanner.budget()), where, source)

    def suspect_spans(
        self, text: str, source: Source, budget: ScanBudget | None = None
    ) -> list[tuple[int, int]]:
        """The (start, end) pieces of a flagged text that carry the injection on their own (or that a
        rule ran out of time on: none of it is known to be clean): lines, sentences or JSON values,
        adjacent ones merged. When no piece does (the attack needs the pieces together), the whole
        text."""
        budget = budget or self._scanner.budget()
        spans: list[tuple[int, int]] = []
        start = 0
        # A piece is judged as part of the whole: one line of a JSON answer is still JSON.
        structure = structure_of(text) if source in READ_CONTENT_SOURCES else None
        for piece_end in [match.start() for match in _SEGMENT_BREAK.finditer(text)] + [len(text)]:
            piece = text[start:piece_end]
            verdict = self._judge(piece, source, budget, structure) if piece.strip() else None
            if verdict is not None and (verdict.timed_out or self._flags(verdict, source)):
                if spans and not text[spans[-1][1] : start].strip():
                    spans[-1] = (spans[-1][0], piece_end)
                else:
                    # The break a piece starts with (a line break, a sentence's space) stays in place.
                    spans.append((start + len(piece) - len(piece.lstrip()), piece_end))
            start = piece_end
        return spans or [(0, len(text))]

    def quarantine(self, text: str, source: Source, marker: str, budget: ScanBudget | None = None) -> str:
        """``text`` with each suspect span (``suspect_spans``) replaced by ``marker``."""
        return withhold(text, self.suspect_spans(text, source, budget), marker)

    def _verdict(self, text: str, source: Source, budget: ScanBudget) -> _Verdict:
        key = self._cache_key(text, source)
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        verdict = self._judge(text, source, budget)
        if source is Source.USER and self._flags(verdict, source):
            # A user who quotes an attack to ask about it is not typing one.
            frame = discussion_frame(text)
            if frame is not None:
                timed_out = verdict.timed_out
                verdict = self._judge(frame, source, budget)
                verdict = replace(verdict, timed_out=tuple(dict.fromkeys(timed_out + verdict.timed_out)))
        if not verdict.timed_out:
            with self._cache_lock:
                self._cache[key] = verdict
                if len(self._cache) > self._cache_entries:
                    self._cache.popitem(last=False)
        return verdict

    def _cache_key(self, text: str, source: Source) -> bytes:
        """A salted SHA-256 of the source and the text (SHA-256 is the quickest 256-bit hash where the
        processor computes it): two texts share a key only by a collision of 256-bit hashes of a secret
        prefix, so no text can be made to take another's verdict."""
        digest = hashlib.sha256(self._cache_salt)
        digest.update(f"{source}\0".encode())
        digest.update(text.encode("utf-8", "surrogatepass"))
        return digest.digest()

    def _judge(
        self, text: str, source: Source, budget: ScanBudget, structure: Structure | None = None
    ) -> _Verdict:
        if budget.spent_for(len(text)):
            # Once the budget is spent nothing more is read (no normalisation, no rule, no classifier),
            # which bounds the work of a request: what the detector would find in the text is not known.
            budget.timed_out.setdefault(UNREAD.id, UNREAD)
            return _Verdict((), None, (), structure, (UNREAD.id,))
        indirect = source in INDIRECT_SOURCES
        hits: dict[str, Severity] = {}
        timed_out: dict[str, None] = {}
        score = None
        # One meter for the normalisation, the scans and the classifier: the CPU clock is read at the
        # start and at the end, where a meter each read it twice; before the classifier only where the
        # wall clock since the last reading (never less than the CPU time) leaves the budget spent.
        with budget.metered() as meter:
            normalized = normalize(text)
            signals = set(normalized.signals)
            # A turned form's reading is told only where it found what the text as written does not
            # hold: a word asking for a turning beside a plain attack says nothing of how it hid.
            readings: list[str | None] = [None] * len(normalized.texts)
            readings += normalized.readings
            for form, reading in zip(normalized.texts + normalized.turned, readings, strict=True):
                budget.allow(len(form))
                scanned = self._scanner.scan_metered(form, meter, merge=False)
                timed_out.update(dict.fromkeys(scanned.timed_out))
                for match in scanned.found:
                    rule = match.rule
                    if rule.id.startswith(INDIRECT_ONLY_RULE_PREFIX) and not indirect:
                        continue
                    if reading is not None and rule.id not in hits:
                        signals.add(reading)
                    hits.setdefault(rule.id, rule.severity)
            if self.classifier is not None and meter.left() <= 0 and budget.left - meter.settle() <= 0:
                budget.timed_out.setdefault(UNREAD.id, UNREAD)
                timed_out[UNREAD.id] = None
            elif self.classifier is not None:
                score = max(self.classifier.score(form) for form in normalized.texts)
                if structure is None and self.classifier.needs_structure(source, score):
                    structure = structure_of(text)
        return _Verdict(tuple(hits.items()), score, tuple(sorted(signals)), structure, tuple(timed_out))

    def _flags(self, verdict: _Verdict, source: Source) -> bool:
        return bool(verdict.hits) or self._over_threshold(verdict, source)

    def _over_threshold(self, verdict: _Verdict, source: Source) -> bool:
        return (
            self.classifier is not None
            and verdict.score is not None
            and verdict.score >= self.classifier.threshold(source, verdict.structure)
        )

    def _findings(self, verdict: _Verdict, where: str, source: Source) -> list[Finding]:
        over_threshold = self._over_threshold(verdict, source)
        timeouts = _timeout_findings(verdict, self._rules, where, source)
        if not verdict.hits and not over_threshold:
            return timeouts
        indirect = source in INDIRECT_SOURCES
        signals = verdict.signals
        action = Action.FLAG if indirect else Action.BLOCK
        extra: dict[str, Any] = {"source": str(source)}
        if signals:
            extra["obfuscation"] = list(signals)
        findings = [
            Finding(
                threat=Threat.PROMPT_INJECTION,
                rule=rule_id,
                signal=f"rule {rule_id}" + (f" after {', '.join(signals)}" if signals else ""),
                severity=severity,
                action=action,
                where=where,
                owasp=OWASP,
                extra=extra,
                origin=origin_of(source),
            )
            for rule_id, severity in verdict.hits
        ]
        if over_threshold:
            assert verdict.score is not None
            findings.append(
                Finding(
                    threat=Threat.PROMPT_INJECTION,
                    rule=CLASSIFIER_RULE,
                    signal=f"classifier score {verdict.score:.2f}",
                    severity=_severity_for_score(verdict.score),
                    action=action,
                    where=where,
                    owasp=OWASP,
                    extra=extra,
                    origin=origin_of(source),
                )
            )
        if indirect:
            strongest = max(findings, key=lambda finding: SEVERITY_ORDER[finding.severity])
            findings.append(
                replace(
                    strongest,
                    threat=Threat.CONTEXT_POISONING,
                    signal=f"injection in {source} content: {strongest.signal}",
                    action=Action.FLAG,
                    owasp=CONTEXT_POISONING_OWASP,
                )
            )
        return findings + timeouts


def _timeout_findings(verdict: _Verdict, rules: dict[str, Rule], where: str, source: Source) -> list[Finding]:
    """A finding for each rule that ran out of time on the text (``scan_timeout_finding``), with the
    action of the rule's own findings there (block typed text; read content takes the policy's action for
    indirect injection), so a text crafted to keep a rule busy does not pass where the policy enforces
    prompt injection."""
    action = Action.FLAG if source in INDIRECT_SOURCES else Action.BLOCK
    return [
        replace(
            scan_timeout_finding(
                rules[rule_id], where, action=action, threat=Threat.PROMPT_INJECTION, source=str(source)
            ),
            owasp=OWASP,
            origin=origin_of(source),
        )
        for rule_id in verdict.timed_out
    ]


def load_default_classifier() -> InjectionClassifier:
    """The packaged model (``egressguard_rules/injection_model.json``), or the checkout's rules/ copy."""
    try:
        resource = importlib.resources.files(RULES_PACKAGE).joinpath(MODEL_FILE)
        return InjectionClassifier.from_dict(json.loads(resource.read_text(encoding="utf-8")))
    except ModuleNotFoundError:
        return InjectionClassifier.load(pack_path("injection").with_name(MODEL_FILE))


def load_default(timeout_s: float = 0.05) -> InjectionDetector:
    """The detector with the packaged injection rules and model, each rule's time limit ``timeout_s``."""
    return InjectionDetector(
        [load_pack(pack_path("injection"))], load_default_classifier(), timeout_s=timeout_s
    )
