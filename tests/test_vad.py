"""The VAD stage's webrtcvad call: the fast path gives webrtcvad's own verdicts."""

from __future__ import annotations

import numpy as np
import webrtcvad
from emotiond.dsp.vad import frame_classifier


def _pcm_frames(seconds: float = 3.0, frame_len: int = 480) -> list[bytes]:
    """Quiet noise, then a voiced-like harmonic tone with a syllable rhythm, then noise again."""
    rng = np.random.default_rng(3)
    t = np.arange(int(16000 * seconds)) / 16000
    tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 560, 700), start=1))
    envelope = (np.sin(2 * np.pi * 4 * t) > 0) * ((t > 1.0) & (t < 2.0))
    x = 0.3 * tone * envelope + rng.normal(0, 0.003, t.size)
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
    step = 2 * frame_len
    return [pcm[i : i + step] for i in range(0, len(pcm) - step + 1, step)]


def test_fast_path_equals_the_public_wrapper_frame_by_frame() -> None:
    frames = _pcm_frames()
    fast_vad, public_vad = webrtcvad.Vad(2), webrtcvad.Vad(2)
    fast = frame_classifier(fast_vad, 16000)
    got = [fast(f, 480) for f in frames]
    want = [public_vad.is_speech(f, 16000, 480) for f in frames]
    assert got == want
    assert any(want) and not all(want)  # the signal exercises both verdicts


def test_without_the_c_module_it_falls_back_to_the_wrapper(monkeypatch) -> None:
    import emotiond.dsp.vad as vad_module

    monkeypatch.setattr(vad_module, "_webrtcvad", None)
    frames = _pcm_frames()
    classify = frame_classifier(webrtcvad.Vad(2), 16000)
    reference = webrtcvad.Vad(2)
    assert [classify(f, 480) for f in frames] == [reference.is_speech(f, 16000, 480) for f in frames]
