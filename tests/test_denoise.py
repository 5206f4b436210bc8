"""The spectral gate against noisereduce itself (the reference implementation)."""

from __future__ import annotations

import numpy as np
import pytest
from emotiond.dsp.denoise import DenoiseParams, SpectralGate, smoothing_kernels
from emotiond.dsp.features import FEATURES, Spectrum, frame_signal

from tests.fixtures_audio import pink_noise

SR = 16_000


def _gated_log_mel(signal: np.ndarray, noise: np.ndarray) -> np.ndarray:
    spectrum = Spectrum()
    gate = SpectralGate(DenoiseParams(profile_s=len(noise) / SR))
    gate.learn(spectrum.power(frame_signal(noise)))
    gate.begin_segment()
    power = spectrum.power(frame_signal(signal))
    out = np.concatenate([gate.apply(power[:37]), gate.apply(power[37:]), gate.end_segment()])
    assert out.shape == power.shape
    return spectrum.log_mel(out)


def test_smoothing_filter_is_noisereduces() -> None:
    from noisereduce.spectralgate.base import _smoothing_filter

    f, t = smoothing_kernels(DenoiseParams())
    n_freq = int(500 / (SR / (FEATURES.n_fft / 2)))
    n_time = int(50 / (FEATURES.hop_length / SR * 1000))
    np.testing.assert_allclose(np.outer(f, t), _smoothing_filter(n_freq, n_time), atol=1e-12)


def test_gate_matches_noisereduce_on_speech_in_noise(have_espeak) -> None:
    nr = pytest.importorskip("noisereduce")
    from tests.fixtures_audio import espeak

    rng = np.random.default_rng(5)
    noise = pink_noise(2 * SR, rng, -35)
    speech = espeak("The quick brown fox jumps over the lazy dog.")
    noisy = speech + pink_noise(len(speech), rng, -35)
    reference = nr.reduce_noise(
        y=noisy, sr=SR, y_noise=noise, stationary=True, n_fft=FEATURES.n_fft, win_length=FEATURES.frame_length,
        hop_length=FEATURES.hop_length, n_std_thresh_stationary=1.5, prop_decrease=1.0,
    )
    spectrum = Spectrum()
    ref = spectrum.log_mel(spectrum.power(frame_signal(reference)))
    raw = spectrum.log_mel(spectrum.power(frame_signal(noisy)))
    ours = _gated_log_mel(noisy, noise)
    inner = slice(10, len(ours) - 10)  # noisereduce's istft edges and its whole-clip dB clamp differ at the ends
    err_ours = float(np.median(np.abs(ours[inner] - ref[inner])))
    err_raw = float(np.median(np.abs(raw[inner] - ref[inner])))
    # Gating moves the features most of the way to noisereduce's output.
    assert err_ours < 0.35 * err_raw, (err_ours, err_raw)


def test_gate_without_profile_passes_frames_through() -> None:
    spectrum = Spectrum()
    gate = SpectralGate()
    gate.begin_segment()
    power = spectrum.power(frame_signal(np.random.default_rng(0).normal(0, 0.1, SR)))
    np.testing.assert_array_equal(gate.apply(power), power)
    assert len(gate.end_segment()) == 0


def test_gate_removes_stationary_noise_between_words() -> None:
    rng = np.random.default_rng(2)
    noise = pink_noise(3 * SR, rng, -40)
    t = np.arange(SR) / SR
    buzz = sum(0.2 / k * np.sin(2 * np.pi * 150 * k * t) for k in range(1, 27))  # a voiced-speech-like buzz
    signal = np.concatenate([buzz, np.zeros(SR)]) + pink_noise(2 * SR, rng, -40)
    spectrum = Spectrum()
    gate = SpectralGate()
    gate.learn(spectrum.power(frame_signal(noise)))
    gate.begin_segment()
    power = spectrum.power(frame_signal(signal))
    out = np.concatenate([gate.apply(power), gate.end_segment()])
    quiet = slice(110, 190)  # the noise-only second half
    assert out[quiet].sum() < 0.05 * power[quiet].sum()
    loud = slice(10, 90)
    assert out[loud].sum() > 0.5 * power[loud].sum()  # the smoothed mask trims between harmonics, as noisereduce does


@pytest.mark.parametrize("chunks", [(1,), (3, 7), (25,), (200,)])
def test_time_smoothing_is_a_tap_by_tap_sum_bit_for_bit(chunks: tuple[int, ...]) -> None:
    """Whatever the batch sizes, each gated frame equals the plain shift-and-add over the centred masks."""
    rng = np.random.default_rng(4)
    spectrum = Spectrum()
    gate = SpectralGate()
    gate.learn(spectrum.power(frame_signal(pink_noise(SR, rng, -40))))
    power = spectrum.power(frame_signal(rng.normal(0, 0.05, 2 * SR)))
    gate.begin_segment()
    out, i, k = [], 0, 0
    while i < len(power):
        n = chunks[k % len(chunks)]
        out.append(gate.apply(power[i : i + n]))
        i, k = i + n, k + 1
    out.append(gate.end_segment())
    got = np.concatenate(out)

    masks = SpectralGate._frame_masks(gate, power)  # per row: the same whatever the batch
    lag = gate.lag_frames
    padded = np.concatenate([np.repeat(masks[:1], lag, axis=0), masks, np.repeat(masks[-1:], lag, axis=0)])
    smoothed = np.zeros_like(power)
    for tap, weight in enumerate(gate._t_kernel):
        smoothed += weight * padded[tap : tap + len(power)]
    assert got.tobytes() == (power * smoothed * smoothed).tobytes()
