"""``--level-sets``: BAVED's levels teach the emotion head through the classes each level allows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from emotiond.models.training.data import LABELS, LEVEL_CLASSES, LEVELS, Clip
from emotiond.models.training.featurize import FeatureSet
from emotiond.models.training.train import level_set_targets

from .fixtures_windows import window_set


def _set(rows: list[tuple[str, str]], windows_per_clip: int) -> tuple[FeatureSet, list[Clip]]:
    """One window set over clips given as (corpus, label)."""
    clips = [
        Clip(corpus, f"s{i}", Path(f"{corpus}/{i}.wav"), label, label, f"{corpus}:a", "f", 1.0)
        for i, (corpus, label) in enumerate(rows)
    ]
    return window_set(clips, windows_per_clip), clips


def test_every_level_allows_what_the_data_readme_says() -> None:
    assert set(LEVEL_CLASSES) == set(LEVELS)
    assert LEVEL_CLASSES["neutral"] == ("neutral",)
    assert "neutral" not in LEVEL_CLASSES["high"] and all(c in LABELS for v in LEVEL_CLASSES.values() for c in v)


def test_baved_windows_get_their_level_mask_and_the_weight_of_one_more_corpus() -> None:
    # 16 clean emotion clips of two corpora (12 + 4), 1 window each; BAVED: 4 clips, 2 windows each
    emotion = _set([("ravdess", "angry")] * 12 + [("savee", "sad")] * 4, 1)
    baved = _set([("baved", "low"), ("baved", "neutral"), ("baved", "high"), ("baved", "high")], 2)
    y, w = level_set_targets([emotion], [baved], corpus_power=0.5, scale=2.0)
    assert y.shape == (16 + 8, len(LABELS)) and w.shape == (24,)
    assert not y[:16].any() and not w[:16].any()  # emotion windows: no set, no weight here
    index = {n: i for i, n in enumerate(LABELS)}
    for window, clip in enumerate(baved[0].clip):
        allowed = {LABELS[k] for k in np.flatnonzero(y[16 + window])}
        assert allowed == set(LEVEL_CLASSES[baved[1][clip].label])
    assert y[16, index["sad"]] == 1 and y[18, index["neutral"]] == 1 and y[20, index["happy"]] == 1
    share = 4**0.5 / (12**0.5 + 4**0.5)  # BAVED as a third corpus against the clean emotion clips
    np.testing.assert_allclose(w[16:].sum(), 2.0 * share * 16, rtol=1e-5)
    low, neutral, high = w[16:18].sum(), w[18:20].sum(), w[20:24].sum()
    np.testing.assert_allclose([low, neutral], [high, high], rtol=1e-5)  # levels balanced


def test_the_set_loss_is_the_log_of_the_set_probability_and_the_head_never_ships() -> None:
    pytest.importorskip("tensorflow")
    from emotiond.models.training.model import build_model, deployable, set_nll

    probs = np.array([[0.5, 0.2, 0.1, 0.1, 0.05, 0.05, 0.0]], np.float32)
    allowed = np.array([[1, 0, 1, 0, 0, 0, 0]], np.float32)
    got = float(np.asarray(set_nll(allowed, probs))[0])
    np.testing.assert_allclose(got, -np.log(0.6), rtol=1e-5)
    one = np.array([[0, 1, 0, 0, 0, 0, 0]], np.float32)  # a one-class set is plain cross-entropy
    np.testing.assert_allclose(float(np.asarray(set_nll(one, probs))[0]), -np.log(0.2), rtol=1e-5)

    model = build_model(16, 8, len(LABELS), widths=(8, 8), level_sets=True)
    x = np.random.default_rng(0).normal(0, 1, (3, 16, 8)).astype(np.float32)
    full = model.predict(x, verbose=0)
    assert set(full) == {"probs", "level_set"}
    np.testing.assert_allclose(full["level_set"], full["probs"])
    np.testing.assert_allclose(deployable(model).predict(x, verbose=0), full["probs"], atol=1e-6)


def test_a_level_manifest_and_its_score_read_the_levels_back(tmp_path: Path) -> None:
    """BAVED through ``emotiond eval``: a stand-in class per level in, each level's allowed-set rate out."""
    from emotiond.models.training.level_eval import STAND_IN, level_score, main, write_manifest

    from .test_training_data import make_corpus

    levels = [(f"b{spk}{i}", lv, spk) for spk in ("S1", "S2", "S3", "S4", "S5") for i, lv in enumerate(LEVELS)]
    make_corpus(tmp_path / "data", "baved", levels)
    assert write_manifest(tmp_path / "data", tmp_path / "all.csv", "all") == 15
    assert write_manifest(tmp_path / "data", tmp_path / "test.csv", "test") == 3  # one of five speakers
    rows = (tmp_path / "all.csv").read_text().splitlines()
    assert rows[0] == "path,label,speaker" and {r.split(",")[1] for r in rows[1:]} == set(STAND_IN.values())

    labels = list(LABELS)
    confusion = np.zeros((len(labels), len(labels) + 1), int)
    row = {level: labels.index(STAND_IN[level]) for level in LEVELS}
    confusion[row["neutral"], labels.index("neutral")] = 3  # 3 of 4 neutral clips called neutral
    confusion[row["neutral"], labels.index("angry")] = 1
    confusion[row["high"], labels.index("happy")] = 2  # high: 2 of 4 in its set, 1 neutral, 1 without an event
    confusion[row["high"], labels.index("neutral")] = 1
    confusion[row["high"], len(labels)] = 1
    confusion[row["low"], labels.index("sad")] = 4
    result = {"results": {"session": {"labels": labels, "confusion": confusion.tolist()}}}
    score = level_score(result)
    assert score == pytest.approx({"neutral": 0.75, "high": 0.5, "low": 1.0, "mean": 0.75})
    (tmp_path / "r.json").write_text(__import__("json").dumps(result))
    assert main(["score", str(tmp_path / "r.json")]) == 0
