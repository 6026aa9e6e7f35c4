from __future__ import annotations

import pytest

from tierlog.domain.classification import (
    COMPLEX_KEYWORDS,
    TRIVIAL_KEYWORDS,
    VALID_TIERS,
    classification_reason,
    classify,
    infer_tier,
    read_signals,
    route_tier,
)
from tierlog.domain.events import ClassificationSignals

SPEC_COMPLEX = (
    "refactor",
    "architect",
    "migration",
    "redesign",
    "migrate",
    "security",
    "overhaul",
    "rewrite",
)
SPEC_TRIVIAL = (
    "fix typo",
    "update readme",
    "bump version",
    "rename",
    "typo",
    "format",
    "lint",
    "version bump",
)


def text(n: int, lead: str = "") -> str:
    """A description of exactly ``n`` words, starting with ``lead``; filler has no keyword."""
    head = lead.split()
    assert len(head) <= n
    return " ".join([*head, *(["alpha"] * (n - len(head)))])


def items(n: int) -> list[str]:
    return [f"item{i}" for i in range(n)]


def run(words: int, files: int, checks: int, lead: str = "") -> tuple[str, float]:
    c = classify(text(words, lead), items(files), items(checks), None)
    return c.tier, c.confidence


# --- keyword lists -------------------------------------------------------------------


def test_keyword_lists_match_spec() -> None:
    assert COMPLEX_KEYWORDS == SPEC_COMPLEX
    assert TRIVIAL_KEYWORDS == SPEC_TRIVIAL
    assert VALID_TIERS == ("trivial", "standard", "complex", "unknown")


@pytest.mark.parametrize("keyword", SPEC_COMPLEX)
@pytest.mark.parametrize("case", [str.lower, str.upper, str.title])
def test_each_complex_keyword_classifies_complex(keyword: str, case) -> None:
    c = classify(f"please {case(keyword)} the module", [], [], None)
    assert (c.tier, c.confidence, c.source) == ("complex", 0.7, "inferred")
    assert keyword in c.signals.complex_keywords


@pytest.mark.parametrize("keyword", SPEC_TRIVIAL)
@pytest.mark.parametrize("case", [str.lower, str.upper, str.title])
def test_each_trivial_keyword_classifies_trivial(keyword: str, case) -> None:
    c = classify(f"please {case(keyword)} now", [], [], None)
    assert (c.tier, c.confidence, c.source) == ("trivial", 0.9, "inferred")
    assert keyword in c.signals.trivial_keywords


@pytest.mark.parametrize(
    ("description", "tier"),
    [
        ("Reformatted the config", "trivial"),  # "format" inside a word
        ("add LINTING to ci", "trivial"),  # "lint" inside a word
        ("typography tweaks", "trivial"),  # "typo" inside a word
        ("write the Architecture doc", "complex"),  # "architect" inside a word
        ("we MIGRATED the db", "complex"),  # "migrate" inside a word
        ("Rewrites everywhere", "complex"),
        ("Renamed helpers", "trivial"),
    ],
)
def test_keyword_match_is_case_insensitive_substring(description: str, tier: str) -> None:
    assert classify(description, [], [], None).tier == tier


# --- signals -------------------------------------------------------------------------


def test_read_signals_counts_and_keywords_in_list_order() -> None:
    s = read_signals("Refactor and fix TYPO in the MIGRATION", ["a", "b"], ["c"])
    assert s == ClassificationSignals(
        word_count=7,
        file_count=2,
        verification_count=1,
        complex_keywords=("refactor", "migration"),
        trivial_keywords=("fix typo", "typo"),
    )


@pytest.mark.parametrize(
    ("description", "words"),
    [("", 0), ("   \t\n ", 0), ("one", 1), ("a  b\tc\nd", 4), (" lead and trail ", 3)],
)
def test_word_count_splits_on_whitespace(description: str, words: int) -> None:
    assert read_signals(description, [], []).word_count == words


# --- rule 1 --------------------------------------------------------------------------


@pytest.mark.parametrize("description", ["", "   ", "\n\t"])
def test_rule1_all_signals_zero_is_unknown(description: str) -> None:
    c = classify(description, [], [], None)
    assert (c.tier, c.confidence, c.source) == ("unknown", 0.0, "inferred")
    assert (c.heuristic_tier, c.heuristic_confidence) == ("unknown", 0.0)


@pytest.mark.parametrize(("files", "checks"), [(1, 0), (0, 1)])
def test_rule1_needs_every_signal_zero(files: int, checks: int) -> None:
    assert classify("", items(files), items(checks), None).tier != "unknown"


# --- rule 2 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "files", "checks", "confidence"),
    [
        (2, 0, 0, 0.7),
        (2, 3, 0, 0.7),
        (2, 4, 0, 0.8),
        (2, 0, 3, 0.7),
        (2, 0, 4, 0.8),
        (50, 0, 0, 0.7),
        (51, 0, 0, 0.8),
        (2, 4, 4, 0.9),
        (51, 4, 0, 0.9),
        (51, 0, 4, 0.9),
        (51, 4, 4, 1.0),
        (80, 10, 10, 1.0),
    ],
)
def test_rule2_complex_keyword_confidence_bonuses(
    words: int, files: int, checks: int, confidence: float
) -> None:
    assert run(words, files, checks, "refactor module") == ("complex", confidence)


def test_rule2_complex_keyword_beats_trivial_keyword() -> None:
    c = classify("rename and refactor", [], [], None)
    assert (c.tier, c.confidence) == ("complex", 0.7)
    assert c.signals.trivial_keywords == ("rename",)


# --- rule 3 --------------------------------------------------------------------------


def test_rule3_spec_example_fix_typo_in_readme() -> None:
    c = classify("fix typo in readme", [], [], None)
    assert (c.tier, c.confidence, c.source) == ("trivial", 0.9, "inferred")


@pytest.mark.parametrize(
    ("words", "files", "checks", "confidence"),
    [
        (2, 0, 0, 0.9),
        (9, 0, 0, 0.9),
        (10, 0, 0, 0.75),
        (30, 0, 0, 0.75),
        (60, 0, 0, 0.75),
        (2, 3, 0, 0.9),
        (2, 0, 3, 0.9),
        (2, 3, 3, 0.9),
        (20, 3, 3, 0.75),
    ],
)
def test_rule3_trivial_keyword_within_limits(
    words: int, files: int, checks: int, confidence: float
) -> None:
    assert run(words, files, checks, "fix typo") == ("trivial", confidence)


@pytest.mark.parametrize(
    ("words", "files", "checks", "tier", "confidence"),
    [
        (2, 4, 0, "trivial", 0.6667),  # votes trivial/complex/trivial; keyword keeps trivial
        (2, 0, 4, "trivial", 0.6667),
        (2, 4, 2, "standard", 0.3333),  # three-way tie -> standard
        (20, 4, 4, "complex", 0.6667),
        (60, 5, 5, "complex", 1.0),
        (20, 4, 1, "standard", 0.6667),
    ],
)
def test_rule3_trivial_keyword_over_limits_falls_through_to_votes(
    words: int, files: int, checks: int, tier: str, confidence: float
) -> None:
    assert run(words, files, checks, "fix typo") == (tier, confidence)


# --- rule 4 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "files", "checks", "tier", "confidence"),
    [
        # trivial by votes alone is raised to standard; confidence stays the share
        (5, 0, 0, "standard", 1.0),
        (5, 1, 0, "standard", 0.6667),
        (51, 0, 0, "standard", 0.6667),
        (0, 1, 0, "standard", 0.6667),
        (0, 0, 1, "standard", 0.6667),
        # standard majorities
        (14, 1, 0, "standard", 0.6667),
        (10, 1, 1, "standard", 1.0),
        (50, 3, 3, "standard", 1.0),
        (9, 1, 1, "standard", 0.6667),
        (20, 3, 4, "standard", 0.6667),
        # complex majorities
        (51, 4, 4, "complex", 1.0),
        (51, 4, 0, "complex", 0.6667),
        (20, 4, 4, "complex", 0.6667),
        (0, 4, 4, "complex", 0.6667),
        # three-way ties prefer standard
        (5, 2, 7, "standard", 0.3333),
        (20, 0, 4, "standard", 0.3333),
        (60, 0, 1, "standard", 0.3333),
        (60, 1, 0, "standard", 0.3333),
    ],
)
def test_rule4_votes(words: int, files: int, checks: int, tier: str, confidence: float) -> None:
    assert run(words, files, checks) == (tier, confidence)


@pytest.mark.parametrize(
    ("signals", "expected"),
    [
        (ClassificationSignals(word_count=5, file_count=0, verification_count=0), "standard"),
        (
            ClassificationSignals(
                word_count=5, file_count=0, verification_count=5, trivial_keywords=("lint",)
            ),
            "trivial",
        ),
        (
            ClassificationSignals(
                word_count=5, file_count=5, verification_count=0, trivial_keywords=("lint",)
            ),
            "trivial",
        ),
    ],
)
def test_rule4_trivial_only_kept_with_trivial_keyword(
    signals: ClassificationSignals, expected: str
) -> None:
    assert infer_tier(signals)[0] == expected


def test_rule4_confidence_rounded_to_four_places() -> None:
    assert run(14, 1, 0)[1] == round(2 / 3, 4) == 0.6667
    assert run(5, 2, 7)[1] == round(1 / 3, 4) == 0.3333


# --- explicit tier -------------------------------------------------------------------


@pytest.mark.parametrize("explicit", ["trivial", "standard", "complex", "unknown"])
@pytest.mark.parametrize(
    ("description", "files", "heuristic", "heuristic_confidence"),
    [
        ("refactor the auth layer", 0, "complex", 0.7),
        ("fix typo in readme", 0, "trivial", 0.9),
        ("", 0, "unknown", 0.0),
        (text(14), 1, "standard", 0.6667),
    ],
)
def test_explicit_tier_wins_and_heuristic_is_recorded(
    explicit: str, description: str, files: int, heuristic: str, heuristic_confidence: float
) -> None:
    c = classify(description, items(files), [], explicit)
    assert (c.tier, c.source, c.confidence) == (explicit, "explicit", 1.0)
    assert (c.heuristic_tier, c.heuristic_confidence) == (heuristic, heuristic_confidence)
    assert c.signals == read_signals(description, items(files), [])


def test_inferred_records_heuristic_equal_to_result() -> None:
    c = classify(text(14), items(1), [], None)
    assert (c.tier, c.source, c.confidence) == ("standard", "inferred", 0.6667)
    assert (c.heuristic_tier, c.heuristic_confidence) == ("standard", 0.6667)


# --- route_tier ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("description", "explicit", "routed"),
    [
        ("", None, "standard"),
        ("anything", "unknown", "standard"),
        ("anything", "trivial", "trivial"),
        ("anything", "standard", "standard"),
        ("anything", "complex", "complex"),
        ("fix typo in readme", None, "trivial"),
        ("refactor it", None, "complex"),
    ],
)
def test_route_tier_maps_unknown_to_standard(
    description: str, explicit: str | None, routed: str
) -> None:
    assert route_tier(classify(description, [], [], explicit)) == routed


# --- classification_reason -----------------------------------------------------------


@pytest.mark.parametrize(
    ("description", "files", "checks", "explicit", "reason"),
    [
        (
            text(14),
            1,
            0,
            None,
            "inferred:standard (confidence 0.67, word_count=14, files=1)",
        ),
        ("", 0, 0, None, "inferred:unknown (confidence 0.00, word_count=0)"),
        (
            "refactor the auth module",
            2,
            1,
            None,
            "inferred:complex (confidence 0.70, word_count=4, files=2, verification=1,"
            " keywords=refactor)",
        ),
        (
            "fix typo in readme",
            0,
            0,
            None,
            "inferred:trivial (confidence 0.90, word_count=4, keywords=fix typo|typo)",
        ),
        (
            "fix typo in readme",
            0,
            0,
            "complex",
            "explicit:complex (confidence 1.00, word_count=4, keywords=fix typo|typo,"
            " heuristic=trivial)",
        ),
        (
            text(5),
            0,
            3,
            "unknown",
            "explicit:unknown (confidence 1.00, word_count=5, verification=3, heuristic=standard)",
        ),
    ],
)
def test_classification_reason_format(
    description: str, files: int, checks: int, explicit: str | None, reason: str
) -> None:
    c = classify(description, items(files), items(checks), explicit)
    assert classification_reason(c) == reason
