"""The one feature definition: correct, streaming-exact and chunk-size invariant."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import pytest
from emotiond.dsp.features import (
    FEATURES,
    SAMPLE_RATE,
    Spectrum,
    StreamingFramer,
    fit_window,
    frame_count,
    frame_signal,
    mel_filterbank,
    normalise_window,
    offline_log_mel,
)

SR = 16_000


def _signal(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2 + rng.normal(0, 0.01, len(t))


def test_mel_filterbank_matches_librosa() -> None:
    librosa = pytest.importorskip("librosa")
    ours = mel_filterbank()
    ref = librosa.filters.mel(
        sr=SR, n_fft=FEATURES.n_fft, n_mels=FEATURES.n_mels, fmin=FEATURES.fmin, fmax=FEATURES.fmax,
        htk=False, norm="slaney",
    ).T
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_offline_log_mel_matches_scipy_stft_and_librosa_mel() -> None:
    """Framing, window and FFT against scipy.signal.stft; the mel step against librosa."""
    librosa = pytest.importorskip("librosa")
    from scipy.signal import get_window, stft

    x = _signal(1.0)
    window = get_window("hann", FEATURES.frame_length)
    _, _, z = stft(
        x, window=window, nperseg=FEATURES.frame_length, noverlap=FEATURES.frame_length - FEATURES.hop_length,
        nfft=FEATURES.n_fft, boundary=None, padded=False, detrend=False,
    )
    power = (np.abs(z) * window.sum()) ** 2  # undo scipy's 'spectrum' scaling
    mel = librosa.filters.mel(
        sr=SR, n_fft=FEATURES.n_fft, n_mels=FEATURES.n_mels, fmin=FEATURES.fmin, fmax=FEATURES.fmax
    )
    ref = np.log(mel @ power + FEATURES.log_floor).T
    ours = offline_log_mel(x)
    assert ours.shape == ref.shape == (frame_count(len(x)), FEATURES.n_mels)
    assert float(np.max(np.abs(ours - ref))) <= 1e-4


@pytest.mark.parametrize("chunk", [160, 592, 8000, 1])
def test_streaming_frames_equal_offline_frames(chunk: int) -> None:
    x = _signal(2.0)
    spectrum = Spectrum()
    framer = StreamingFramer()
    frames = [framer.push(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    streamed = spectrum.log_mel(spectrum.power(np.concatenate(frames)))
    offline = offline_log_mel(x)
    assert streamed.shape == offline.shape
    assert float(np.max(np.abs(streamed - offline))) <= 1e-4


def test_normalisation_cancels_gain() -> None:
    x = _signal(1.0)
    a = normalise_window(offline_log_mel(x))
    b = normalise_window(offline_log_mel(x * 0.05))
    assert float(np.max(np.abs(a - b))) < 1e-2  # a 26 dB gain change; only the log floor remains


def test_fit_window_pads_short_runs_with_band_mean() -> None:
    frames = offline_log_mel(_signal(0.4))
    out = fit_window(frames, 100)
    assert out.shape == (100, FEATURES.n_mels)
    n = len(frames)
    np.testing.assert_allclose(out[:n].mean(axis=0), 0.0, atol=1e-4)
    assert not out[n:].any()


@pytest.mark.parametrize("f0", [90.0, 140.0, 230.0, 350.0])
def test_periodicity_bands_find_the_pitch_of_a_harmonic_voice(f0: float) -> None:
    """A buzz of 14 harmonics at F0 peaks in the band holding F0's period (or one beside it),
    far above what white noise reaches; the mel bands come first, unchanged."""
    cfg = replace(FEATURES, pitch_bands=12)
    spectrum = Spectrum(cfg)
    rng = np.random.default_rng(0)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    buzz = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 15)) + 0.05 * rng.standard_normal(len(t))
    power = spectrum.power(frame_signal(buzz, cfg))
    both = spectrum.features(power)
    assert both.shape == (len(power), 52)
    np.testing.assert_array_equal(both[:, :40], Spectrum(FEATURES).log_mel(power))
    bands = both[:, 40:].mean(axis=0)
    period = SAMPLE_RATE / f0
    edges = SAMPLE_RATE / np.geomspace(cfg.pitch_fmax, cfg.pitch_fmin, 13)
    home = int(np.searchsorted(edges, period)) - 1
    assert max(bands[max(home - 1, 0) : home + 2]) > 0.8  # a low voice has only 2 periods in 25 ms
    noise = spectrum.periodicity(spectrum.power(frame_signal(rng.standard_normal(SAMPLE_RATE), cfg))).mean(axis=0)
    assert noise.max() < 0.3
    assert FEATURES.to_dict() == {k: v for k, v in asdict(FEATURES).items() if not k.startswith("pitch_")}
    assert cfg.to_dict()["pitch_bands"] == 12 and cfg.n_features == 52
