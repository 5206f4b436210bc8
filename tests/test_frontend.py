"""VAD → denoise → features → windows on generated audio."""

from __future__ import annotations

import numpy as np
import pytest
from emotiond.dsp.frontend import Frontend, SegmentEnd, SegmentStart, Window, clip_windows

from tests.fixtures_audio import pink_noise

SR = 16_000


def _run(signal: np.ndarray, chunk: int | None = None) -> list:
    fe = Frontend()
    if chunk is None:
        return fe.push(signal) + fe.flush()
    events = []
    for i in range(0, len(signal), chunk):
        events += fe.push(signal[i : i + chunk])
    return events + fe.flush()


def test_silence_and_noise_give_no_segments() -> None:
    rng = np.random.default_rng(0)
    for signal in (np.zeros(10 * SR), pink_noise(10 * SR, rng, -45), rng.normal(0, 10 ** (-50 / 20), 10 * SR)):
        assert not [e for e in _run(signal) if isinstance(e, SegmentStart)]


def test_speech_segments_lie_around_the_spoken_parts(speech_scene) -> None:
    signal, spoken = speech_scene
    ends = [e for e in _run(signal) if isinstance(e, SegmentEnd)]
    assert len(ends) == len(spoken), ends
    for seg, (t0, t1) in zip(ends, spoken, strict=True):
        start, end = seg.start_sample / SR, seg.end_sample / SR
        assert t0 - 0.35 <= start <= t0 + 0.15, (start, t0)
        assert t1 - 0.15 <= end <= t1 + 0.45, (end, t1)
        assert seg.n_windows >= 1


@pytest.mark.parametrize("chunk", [160, 592, 8000])  # 10 ms, 37 ms, 500 ms
def test_chunk_size_does_not_change_windows(speech_scene, chunk: int) -> None:
    signal, _ = speech_scene
    whole = [e for e in _run(signal) if isinstance(e, Window)]
    chunked = [e for e in _run(signal, chunk) if isinstance(e, Window)]
    assert len(whole) == len(chunked) > 0
    for a, b in zip(whole, chunked, strict=True):
        assert (a.segment, a.start_sample, a.end_sample) == (b.segment, b.start_sample, b.end_sample)
        assert float(np.max(np.abs(a.features - b.features))) <= 1e-4


def test_windows_are_normalised_and_sized(speech_scene) -> None:
    windows = clip_windows(speech_scene[0])
    assert windows
    for w in windows:
        assert w.features.shape == (100, 40)
        assert w.features.dtype == np.float32
        n = min(w.n_frames, 100)
        np.testing.assert_allclose(w.features[:n].mean(axis=0), 0.0, atol=1e-3)


def test_short_utterance_gives_one_padded_window(have_espeak) -> None:
    from tests.fixtures_audio import espeak

    word = espeak("yes")
    signal = np.concatenate([np.zeros(SR), word, np.zeros(SR)])
    signal = signal + pink_noise(len(signal), np.random.default_rng(1), -60)
    windows = clip_windows(signal)
    assert len(windows) == 1
    assert windows[0].n_frames < 100
    assert not windows[0].features[windows[0].n_frames :].any()
