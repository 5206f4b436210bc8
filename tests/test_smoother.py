"""Smoother: a steady state, per-utterance summaries, release after silence."""

from __future__ import annotations

import numpy as np
from emotiond.dsp.smoother import NO_SPEECH, Smoother, SmootherParams

LABELS = ("angry", "happy", "neutral", "sad")


def p(label: str, conf: float = 0.8) -> np.ndarray:
    out = np.full(len(LABELS), (1 - conf) / (len(LABELS) - 1))
    out[LABELS.index(label)] = conf
    return out


def test_state_changes_only_when_the_emotion_changes() -> None:
    s = Smoother(LABELS, SmootherParams(ema_alpha=1.0, min_dwell_s=0.0))
    states = [s.on_window(0, p(x), t * 0.25) for t, x in enumerate(["happy", "happy", "happy", "sad", "sad"])]
    changed = [st.emotion for st in states if st is not None]
    assert changed == ["happy", "sad"]


def test_min_confidence_blocks_weak_changes() -> None:
    s = Smoother(LABELS, SmootherParams(ema_alpha=1.0, min_confidence=0.6))
    assert s.on_window(0, p("angry", 0.5), 0.0) is None
    assert s.current == NO_SPEECH
    assert s.on_window(0, p("angry", 0.7), 0.25).emotion == "angry"


def test_min_dwell_delays_flips() -> None:
    s = Smoother(LABELS, SmootherParams(ema_alpha=1.0, min_dwell_s=1.0))
    assert s.on_window(0, p("happy"), 0.0).emotion == "happy"
    assert s.on_window(0, p("sad"), 0.5) is None
    assert s.on_window(0, p("sad"), 1.1).emotion == "sad"


def test_ema_smooths_single_outliers() -> None:
    s = Smoother(LABELS, SmootherParams(ema_alpha=0.3, min_dwell_s=0.0))
    s.on_window(0, p("happy", 0.9), 0.0)
    assert s.on_window(0, p("sad", 0.9), 0.25) is None  # one window is not enough to flip
    assert s.current == "happy"


def test_mean_method_averages_last_windows() -> None:
    s = Smoother(LABELS, SmootherParams(method="mean", mean_windows=2, min_dwell_s=0.0))
    s.on_window(0, p("happy", 0.9), 0.0)
    assert s.on_window(0, p("sad", 0.6), 0.25) is None  # mean still favours happy
    assert s.on_window(0, p("sad", 0.9), 0.5).emotion == "sad"


def test_release_after_silence() -> None:
    s = Smoother(LABELS, SmootherParams(release_s=2.0))
    s.on_window(0, p("angry"), 1.0)
    assert s.on_time(2.5) is None
    released = s.on_time(3.1)
    assert released is not None and released.emotion == NO_SPEECH
    assert s.on_time(4.0) is None  # released once


def test_utterance_summary_is_the_mean_of_its_windows() -> None:
    s = Smoother(LABELS)
    s.on_window(3, p("happy", 0.9), 0.5)
    s.on_window(3, p("sad", 0.5), 0.75)
    summary = s.on_segment_end(3, 0.2, 0.9)
    assert summary is not None
    assert summary.emotion == "happy" and summary.n_windows == 2
    assert abs(summary.probabilities["happy"] - (0.9 + 0.5 / 3) / 2) < 1e-3
    assert abs(summary.duration_s - 0.7) < 1e-9
    assert s.on_segment_end(4, 1.0, 2.0) is None  # a segment without windows has no summary
