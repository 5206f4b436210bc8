"""One ``FrontendParams``: written by training into the sidecar, read back by the runtime, overridden by config."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from emotiond.daemon.assembly import build_frontend, frontend_params
from emotiond.daemon.config import load_settings
from emotiond.dsp.adapt import AdaptParams, PerWindowMean
from emotiond.dsp.denoise import DenoiseParams
from emotiond.dsp.frontend import FrontendParams, WindowParams, clip_windows
from emotiond.dsp.vad import VadParams
from emotiond.models.runtime import DEFAULT_MODEL, EmotionModel, ModelError


def _copy(model_path: Path, tmp_path: Path, **changes) -> Path:
    """The model with its sidecar edited: ``key=None`` removes a key."""
    copy = tmp_path / "m.tflite"
    shutil.copy(model_path, copy)
    side = json.loads(model_path.with_suffix(".json").read_text())
    for k, v in changes.items():
        if v is None:
            side.pop(k, None)
        else:
            side[k] = v
    copy.with_suffix(".json").write_text(json.dumps(side))
    return copy


def test_sidecar_round_trip() -> None:
    fp = FrontendParams(
        VadParams(aggressiveness=3, hangover_ms=300),
        DenoiseParams(n_std_thresh=2.0, enabled=False),
        WindowParams(80, 20, 10),
        AdaptParams(horizon_s=120.0, prior_s=10.0),
    )
    assert FrontendParams.from_sidecar(json.loads(json.dumps(fp.to_sidecar()))) == fp


def test_shipped_sidecar_gives_the_frontend_the_daemon_always_ran() -> None:
    """The shipped sidecar (``denoise``, ``hop_frames``, ``min_frames``, ``adapt``) reads to the defaults the
    daemon built its frontend from before the sidecar was its source, so its windows are unchanged; the
    same sidecar written with 2.0.0's old ``gate`` key reads the same."""
    if not DEFAULT_MODEL.exists():
        pytest.skip("no model shipped")
    model = EmotionModel(DEFAULT_MODEL)
    side = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    trained = model.info.frontend()
    assert trained == FrontendParams(adapt=AdaptParams(horizon_s=600.0, prior_s=30.0))
    old = {("gate" if k == "denoise" else k): v for k, v in side.items()}
    assert "gate" in old and FrontendParams.from_sidecar(old) == FrontendParams.from_sidecar(side)
    assert frontend_params(load_settings(None, ()), model) == trained
    assert frontend_params(load_settings(Path(__file__).parents[1] / "config.yaml", ()), model) == trained


def test_config_overrides_only_the_keys_it_sets(model_path: Path, tmp_path: Path) -> None:
    side = json.loads(model_path.with_suffix(".json").read_text())
    trained = FrontendParams(VadParams(aggressiveness=1), DenoiseParams(n_std_thresh=2.5),
                             WindowParams(side["window_frames"], 50, 30))
    front = trained.to_sidecar()
    del front["window_frames"], front["adapt"]
    model = EmotionModel(_copy(model_path, tmp_path, gate=None, **front))
    assert frontend_params(load_settings(None, ()), model) == trained  # nothing set: the model's own
    settings = load_settings(None, ("vad.hangover_ms=600", "denoise.enabled=false", "windows.hop_ms=100"))
    got = frontend_params(settings, model)
    assert got.vad == replace(trained.vad, hangover_ms=600)
    assert got.denoise == replace(trained.denoise, enabled=False)
    assert got.window == WindowParams(side["window_frames"], 10, 30)


def test_old_gate_key_and_new_denoise_key_read_alike(model_path: Path, tmp_path: Path) -> None:
    old = EmotionModel(_copy(model_path, tmp_path, gate={"n_std_thresh": 3.0}, denoise=None))
    new = EmotionModel(_copy(model_path, tmp_path, gate=None, denoise={"n_std_thresh": 3.0}))
    assert old.info.frontend().denoise == new.info.frontend().denoise == DenoiseParams(n_std_thresh=3.0)


def test_bad_frontend_value_in_sidecar_names_the_file(model_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"m\.json: bad front-end parameters"):
        EmotionModel(_copy(model_path, tmp_path, hop_frames=0))
    with pytest.raises(ModelError, match=r"m\.json: bad front-end parameters"):
        EmotionModel(_copy(model_path, tmp_path, vad="loud"))


def test_built_frontend_cuts_the_windows_of_the_sidecar_params(model_path: Path, speech_scene) -> None:
    """The daemon's frontend (assembly) cuts bit-identical windows to one built from the sidecar directly."""
    x = speech_scene[0]
    model = EmotionModel(model_path)
    fe = build_frontend(load_settings(None, ()), model, PerWindowMean())
    live = [w for w in fe.push(x) + fe.flush() if hasattr(w, "features")]
    fp = model.info.frontend()
    offline = clip_windows(x, fp.vad, fp.denoise, fp.window, normaliser=PerWindowMean())
    assert len(live) == len(offline) > 0
    for a, b in zip(live, offline, strict=True):
        np.testing.assert_array_equal(a.features, b.features)


def test_a_model_asking_for_other_mel_bands_gets_them_live_offline_and_in_training(speech_scene) -> None:
    """``features.n_mels`` in a sidecar reaches every front end: the daemon's (assembly), offline
    classification (``clip_windows``) and training's cache, with the same windows; fixed keys stay refused."""
    from emotiond.dsp.features import FEATURES, feature_config
    from emotiond.models.training.featurize import cache_key, clip_features

    x = speech_scene[0]
    fp = FrontendParams(features=replace(FEATURES, n_mels=64))
    side = {**fp.to_sidecar(), "features": fp.features.to_dict()}
    assert FrontendParams.from_sidecar(json.loads(json.dumps(side))) == fp
    live = [w for w in fp.frontend(PerWindowMean()).push(x) if hasattr(w, "features")]
    offline = clip_windows(x, fp.vad, fp.denoise, fp.window, PerWindowMean(), fp.features)
    assert len(offline) > 0 and live and all(w.features.shape == (100, 64) for w in offline)
    for a, b in zip(live, offline, strict=False):
        np.testing.assert_array_equal(a.features, b.features)
    trained = clip_features(x, fp)
    assert trained.x.shape[1:] == (100, 64) and trained.seg_sum.shape[1] == 64
    assert cache_key(["a/b"], fp, None, []) != cache_key(["a/b"], FrontendParams(), None, [])
    with pytest.raises(ValueError, match=r"sample_rate=8000 \(dsp has 16000\)"):
        feature_config({**FEATURES.to_dict(), "sample_rate": 8000})
    with pytest.raises(ValueError, match=r"n_mels=4"):
        feature_config({**FEATURES.to_dict(), "n_mels": 4})


def test_periodicity_bands_reach_every_front_end_chunk_for_chunk(speech_scene) -> None:
    """With ``pitch_bands`` the front end's windows carry them after the mel bands, the same in any chunking,
    offline, in training's cache and in the household statistics; the sidecar round-trips them."""
    from emotiond.dsp.features import FEATURES, feature_config
    from emotiond.models.training.featurize import clip_features

    x = speech_scene[0]
    fp = FrontendParams(features=replace(FEATURES, pitch_bands=12))
    assert feature_config(json.loads(json.dumps(fp.features.to_dict()))) == fp.features
    offline = clip_windows(x, fp.vad, fp.denoise, fp.window, PerWindowMean(), fp.features)
    fe = fp.frontend(PerWindowMean())
    live = [e for i in range(0, len(x), 1234) for e in fe.push(x[i : i + 1234])] + fe.flush()
    live = [w for w in live if hasattr(w, "features")]
    assert len(live) == len(offline) > 0
    for a, b in zip(live, offline, strict=True):
        np.testing.assert_array_equal(a.features, b.features)
    trained = clip_features(x, fp)
    assert trained.x.shape[1:] == (100, 52) and trained.seg_sum.shape[1] == 52
    assert np.abs(trained.x[:, :, 40:]).max() <= 1.0
