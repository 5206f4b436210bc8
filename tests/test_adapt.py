"""The adapt stage: the household estimator, its persistence, and train/live parity."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from emotiond.daemon.adaptation import Household, default_state_file, fresh_normaliser
from emotiond.daemon.config import AdaptSettings
from emotiond.dsp.adapt import (
    AdaptParams,
    AdaptStateError,
    HouseholdNormaliser,
    HouseholdStats,
    PerWindowMean,
    SegmentStats,
)
from emotiond.dsp.features import FEATURES, fit_window
from emotiond.dsp.frontend import Frontend, SegmentEnd, Window, WindowParams, clip_windows
from emotiond.models.runtime import ModelInfo

from .fixtures_audio import SR

N = FEATURES.n_mels
PRIOR = (np.linspace(-8, -4, N), np.full(N, 4.0))


def voice(seconds: float, f0: float, level: float, seed: int) -> np.ndarray:
    """A harmonic tone with a syllable envelope: the VAD calls it speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    env = 0.55 + 0.45 * np.sin(2 * np.pi * 3.5 * t)
    return level * x * env / 3 + rng.normal(0, 1e-4, len(t))


def household_model_info(horizon_s: float = 60.0) -> ModelInfo:
    return ModelInfo(
        "t", "0", ("a", "b"), FEATURES.to_dict(), 100, HouseholdNormaliser.name,
        {"adapt": {"horizon_s": horizon_s, "prior_s": 5.0, "prior_mean": PRIOR[0].tolist(),
                   "prior_var": PRIOR[1].tolist()}},
    )


def test_segment_statistics_do_not_depend_on_chunking() -> None:
    frames = np.random.default_rng(0).normal(-5, 2, (333, N))
    whole, chunked = SegmentStats(), SegmentStats()
    whole.add(frames)
    for i in range(0, len(frames), 17):
        chunked.add(frames[i : i + 17])
    assert whole.n == chunked.n == 333
    np.testing.assert_allclose(whole.total, chunked.total)
    np.testing.assert_allclose(whole.total_sq, chunked.total_sq)


def test_estimator_converges_to_the_household_and_forgets_with_its_horizon() -> None:
    params = AdaptParams(horizon_s=20.0, prior_s=2.0)
    stats = HouseholdStats(params, *PRIOR)
    rng = np.random.default_rng(1)
    for _ in range(200):  # 200 utterances of 1 s around a mean of -2
        seg = SegmentStats()
        seg.add(rng.normal(-2.0, 1.0, (100, N)))
        stats.update(seg)
    np.testing.assert_allclose(stats.mean, -2.0, atol=0.1)
    np.testing.assert_allclose(stats.var, 1.0, atol=0.15)
    assert stats.count == params.horizon_frames
    for _ in range(100):  # a new microphone, 6 dB louder in log-power terms
        seg = SegmentStats()
        seg.add(rng.normal(-0.6, 1.0, (100, N)))
        stats.update(seg)
    np.testing.assert_allclose(stats.mean, -0.6, atol=0.1)


def test_streaming_frontend_equals_batch_with_the_household_normaliser() -> None:
    """Chunk sizes cannot change windows or what the estimator learnt."""
    x = np.concatenate([np.zeros(4000), voice(1.6, 140, 0.3, 0), np.zeros(6000), voice(0.9, 220, 0.1, 1),
                        np.zeros(4000)])
    results = []
    for chunk in (160, 592, len(x)):
        stats = HouseholdStats(AdaptParams(60.0, 5.0), *PRIOR)
        fe = Frontend(window=WindowParams(100, 25, 20), normaliser=HouseholdNormaliser(stats))
        events = []
        for i in range(0, len(x), chunk):
            events += fe.push(x[i : i + chunk])
        events += fe.flush()
        wins = [e.features for e in events if isinstance(e, Window)]
        results.append((wins, stats.mean.copy(), stats.frames_heard))
    ref_wins, ref_mean, ref_heard = results[0]
    assert len(ref_wins) >= 2 and ref_heard > 0
    for wins, mean, heard in results[1:]:
        assert len(wins) == len(ref_wins) and heard == ref_heard
        for a, b in zip(wins, ref_wins, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_allclose(mean, ref_mean)


def test_an_utterance_is_judged_before_it_is_learnt() -> None:
    """The windows of the first utterance see the warm start; the estimator learns only at its end."""
    stats = HouseholdStats(AdaptParams(60.0, 5.0), *PRIOR)
    x = np.concatenate([np.zeros(4000), voice(1.5, 150, 0.3, 2), np.zeros(8000)])
    fe = Frontend(window=WindowParams(100, 25, 20), normaliser=HouseholdNormaliser(stats))
    events = fe.push(x) + fe.flush()
    end = next(e for e in events if isinstance(e, SegmentEnd))
    assert end.stats is not None and end.stats.n == stats.frames_heard > 0
    raw = clip_windows(x, window=WindowParams(100, 25, 20), normaliser=_Raw())
    first = next(e for e in events if isinstance(e, Window))
    n = first.n_frames
    np.testing.assert_allclose(first.features[:n], (raw[0].features[:n] - PRIOR[0]) / 2.0, atol=1e-4)


class _Raw:
    name = "raw"

    def window(self, frames: np.ndarray, window_frames: int) -> np.ndarray:
        out = np.zeros((window_frames, frames.shape[1]), np.float32)
        out[: len(frames[-window_frames:])] = frames[-window_frames:]
        return out

    def observe(self, seg: SegmentStats) -> None:
        return None


def test_per_window_mean_is_the_old_normalisation() -> None:
    frames = np.random.default_rng(3).normal(-4, 2, (63, N)).astype(np.float32)
    np.testing.assert_array_equal(PerWindowMean().window(frames, 100), fit_window(frames, 100))


def test_state_survives_a_restart_and_a_reset_empties_it(tmp_path: Path) -> None:
    info = household_model_info()
    state = tmp_path / "state" / "household.json"
    house = Household(info, AdaptSettings(state_file=state))
    seg = SegmentStats()
    seg.add(np.random.default_rng(4).normal(-1, 1, (500, N)))
    house.normaliser.observe(seg)
    house.maybe_save(force=True)
    assert state.is_file()
    again = Household(info, AdaptSettings(state_file=state))  # a restart
    assert again.stats is not None and house.stats is not None
    np.testing.assert_allclose(again.stats.mean, house.stats.mean)
    assert again.stats.frames_heard == 500 and again.heard_s == pytest.approx(5.0)
    fresh = Household(info, AdaptSettings(state_file=state, reset=True))
    assert not state.exists()
    assert fresh.stats is not None and fresh.stats.frames_heard == 0
    np.testing.assert_allclose(fresh.stats.mean, PRIOR[0])


_WRITER = """
import sys, numpy as np
from emotiond.dsp.adapt import AdaptParams, HouseholdStats, SegmentStats
n = 40
stats = HouseholdStats(AdaptParams(60.0, 5.0), np.zeros(n), np.ones(n))
rng = np.random.default_rng(0)
first = True
while True:
    seg = SegmentStats(total=np.zeros(n), total_sq=np.zeros(n))
    seg.add(rng.normal(0, 1, (50, n)))
    stats.update(seg)
    stats.save(sys.argv[1])
    if first:  # one complete state exists from here on; every later save races the kill
        print("ready", flush=True)
        first = False
"""


def test_state_file_is_never_half_written_when_the_process_is_killed(tmp_path: Path) -> None:
    state = tmp_path / "household.json"
    for delay in (0.05, 0.2, 0.37):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(state)], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        stats = HouseholdStats(AdaptParams(60.0, 5.0), np.zeros(N), np.ones(N))
        stats.load(state)  # raises if the file were torn
        assert stats.frames_heard > 0
    stats.save(state)  # the next save replaces a temp file a kill left behind
    assert [p.name for p in tmp_path.iterdir()] == ["household.json"]


@pytest.mark.parametrize(
    "content",
    ["{not json", json.dumps({"schema": "something/else"}), json.dumps({"schema": "emotiond.household-stats/1",
     "mean": [0.0] * 3, "mean_sq": [1.0] * 3, "count": 5, "frames_heard": 5}), "\x00\x01\x02"],
    ids=["corrupt", "foreign", "other-bands", "binary"],
)
def test_a_bad_state_file_is_ignored_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    state = tmp_path / "household.json"
    state.write_text(content)
    with caplog.at_level(logging.WARNING, logger="emotiond"):
        house = Household(household_model_info(), AdaptSettings(state_file=state))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "adapt.state_file" in warnings[0].getMessage()
    assert str(state) in warnings[0].getMessage() and "\n" not in warnings[0].getMessage()
    assert house.stats is not None
    np.testing.assert_allclose(house.stats.mean, PRIOR[0])  # the warm start
    with pytest.raises(AdaptStateError):
        house.stats.load(state)


def test_state_directory_from_systemd() -> None:
    assert default_state_file({"STATE_DIRECTORY": "/var/lib/emotiond"}) == Path("/var/lib/emotiond/household.json")
    assert default_state_file({}) is None


def test_a_window_model_gets_the_per_window_normaliser() -> None:
    info = ModelInfo("t", "0", ("a",), FEATURES.to_dict(), 100, PerWindowMean.name)
    assert isinstance(fresh_normaliser(info), PerWindowMean)
    assert isinstance(fresh_normaliser(household_model_info()), HouseholdNormaliser)
    assert Household(info, AdaptSettings()).describe() == {
        "normaliser": PerWindowMean.name, "heard_s": None, "calibrate": None
    }
