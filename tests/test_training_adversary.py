"""The corpus or speaker adversary (``--adversary``): its targets, its gradient, and that it never ships."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
from emotiond.models.training.data import Clip
from emotiond.models.training.featurize import FeatureSet
from emotiond.models.training.model import reversal_scale
from emotiond.models.training.train import domain_targets

from .fixtures_windows import window_set


def _set(corpora: list[str], windows_per_clip: int) -> tuple[FeatureSet, list[Clip]]:
    clips = [
        Clip(c, f"s{i}", Path(f"{c}/{i}.wav"), "neutral", "neutral", f"{c}:a", "f", 1.0) for i, c in enumerate(corpora)
    ]
    return window_set(clips, windows_per_clip), clips


def test_every_corpus_weighs_the_same_and_level_windows_nothing() -> None:
    fs, clips = _set(["ravdess", "ravdess", "ravdess", "tess"], 2)  # 6 RAVDESS windows, 2 TESS
    y, w = domain_targets([(fs, clips), (fs, clips)], n_level_windows=3)
    assert y.shape == (19, 2) and w.shape == (19,)
    assert y[:16].sum(axis=1).tolist() == [1.0] * 16 and not y[16:].any() and not w[16:].any()
    ravdess, tess = y[:16, 0] == 1, y[:16, 1] == 1  # names sorted: ravdess, tess
    assert ravdess.sum() == 12 and tess.sum() == 4
    np.testing.assert_allclose(w[:16][ravdess].sum(), w[:16][tess].sum())
    np.testing.assert_allclose(w[:16].mean(), 1.0)


def test_a_speaker_adversary_weighs_every_speaker_the_same() -> None:
    fs, clips = _set(["ravdess", "ravdess", "tess"], 3)
    clips[1] = dataclasses.replace(clips[1], speaker="ravdess:b")
    y, w = domain_targets([(fs, clips)], target="speaker")
    assert y.shape == (9, 3)
    totals = [w[y[:, k] == 1].sum() for k in range(3)]
    np.testing.assert_allclose(totals, [3.0, 3.0, 3.0])


def test_reversal_ramps_from_nothing_to_one() -> None:
    s = [reversal_scale(e, 14) for e in range(14)]
    assert s[0] == 0.0 and all(b > a for a, b in itertools.pairwise(s)) and 0.99 < s[-1] < 1.0


def test_reversal_is_identity_forward_and_minus_scale_backward() -> None:
    tf = pytest.importorskip("tensorflow", reason="training extra not installed: pip install '.[train]'")
    from emotiond.models.training.model import gradient_reversal_layer

    layer = gradient_reversal_layer()(name="reverse")
    x = tf.constant([[1.0, -2.0, 3.0]])
    layer.build(x.shape)
    layer.scale.assign(0.7)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * tf.constant([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(y.numpy(), x.numpy())
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), [[-0.7, -1.4, -2.1]], rtol=1e-6)


def test_the_adversary_is_stripped_before_conversion() -> None:
    pytest.importorskip("tensorflow", reason="training extra not installed: pip install '.[train]'")
    from emotiond.models.training.model import build_model, deployable

    plain = build_model(20, 8, 7, widths=(8, 8, 8, 8))
    with_adversary = build_model(20, 8, 7, widths=(8, 8, 8, 8), domain_classes=5)
    assert set(with_adversary.output) == {"probs", "domain"}
    shipped = deployable(with_adversary)
    assert shipped.count_params() == plain.count_params()
    assert not {"reverse", "domain", "domain_hidden"} & {layer.name for layer in shipped.layers}
    x = np.random.default_rng(0).normal(size=(2, 20, 8)).astype(np.float32)
    np.testing.assert_allclose(shipped(x).numpy(), with_adversary(x)["probs"].numpy())
