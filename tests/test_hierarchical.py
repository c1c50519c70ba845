"""The hierarchical HASOC classifier: label composition (by name, not id), the profanity step and its interface."""

from __future__ import annotations

import numpy as np
import pytest

from distil_trainers.papers.hierarchical import (
    BetterProfanityDetector,
    HierarchicalClassifier,
    LexiconProfanityDetector,
    ProfanityDetector,
    compose_labels,
)

A = ("NOT", "HOF")
B3 = ("HATE", "OFFN", "PRFN")
OUT = ("NONE", "HATE", "OFFN", "PRFN")


def test_compose_not_is_none_and_hof_takes_b_by_name():
    a = [0, 1, 1, 1, 0]
    b = [2, 0, 1, 2, 1]  # HOF-only ids: HATE=0, OFFN=1, PRFN=2
    out = compose_labels(a, b, A, B3, OUT)
    assert [OUT[i] for i in out] == ["NONE", "HATE", "OFFN", "PRFN", "NONE"]


def test_compose_with_a_two_class_b_and_profanity_flags():
    a = [1, 1, 1, 0]
    b = [0, 1, 0, 1]  # B trained on HATE / OFFN only
    profane = [False, False, True, True]  # a flag on a NOT post changes nothing
    out = compose_labels(a, b, A, ("HATE", "OFFN"), OUT, profane=profane)
    assert [OUT[i] for i in out] == ["HATE", "OFFN", "PRFN", "NONE"]


def test_compose_follows_output_order_not_ids():
    other_order = ("PRFN", "OFFN", "HATE", "NONE")
    out = compose_labels([1, 0], [0, 0], A, B3, other_order)
    assert [other_order[i] for i in out] == ["HATE", "NONE"]


def test_compose_rejects_unknown_names_and_bad_ids():
    with pytest.raises(ValueError, match="not in the output label set"):
        compose_labels([1], [0], A, ("HATE", "ABUSE"), OUT)
    with pytest.raises(ValueError, match="Subtask-B predictions must be ids"):
        compose_labels([1], [3], A, B3, OUT)
    with pytest.raises(ValueError, match="Subtask-A predictions"):
        compose_labels([2], [0], A, B3, OUT)


class _Recorder:
    def __init__(self, fn):
        self.fn, self.seen = fn, []

    def __call__(self, texts):
        self.seen.append(list(texts))
        return self.fn(texts)


def test_pipeline_sends_only_hof_unflagged_posts_to_b():
    texts = ["nice day", "you idiot", "damn you", "they are vermin"]
    predict_a = _Recorder(lambda ts: [0 if t == "nice day" else 1 for t in ts])
    predict_b = _Recorder(lambda ts: [0 if "vermin" in t else 1 for t in ts])  # HATE / OFFN
    model = HierarchicalClassifier(
        predict_a=predict_a,
        predict_b=predict_b,
        b_label_names=("HATE", "OFFN"),
        profanity=LexiconProfanityDetector(["damn*"]),
    )
    stages = model.predict_stages(texts)
    assert predict_b.seen == [["you idiot", "they are vermin"]]
    assert stages["profane"].tolist() == [False, False, True, False]
    assert stages["b"].tolist() == [-1, 1, -1, 0]
    assert [OUT[i] for i in stages["output"]] == ["NONE", "OFFN", "PRFN", "HATE"]
    np.testing.assert_array_equal(model.predict(texts), stages["output"])


def test_pipeline_without_lexicon_never_outputs_prfn_unless_b_does():
    model = HierarchicalClassifier(predict_a=lambda ts: [1] * len(ts), predict_b=lambda ts: [1] * len(ts))
    assert [OUT[i] for i in model.predict(["a", "b"])] == ["OFFN", "OFFN"]


def test_lexicon_matches_whole_words_and_wildcards():
    detector = LexiconProfanityDetector(["ass", "fuck*"])
    assert isinstance(detector, ProfanityDetector)
    assert detector(["a classic", "what an ASS!", "fucking hell", "unfuckable"]) == [False, True, True, False]
    with pytest.raises(ValueError):
        LexiconProfanityDetector(["", "  "])


def test_lexicon_from_file(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("# profane words\nbloody\n\n")
    assert LexiconProfanityDetector.from_file(str(path))(["bloody hell", "blood test"]) == [True, False]


def test_better_profanity_detector():
    pytest.importorskip("better_profanity")
    detector = BetterProfanityDetector()
    assert detector(["what a shit show", "what a nice show"]) == [True, False]
