"""``emotiond eval``: clip / stream / both on generated speech, noise mixing at a requested SNR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from emotiond.daemon.evaluate import (
    NoiseMaker,
    eval_main,
    padded,
    stream_probabilities,
)
from emotiond.dsp.noise import scale_to_snr
from emotiond.models.runtime import EmotionModel, ModelError

from tests.fixtures_audio import SR, espeak, pink_noise

SENTENCES = [
    ("angry", "Get out of my house right now!", 60),
    ("happy", "What a wonderful surprise, thank you so much.", 80),
    ("neutral", "The train leaves at half past nine.", 50),
    ("sad", "I miss the old days when we were all together.", 30),
]


@pytest.fixture(scope="session")
def usable_model(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared model fixture, or a tiny one when the committed model is refused (e.g. stale sidecar)."""
    try:
        EmotionModel(model_path)
        return model_path
    except ModelError:
        from tests.fixtures_model import build_tiny_int8_model

        return build_tiny_int8_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def manifest(have_espeak: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    (root / "clips").mkdir()
    rng = np.random.default_rng(1)
    rows = []
    for i, (label, text, pitch) in enumerate(SENTENCES):
        x = espeak(text, pitch=pitch)
        x = np.concatenate([np.zeros(SR // 2), x, np.zeros(SR // 2)]) + pink_noise(len(x) + SR, rng, -60)
        sf.write(str(root / "clips" / f"{i}.wav"), x, SR, subtype="PCM_16")
        rows.append(f"clips/{i}.wav,{label},spk{i % 2}")
    # near-silence: no window offline, no utterance event live
    sf.write(str(root / "clips" / "quiet.wav"), pink_noise(2 * SR, rng, -75), SR, subtype="PCM_16")
    rows.append("clips/quiet.wav,neutral,spk0")
    rows.append("clips/0.wav,boredom,spk0")  # not in the model's labels: skipped
    (root / "manifest.csv").write_text("path,label,speaker\n" + "\n".join(rows) + "\n")
    return root / "manifest.csv"


def _run(manifest: Path, model: Path, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "result.json"
    code = eval_main([str(manifest), "--json", str(out), "--set", f"model.path={model}",
                      "--set", "mqtt.enabled=false", *extra])
    assert code == 0
    return json.loads(out.read_text())


def _check(r: dict, labels: list[str], n: int) -> None:
    assert r["n"] == n
    for key in ("accuracy", "uar", "macro_f1"):
        assert 0.0 <= r[key] <= 1.0
    assert set(r["per_class"]) == set(labels)
    for m in r["per_class"].values():
        assert set(m) == {"precision", "recall", "f1", "support"}
    assert np.asarray(r["confusion"]).shape == (len(labels), len(labels))
    assert np.asarray(r["confusion"]).sum() + r.get("no_event", r.get("no_window", 0)) == n
    assert r["skipped"]["n"] == 1 and r["skipped"]["labels"] == {"boredom": 1}


def test_eval_both_modes(manifest: Path, usable_model: Path, tmp_path: Path, capsys) -> None:
    out = _run(manifest, usable_model, tmp_path, "--mode", "both", "--report", str(tmp_path / "rep"))
    labels = out["labels"]
    clip, stream = out["results"]["clip"], out["results"]["stream"]
    _check(clip, labels, 5)
    _check(stream, labels, 5)
    assert clip["no_window"] == 1 and stream["no_event"] == 1
    assert any(p.endswith("quiet.wav") for p in stream["no_event_clips"])
    assert stream["utterance_events"] >= 4
    assert out["gap_uar"] == pytest.approx(stream["uar"] - clip["uar"])
    assert "gap" in capsys.readouterr().out
    assert (tmp_path / "rep" / "per_class_stream.md").is_file()


def test_eval_stream_with_noise(manifest: Path, usable_model: Path, tmp_path: Path) -> None:
    out = _run(manifest, usable_model, tmp_path, "--mode", "stream", "--noise", "pink", "--snr", "10")
    by = out["noise"]["by_snr"]["10"]
    assert set(by) == {"denoise_on", "denoise_off"}
    for r in by.values():
        assert r["stream"]["n"] == 5 and 0.0 <= r["stream"]["uar"] <= 1.0


def test_eval_bad_manifest(tmp_path: Path, usable_model: Path) -> None:
    (tmp_path / "m.csv").write_text("path,label\nx.wav,boredom\n")
    assert eval_main([str(tmp_path / "m.csv"), "--set", f"model.path={usable_model}"]) != 0


def _independent_snr(speech: np.ndarray, noise: np.ndarray) -> float:
    """The kit's definition, computed here again: loudest half of 25 ms speech frames against the noise RMS."""
    frame = 400
    n = len(speech) // frame
    p = np.sort((speech[: n * frame].reshape(n, frame) ** 2).mean(axis=1))[n // 2 :]
    return 10 * np.log10(np.mean(p) / np.mean(noise**2))


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
@pytest.mark.parametrize("snr", [20.0, 5.0, 0.0])
def test_mixing_hits_snr(kind: str, snr: float, manifest: Path) -> None:
    speech = espeak("Measure the noise over the spoken part only.")
    speech = np.concatenate([np.zeros(SR), speech, np.zeros(SR)])  # silences must not dilute the SNR
    pool = sorted((manifest.parent / "clips").glob("[0-9].wav"))
    noise = NoiseMaker(kind, pool, seed=3)(len(speech))
    scaled = scale_to_snr(speech, noise, snr)
    assert abs(_independent_snr(speech, scaled) - snr) < 0.01


def test_padding_stays_below_vad_floor() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.3, SR)  # loud clip without any silence
    sig, offset = padded(x, rng)
    assert offset == SR and len(sig) == 3 * SR
    assert 20 * np.log10(np.std(sig[:offset])) < -60


def test_stream_prediction_is_duration_weighted() -> None:
    labels = ["a", "b"]
    events = [{"probabilities": {"a": 1.0, "b": 0.0}, "duration_s": 3.0},
              {"probabilities": {"a": 0.0, "b": 1.0}, "duration_s": 1.0}]
    assert stream_probabilities(events, labels) == pytest.approx([0.75, 0.25])
    assert stream_probabilities([], labels) is None


def test_eval_imports_neither_tensorflow_nor_librosa() -> None:
    import subprocess
    import sys

    code = ("import sys, emotiond.daemon.evaluate; "
            "print(any(m.split('.')[0] in ('tensorflow', 'librosa', 'keras') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_json_output_gets_confusion_png_and_per_class_table_beside_it(tmp_path, model_path, have_espeak) -> None:
    import subprocess
    import sys

    rows = ["path,label"]
    for i, text in enumerate(["I am so happy today.", "Leave me alone right now."]):
        sf.write(str(tmp_path / f"c{i}.wav"), np.concatenate([np.zeros(8000), espeak(text), np.zeros(8000)]), 16000)
        rows.append(f"c{i}.wav,{('happy', 'angry')[i]}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out" / "result.json"
    proc = subprocess.run([sys.executable, "-m", "emotiond", "eval", str(tmp_path / "m.csv"), "--json", str(out),
                           "--set", f"model.path={model_path}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["n"] == 2
    assert (out.parent / "confusion_clip.png").stat().st_size > 1000
    assert "recall" in (out.parent / "per_class_clip.md").read_text()


def test_session_mode_plays_each_speaker_through_one_pipeline_in_order(
    usable_model: Path, manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import emotiond.daemon.evaluate as ev

    built: list[int] = []
    played: list[list[str]] = []
    real_build, real_run = ev.build_pipeline, ev.run_session

    def counting_build(*a, **k):  # observe, not replace: the real pipeline runs
        built.append(1)
        return real_build(*a, **k)

    def recording_run(settings, model, session, rng, progress=None):
        played.append([c.path.name for c in session])
        return real_run(settings, model, session, rng, progress)

    monkeypatch.setattr(ev, "build_pipeline", counting_build)
    monkeypatch.setattr(ev, "run_session", recording_run)
    out = tmp_path / "s.json"
    rc = eval_main([str(manifest), "--mode", "session", "--json", str(out), "--set", f"model.path={usable_model}"])
    assert rc == 0
    res = json.loads(out.read_text())["results"]["session"]
    clips, _ = ev.load_clips(manifest, EmotionModel(usable_model).labels)
    order = ev.sessions(clips, seed=0)
    assert res["sessions"] == {s: len(v) for s, v in order.items()} == {"spk0": 3, "spk1": 2}
    assert len(built) == 2  # one long-lived pipeline per speaker
    assert played == [[c.path.name for c in order[s]] for s in sorted(order)]  # the seeded order
    assert res["n"] == 5 and res["no_event"] >= 1  # the near-silent clip has no event
    assert res["utterance_events"] >= 4
    for key in ("uar", "accuracy", "macro_f1", "per_class", "confusion"):
        assert key in res
    # the warm-up table: every clip at its position in its own session (3 and 2 clips: all within the first 10)
    assert list(res["by_position"]) == ["1-10"] and res["by_position"]["1-10"]["n"] == 5
    assert "session UAR by clips heard: 1-10 " in capsys.readouterr().out


def test_session_draws_play_every_speaker_again_in_new_orders(
    usable_model: Path, manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import emotiond.daemon.evaluate as ev

    played: list[list[str]] = []
    real_run = ev.run_session

    def recording_run(settings, model, session, rng, progress=None):
        played.append([c.path.name for c in session])
        return real_run(settings, model, session, rng, progress)

    monkeypatch.setattr(ev, "run_session", recording_run)
    out = tmp_path / "d.json"
    argv = [str(manifest), "--mode", "session", "--draws", "3", "--set", f"model.path={usable_model}"]
    assert eval_main([*argv, "--json", str(out)]) == 0
    res = json.loads(out.read_text())["results"]["session"]
    assert res["draws"] == 3 and res["n"] == 15 and len(played) == 6  # 2 speakers x 3 draws, 5 clips each time
    clips, _ = ev.load_clips(manifest, EmotionModel(usable_model).labels)
    expected = [[c.path.name for c in ev.sessions(clips, seed=d)[s]] for d in range(3) for s in ("spk0", "spk1")]
    assert played == expected  # draw d is seed d's order
    orders = res["by_draw"]["orders"]
    assert list(orders) == ["seed 0", "seed 1", "seed 2"] and all(v["n"] == 5 for v in orders.values())
    uars = [v["uar"] for v in orders.values()]
    assert (res["by_draw"]["uar_min"], res["by_draw"]["uar_max"]) == (min(uars), max(uars))
    assert eval_main([str(manifest), "--mode", "session", "--draws", "0", "--set", f"model.path={usable_model}"]) == 64


def test_by_draw_scores_each_session_order_on_its_own() -> None:
    from emotiond.daemon.evaluate import by_draw

    labels = ["angry", "neutral"]
    # order 0 gets every clip right, order 1 every clip wrong: the pool would hide that spread
    y_true = [0, 1, 0, 1]
    y_pred = [0, 1, 1, 0]
    out = by_draw(y_true, y_pred, ["a:x"] * 4, [0, 0, 1, 1], labels, seed=5)
    assert list(out["orders"]) == ["seed 5", "seed 6"]
    assert out["orders"]["seed 5"]["uar"] == 1.0 and out["orders"]["seed 6"]["uar"] == 0.0
    assert out["orders"]["seed 6"]["per_corpus"]["a"]["accuracy"] == 0.0
    assert (out["uar_min"], out["uar_max"]) == (0.0, 1.0) and out["uar_sd"] == pytest.approx(0.7071, abs=1e-4)


def test_by_position_buckets_clips_by_how_much_the_session_had_heard() -> None:
    from emotiond.daemon.evaluate import by_position

    labels = ["angry", "neutral"]
    positions = list(range(40)) + list(range(5))  # one session of 40 clips, one of 5
    speakers = ["a:x"] * 40 + ["b:y"] * 5
    y_true = [i % 2 for i in range(45)]
    y_pred = [t if p >= 10 else 1 - t for t, p in zip(y_true, positions, strict=True)]  # wrong until clip 11
    out = by_position(y_true, y_pred, speakers, positions, labels)
    assert list(out) == ["1-10", "11-30", "31-100"]
    assert [out[k]["n"] for k in out] == [15, 20, 10]
    assert out["1-10"]["accuracy"] == 0.0 and out["11-30"]["uar"] == 1.0
    assert out["1-10"]["per_corpus"]["b"]["n"] == 5 and "b" not in out["11-30"]["per_corpus"]


def test_session_skew_subsamples_the_other_classes(manifest: Path) -> None:
    from emotiond.daemon.evaluate import Clip, parse_skew, sessions

    clips = [Clip(Path(f"n{i}"), "neutral", "a") for i in range(6)] + [
        Clip(Path(f"x{i}"), lab, "a") for i, lab in enumerate(["angry", "sad", "happy"] * 4)
    ]
    out = sessions(clips, seed=3, skew=parse_skew("neutral=0.6"))["a"]
    assert sum(c.label == "neutral" for c in out) == 6 and len(out) == 10
    with pytest.raises(ValueError, match="LABEL=SHARE"):
        parse_skew("neutral=1.5")


def test_per_corpus_metrics_group_speakers_by_their_corpus_prefix() -> None:
    from emotiond.daemon.evaluate import per_corpus

    labels = ["angry", "sad"]
    out = per_corpus([0, 1, 0, 1], [0, 1, 1, 1], ["a:s1", "a:s2", "b:s1", "b:s1"], labels)["per_corpus"]
    assert out["a"]["uar"] == 1.0 and out["a"]["n"] == 2
    assert out["b"]["uar"] == 0.5 and out["b"]["accuracy"] == 0.5
    assert per_corpus([0], [0], ["plain"], labels) == {}


def test_capture_sink_speaks_the_whole_sink_protocol() -> None:
    """eval's sink answers every call the pipeline and daemon make, so SinkSet counts no failure."""
    from emotiond.daemon.evaluate import CaptureSink
    from emotiond.daemon.sinks import SinkSet

    sink = CaptureSink()
    sinks = SinkSet([sink])
    sinks.start()
    sinks.publish_emotion({"emotion": "happy"})
    sinks.publish_utterance({"emotion": "sad"})
    sinks.set_status("online", "because")
    sinks.publish_health({"status": "online"})
    assert sinks.stats() == {}
    sinks.close(1.0)
    assert sinks.failures == 0
    assert (sink.emotions, sink.utterances, sink.statuses) == ([{"emotion": "happy"}], [{"emotion": "sad"}], ["online"])
