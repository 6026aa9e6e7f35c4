"""Task classification, exactly as SPEC §1.2 states it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from tierlog.domain.config import TierName
from tierlog.domain.events import Classification, ClassificationSignals, RequestedTier

COMPLEX_KEYWORDS: tuple[str, ...] = (
    "refactor",
    "architect",
    "migration",
    "redesign",
    "migrate",
    "security",
    "overhaul",
    "rewrite",
)
TRIVIAL_KEYWORDS: tuple[str, ...] = (
    "fix typo",
    "update readme",
    "bump version",
    "rename",
    "typo",
    "format",
    "lint",
    "version bump",
)
VALID_TIERS: tuple[RequestedTier, ...] = ("trivial", "standard", "complex", "unknown")
# Ties between votes prefer standard, then complex, then trivial.
_TIE_PREFERENCE: tuple[TierName, ...] = ("standard", "complex", "trivial")

Vote = Literal["trivial", "standard", "complex"]


def read_signals(
    description: str, file_hints: Sequence[str], verification_steps: Sequence[str]
) -> ClassificationSignals:
    """Measure the heuristic's four signals."""
    lowered = description.lower()
    return ClassificationSignals(
        word_count=len(description.split()),
        file_count=len(file_hints),
        verification_count=len(verification_steps),
        complex_keywords=tuple(k for k in COMPLEX_KEYWORDS if k in lowered),
        trivial_keywords=tuple(k for k in TRIVIAL_KEYWORDS if k in lowered),
    )


def _count_vote(count: int) -> Vote:
    if count == 0:
        return "trivial"
    if count <= 3:
        return "standard"
    return "complex"


def _word_vote(words: int) -> Vote:
    if words < 10:
        return "trivial"
    if words > 50:
        return "complex"
    return "standard"


def infer_tier(signals: ClassificationSignals) -> tuple[RequestedTier, float]:
    """The heuristic's tier and confidence for the given signals (rules 1–4)."""
    words, files, checks = signals.word_count, signals.file_count, signals.verification_count
    if (
        words == 0
        and files == 0
        and checks == 0
        and not (signals.complex_keywords or signals.trivial_keywords)
    ):
        return "unknown", 0.0
    if signals.complex_keywords:
        bonus = sum(0.1 for big in (files > 3, checks > 3, words > 50) if big)
        return "complex", round(0.7 + bonus, 4)
    if signals.trivial_keywords and files <= 3 and checks <= 3:
        return "trivial", 0.9 if words < 10 else 0.75
    votes = [_word_vote(words), _count_vote(files), _count_vote(checks)]
    best = max(votes.count(t) for t in _TIE_PREFERENCE)
    winner = next(t for t in _TIE_PREFERENCE if votes.count(t) == best)
    confidence = round(best / len(votes), 4)
    if winner == "trivial" and not signals.trivial_keywords:
        return "standard", confidence
    return winner, confidence


def classify(
    description: str,
    file_hints: Sequence[str],
    verification_steps: Sequence[str],
    explicit_tier: RequestedTier | None,
) -> Classification:
    """Classify a task: an explicit tier wins, and the heuristic is recorded either way."""
    signals = read_signals(description, file_hints, verification_steps)
    heuristic_tier, heuristic_confidence = infer_tier(signals)
    if explicit_tier is not None:
        return Classification(
            tier=explicit_tier,
            source="explicit",
            confidence=1.0,
            signals=signals,
            heuristic_tier=heuristic_tier,
            heuristic_confidence=heuristic_confidence,
        )
    return Classification(
        tier=heuristic_tier,
        source="inferred",
        confidence=heuristic_confidence,
        signals=signals,
        heuristic_tier=heuristic_tier,
        heuristic_confidence=heuristic_confidence,
    )


def route_tier(classification: Classification) -> TierName:
    """The tier a classification routes at: ``unknown`` routes as standard."""
    tier = classification.tier
    return "standard" if tier == "unknown" else tier


def classification_reason(classification: Classification) -> str:
    """A one-line reason, e.g. ``inferred:standard (confidence 0.67, word_count=14, files=1)``."""
    s = classification.signals
    parts = [f"confidence {classification.confidence:.2f}", f"word_count={s.word_count}"]
    if s.file_count:
        parts.append(f"files={s.file_count}")
    if s.verification_count:
        parts.append(f"verification={s.verification_count}")
    keywords = s.complex_keywords + s.trivial_keywords
    if keywords:
        parts.append("keywords=" + "|".join(keywords))
    if classification.source == "explicit":
        parts.append(f"heuristic={classification.heuristic_tier}")
    return f"{classification.source}:{classification.tier} ({', '.join(parts)})"
