"""Training on utterances (``--bag-windows``): which windows make a bag, and that the bag loss scores their mean."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from emotiond.models.training.featurize import FeatureSet
from emotiond.models.training.normalise import HOUSEHOLD
from emotiond.models.training.train import Inputs, draw_bags, train_main, utterance_windows

from emotiond import exitcodes


def _fs(seg: list[int]) -> FeatureSet:
    """Windows whose utterance is ``seg[i]``; window i's features are all ``i`` (to see which window went where)."""
    n, s = len(seg), max(seg) + 1
    return FeatureSet(
        x=np.arange(n, dtype=np.float16)[:, None, None] * np.ones((n, 4, 3), np.float16),
        clip=np.zeros(n, np.int32),
        n_clips=1,
        n_frames=np.full(n, 4),
        seg=np.array(seg, np.int32),
        seg_clip=np.zeros(s, np.int32),
        seg_n=np.ones(s, np.int64),
        seg_sum=np.zeros((s, 3)),
        seg_sumsq=np.zeros((s, 3)),
    )


def test_utterances_are_grouped_across_sets_in_time_order() -> None:
    a, b = _fs([0, 0, 1, 1, 1]), _fs([0, 1, 0])
    inputs = Inputs([(a, []), (b, [])], np.zeros((8, 4, 3)), np.full(8, 4), np.zeros((8, 7)), np.ones(8),
                    HOUSEHOLD, None, (np.zeros(3), np.ones(3)))  # type: ignore[arg-type]
    groups = [g.tolist() for g in utterance_windows(inputs)]
    assert groups == [[0, 1], [2, 3, 4], [5, 7], [6]]


def test_short_utterances_repeat_in_order_and_long_ones_give_consecutive_runs() -> None:
    rng = np.random.default_rng(0)
    bags = draw_bags([np.array([10, 11]), np.arange(20, 29)], 4, rng)
    assert bags.shape == (1 + 3, 4)  # ceil(9 / 4) = 3 bags from the long utterance
    assert bags[0].tolist() == [10, 11, 10, 11]
    for row in bags[1:]:
        assert 20 <= row[0] <= 25 and np.diff(row).tolist() == [1, 1, 1]


def test_the_bag_network_scores_the_mean_of_its_windows_with_the_window_networks_weights() -> None:
    pytest.importorskip("tensorflow", reason="training extra not installed: pip install '.[train]'")
    from emotiond.models.training.model import bag_model, build_model

    window = build_model(20, 8, 7, widths=(8, 8, 8, 8))
    bag = bag_model(window, 3)
    x = np.random.default_rng(1).normal(size=(2, 3, 20, 8)).astype(np.float32)
    per_window = window.predict(x.reshape(6, 20, 8), verbose=0).reshape(2, 3, 7)
    np.testing.assert_allclose(bag.predict(x, verbose=0), per_window.mean(axis=1), atol=1e-5)
    assert {id(v) for v in bag.weights} == {id(v) for v in window.weights}  # training the bag trains the window net


def test_bags_refuse_the_training_only_heads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        train_main(["--out", str(tmp_path / "r"), "--bag-windows", "4", "--adversary", "0.1", "--mixup", "0"])
    assert exc.value.code == exitcodes.USAGE
    assert "--bag-windows 4" in capsys.readouterr().err
