"""The one noise kit (dsp/noise.py): one SNR definition, and augmentation bit-identical to before the move."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from emotiond.dsp import noise
from emotiond.models.training.augment import augment

from bench import audio


def _augment_inputs() -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    g = np.random.default_rng(12345)
    t = np.arange(int(1.7 * 16000)) / 16000
    speech = 0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0) + 0.01 * g.standard_normal(len(t))
    noises = [g.standard_normal(8000) * 0.1, g.standard_normal(40000) * 0.05]
    others = [0.2 * np.sin(2 * np.pi * 220 * t[:12000]), 0.1 * g.standard_normal(30000)]
    return speech, noises, others


def test_augmentation_is_bit_identical_to_the_implementation_before_the_noise_kit() -> None:
    """Training caches augmented copies by seed: 40 seeds (speed, shift, reverb, babble, noise, gain, peak
    limiting) must give the bytes ``models/training/augment.py`` gave at 7c9a630, its own noise code."""
    speech, noises, others = _augment_inputs()
    h = hashlib.sha256()
    for seed in range(40):
        h.update(np.ascontiguousarray(augment(speech, np.random.default_rng(seed), noises, others)).tobytes())
    assert h.hexdigest() == "0a974790025213b02e23fdc726b06a23794a742d4a5b54a96164544457e3b020"


@pytest.mark.parametrize("snr", [20.0, 7.5, 0.0, -5.0])
def test_add_at_snr_hits_the_one_definition(snr: float) -> None:
    rng = np.random.default_rng(1)
    speech, noises, _ = _augment_inputs()
    speech = np.concatenate([np.zeros(16000), speech, np.zeros(16000)])  # silences do not dilute it
    mixed = noise.add_at_snr(speech, noises[1], snr, rng)
    assert noise.snr_db(speech, mixed - speech) == pytest.approx(snr, abs=1e-6)


def test_pink_noise_level_and_the_benches_pink_are_the_kits() -> None:
    x = noise.pink_noise(32000, np.random.default_rng(2), -30.0)
    assert 20 * np.log10(np.sqrt(np.mean(x**2))) == pytest.approx(-30.0, abs=1e-9)
    np.testing.assert_array_equal(audio.pink(32000, np.random.default_rng(2), -30.0), x)
    spectrum = np.abs(np.fft.rfft(noise.pink_noise(2**16, np.random.default_rng(3)))) ** 2
    low, high = spectrum[10:100].mean(), spectrum[1000:10000].mean()
    assert low > 10 * high  # 1/f: far more power low than high


def test_babble_talkers_enter_at_equal_speech_level() -> None:
    rng = np.random.default_rng(4)
    quiet, loud = 0.01 * rng.standard_normal(16000), 0.5 * rng.standard_normal(16000)
    each = [noise.babble([x], 16000, np.random.default_rng(0)) for x in (quiet, loud)]
    assert noise.speech_rms(each[0]) == pytest.approx(noise.speech_rms(each[1]), rel=1e-3)


def test_bench_scene_bed_is_mixed_at_the_kits_snr() -> None:
    items = [audio.Item(0.1 * (i + 1) * np.sin(np.arange(8000) / (3 + i)), "neutral", f"i{i}") for i in range(3)]
    bed = np.random.default_rng(5).standard_normal(4000)
    sig, spans = audio.scene(items, np.random.default_rng(6), gap_s=(0.5, 0.5), lead_s=0.5, bed=bed, bed_snr_db=15.0)
    speech_only = np.zeros(len(sig))
    for it, (start, end, _label) in zip(items, spans, strict=True):
        speech_only[start:end] = it.signal
    median = items[1].signal  # the middle speech level of the three
    assert noise.snr_db(median, sig - speech_only) == pytest.approx(15.0, abs=1e-6)
