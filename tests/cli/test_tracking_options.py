"""`--track-low-score`: the predictor attaches low-score instances only when the tracker uses them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from panopticdepth.cli.video import SequenceTracking
from panopticdepth.errors import PanopticDepthError


def _prepared(sequences=("seq0",), **kw) -> SimpleNamespace:
    predictor = SimpleNamespace(candidate_score=0.123)
    SequenceTracking(**kw).prepare(predictor, sequences)
    return predictor


def test_low_score_reaches_the_predictor():
    assert _prepared().candidate_score == 0.05
    assert _prepared(low_score=0.1).candidate_score == 0.1
    assert _prepared(low_score=0.0).candidate_score is None  # 0 = off
    assert _prepared(enabled=False).candidate_score is None  # --no-track


def test_lone_images_get_no_candidates():
    """Candidates hold the batch's head outputs: only batches with a tracked frame ask for them."""
    assert _prepared(sequences=[None, None]).candidate_score is None
    assert _prepared(sequences=[None, "seq0"]).candidate_score == 0.05


def test_negative_low_score_is_refused():
    with pytest.raises(PanopticDepthError, match="--track-low-score"):
        SequenceTracking(low_score=-0.1)
