"""Bad input never crashes emotiond: fuzzed configuration, a corpus of broken and odd audio, junk on stdin.

The rule everywhere: either a clear one-line error (``ConfigError`` → exit 78;
unusable audio → exit 65, missing → 66, naming the file) or success with sane
output. Never a traceback, never a hang (every subprocess has a timeout).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from emotiond.daemon.config import ConfigError, Settings, load_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SR = 16_000
EXAMPLES = int(os.environ.get("EMOTIOND_FUZZ_EXAMPLES", "300"))  # more for a longer local fuzzing session
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- configuration

SECTIONS = {name: tuple(field.annotation.model_fields) if hasattr(field.annotation, "model_fields") else ()
            for name, field in Settings.model_fields.items()}
KEYS = sorted({k for keys in SECTIONS.values() for k in keys})

scalars = (
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
    | st.sampled_from(["-", "auto", "true", "1e9", "0x10", "", " ", "~", "/etc/passwd", "x" * 300, "a\nb", "ema"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
section_trees = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), values, max_size=5)
config_trees = st.dictionaries(
    st.sampled_from(sorted(SECTIONS)) | st.text(max_size=8) | st.integers(-3, 3) | st.none(),
    section_trees | values,
    max_size=5,
)


def config_texts() -> st.SearchStrategy[bytes]:
    dumped = config_trees.map(lambda t: yaml.safe_dump(t, allow_unicode=True).encode("utf-8"))
    any_yaml = values.map(lambda v: yaml.safe_dump(v, allow_unicode=True).encode("utf-8"))
    malformed = st.text(st.characters(exclude_categories=("Cs",)), max_size=200).map(lambda s: s.encode("utf-8"))
    yamlish = st.lists(st.sampled_from(["mqtt:", "  port: 1", "vad:\n  aggressiveness: [", "- x", "\t", ": :",
                                        "&a [*a]", "{", "key: 'unterminated", "%YAML 9.9", "---", "...",
                                        "!!python/object:os.system x", "source:\n  speed: 1e999",
                                        "mqtt:\n  port: 99999", "source: {input: null, bogus: 1}"]),
                        max_size=6).map(lambda parts: "\n".join(parts).encode())
    return dumped | any_yaml | malformed | yamlish | st.binary(max_size=200)


def assert_settings_or_one_line(path: Path | None, overrides=(), environ=None) -> Settings | ConfigError:
    try:
        return load_settings(path, overrides, environ={} if environ is None else environ)
    except ConfigError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg and "\r" not in msg, repr(msg)
        return exc


@pytest.fixture(scope="module")
def cfg_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-config")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=config_texts())
def test_fuzzed_config_files_load_or_fail_in_one_line(cfg_dir: Path, data: bytes) -> None:
    path = cfg_dir / "config.yaml"
    path.write_bytes(data)
    assert_settings_or_one_line(path)


set_items = st.builds(
    lambda key, sep, value: f"{key}{sep}{value}",
    st.sampled_from([f"{s}.{k}" for s in SECTIONS for k in SECTIONS[s]] + ["mqtt", "x.y.z", ".", "", "source..speed",
                                                                           "mqtt.tls.ca_file.x", "vad.frame_ms.q"])
    | st.text(max_size=12),
    st.sampled_from(["=", "", "=="]),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=20) | st.sampled_from(
        ["[1, 2", "{a: 1}", "null", "nan", "-inf", "1e400", "99999999999999999999", "- x", "!!binary AA=="]),
)


@settings(max_examples=EXAMPLES * 2 // 3, deadline=None)
@given(items=st.lists(set_items, max_size=4), env=st.lists(set_items, max_size=2))
def test_fuzzed_overrides_and_environment_load_or_fail_in_one_line(items: list[str], env: list[str]) -> None:
    environ = {}
    for e in env:
        key, _, value = e.partition("=")
        environ["EMOTIOND_" + key.upper().replace(".", "__")] = value
    assert_settings_or_one_line(None, items, environ)


def test_odd_paths_in_config_are_one_line_errors(cfg_dir: Path) -> None:
    for value in ("x" * 5000, "/" + "d/" * 3000 + "p", "a\0b", "\n\n", "/dev/null/x"):
        path = cfg_dir / "paths.yaml"
        path.write_text(yaml.safe_dump({"mqtt": {"password_file": value}}))
        assert isinstance(assert_settings_or_one_line(path), ConfigError)
    assert isinstance(assert_settings_or_one_line(cfg_dir), ConfigError)  # a directory, not a file
    assert isinstance(assert_settings_or_one_line(cfg_dir / "missing.yaml"), ConfigError)


def emotiond(*args: str, stdin: bytes | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emotiond", *args], capture_output=True, input=stdin,
                          timeout=timeout, cwd=ROOT)


def test_check_config_cli_exit_78_and_one_line_or_0(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    cases = {
        "junk.yaml": rng.bytes(300),
        "malformed.yaml": b"mqtt:\n  port: [1, 2\nvad: {",
        "types.yaml": b"mqtt:\n  port: {a: [1, 2]}\n  qos: 7\nsource: [1, 2]\n",
        "extra.yaml": b"bogus:\n  x: 1\n",
        "scalar.yaml": b"42\n",
        "longpath.yaml": yaml.safe_dump({"mqtt": {"password_file": "p" * 5000}}).encode(),
        "ok.yaml": b"mqtt:\n  port: 8883\nvad:\n  aggressiveness: 3\n",
        "empty.yaml": b"",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)

    def check(name: str) -> tuple[str, int, str]:
        proc = emotiond("check-config", "--config", str(tmp_path / name), timeout=60)
        return name, proc.returncode, proc.stderr.decode()

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(check, cases))
    for name, code, err in results:
        assert "Traceback" not in err, (name, err)
        if name in ("ok.yaml", "empty.yaml"):
            assert code == 0, (name, err)
        else:
            assert code == 78, (name, code, err)
            assert len(err.strip().splitlines()) == 1 and err.startswith("emotiond: config error:"), (name, err)
            assert name in err


# ----------------------------------------------------------------------------- audio corpus


def _speech(have_espeak) -> np.ndarray:
    from tests.fixtures_audio import espeak, pink_noise

    rng = np.random.default_rng(5)
    s = espeak("I really did not expect to see you here today.")
    x = np.concatenate([np.zeros(SR), s, np.zeros(SR)])
    return x + pink_noise(len(x), rng, -55)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, have_espeak) -> dict[str, Path]:
    """name → file; names say what is odd about each."""
    d = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    x = _speech(have_espeak)
    files: dict[str, Path] = {}

    def add(name: str, data: np.ndarray, rate: int = SR, **kw) -> None:
        files[name] = d / name
        sf.write(str(files[name]), data, rate, **kw)

    (d / "empty.wav").write_bytes(b"")
    files["empty.wav"] = d / "empty.wav"
    add("full.wav", x, subtype="PCM_16")
    whole = (d / "full.wav").read_bytes()
    (d / "truncated.wav").write_bytes(whole[: len(whole) // 2])  # header promises twice the data
    files["truncated.wav"] = d / "truncated.wav"
    (d / "header_only.wav").write_bytes(whole[:30])
    files["header_only.wav"] = d / "header_only.wav"
    add("full.flac", x, format="FLAC")
    flac = (d / "full.flac").read_bytes()
    (d / "truncated.flac").write_bytes(flac[: len(flac) // 2])
    files["truncated.flac"] = d / "truncated.flac"
    (d / "wav_named.mp3").write_bytes(whole)
    files["wav_named.mp3"] = d / "wav_named.mp3"
    (d / "text.wav").write_text("this is not audio\n" * 50)
    files["text.wav"] = d / "text.wav"
    import soxr

    add("8k.wav", soxr.resample(x, SR, 8000), 8000, subtype="PCM_16")
    add("4k.wav", soxr.resample(x, SR, 4000), 4000, subtype="PCM_16")  # below the supported minimum
    add("44k_stereo.wav", np.stack([soxr.resample(x, SR, 44100)] * 2, axis=1) * [1.0, 0.5], 44100,
        subtype="PCM_16")
    add("24bit.wav", x, subtype="PCM_24")
    bad = x.astype(np.float32).copy()
    bad[::97] = np.nan
    bad[5::211] = np.inf
    bad[7::307] = -np.inf
    add("float_nan_inf.wav", bad, subtype="FLOAT")
    add("clipped.wav", np.clip(x * 4, -1, 1), subtype="PCM_16")  # the speech peaks clip
    add("dc_offset.wav", np.clip(x + 0.4, -1, 1), subtype="PCM_16")
    add("silence.wav", np.zeros(SR * 3), subtype="PCM_16")
    long = np.zeros(20 * 60 * SR, dtype=np.float32)  # 20 min of silence with noise bursts, written as FLAC
    for start in range(0, len(long), 30 * SR):
        long[start : start + 2 * SR] = rng.normal(0, 0.05, 2 * SR)
    add("long_20min.flac", long, format="FLAC", subtype="PCM_16")
    files["missing.wav"] = d / "missing.wav"
    return files


OK_OR_ERROR = {  # the outcome each file must have (65 = unusable, 66 = missing); None = either 0 or 65
    "empty.wav": 65, "text.wav": 65, "header_only.wav": 65, "4k.wav": 65, "missing.wav": 66,
    "truncated.wav": None, "truncated.flac": None,
    "full.wav": 0, "full.flac": 0, "wav_named.mp3": 0, "8k.wav": 0, "44k_stereo.wav": 0, "24bit.wav": 0,
    "float_nan_inf.wav": 0, "clipped.wav": 0, "dc_offset.wav": 0, "silence.wav": 0, "long_20min.flac": 0,
}
SPEECH = {"full.wav", "full.flac", "wav_named.mp3", "8k.wav", "44k_stereo.wav", "24bit.wav", "float_nan_inf.wav",
          "clipped.wav"}


def check_outcome(what: str, name: str, code: int, err: str) -> None:
    assert "Traceback" not in err, (what, name, err[-3000:])
    want = OK_OR_ERROR[name]
    if code != 0 or want not in (0, None):
        assert code == (want or 65), (what, name, code, err[-2000:])
        errors = [line for line in err.splitlines() if line.startswith("emotiond")]
        assert len(errors) == 1 and name in errors[0], (what, name, err[-2000:])


def sane_probabilities(p: dict[str, float]) -> None:
    assert all(math.isfinite(v) and 0 <= v <= 1 for v in p.values()) and abs(sum(p.values()) - 1) < 0.02


def test_corpus_through_run(corpus: dict[str, Path], model_path: Path) -> None:
    def run(name: str) -> tuple[str, subprocess.CompletedProcess]:
        return name, emotiond("run", "--input", str(corpus[name]), "--fast", "--stdout",
                              "--set", "mqtt.enabled=false", "--set", f"model.path={model_path}", timeout=120)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, sorted(corpus, key=lambda n: n != "long_20min.flac")))
    for name, proc in results:
        err = proc.stderr.decode()
        check_outcome("run", name, proc.returncode, err)
        if proc.returncode:
            continue
        events = [json.loads(line) for line in proc.stdout.decode().splitlines()]
        utterances = [e for e in events if e["event"] == "utterance"]
        for u in utterances:
            sane_probabilities(u["probabilities"])
        if name in SPEECH:
            assert 1 <= len(utterances) <= 2, (name, utterances)
            assert abs(utterances[0]["offset_s"] - 1.0) < 0.6, (name, utterances[0]["offset_s"])
        if name == "silence.wav":
            assert not utterances


def test_corpus_through_classify(corpus: dict[str, Path], model_path: Path) -> None:
    names = sorted(corpus)
    proc = emotiond("classify", "--json", "--set", f"model.path={model_path}", *(str(corpus[n]) for n in names),
                    timeout=180)
    err, out = proc.stderr.decode(), proc.stdout.decode()
    assert "Traceback" not in err, err[-3000:]
    rows = {Path(r["file"]).name: r for r in map(json.loads, out.splitlines())}
    errors = [line for line in err.splitlines() if line.startswith("emotiond")]
    for name in names:
        failed = [line for line in errors if f"/{name}:" in line]
        want = OK_OR_ERROR[name]
        if name in rows:
            assert want in (0, None) and not failed, (name, failed)
            r = rows[name]
            if r["windows"]:
                sane_probabilities(r["probabilities"])
            if name in SPEECH:
                assert r["windows"] >= 1 and r["emotion"] is not None, (name, r)
        else:
            assert want != 0 and len(failed) == 1, (name, errors)
    first_bad = next(n for n in names if n not in rows)
    assert proc.returncode == (OK_OR_ERROR[first_bad] or 65)  # the exit code is that of the first unusable file


def test_corpus_through_eval(corpus: dict[str, Path], model_path: Path, tmp_path: Path) -> None:
    labels = json.loads(model_path.with_suffix(".json").read_text())["labels"]
    good = [n for n, want in OK_OR_ERROR.items() if want == 0 and n != "long_20min.flac"]
    manifests = {"good": good, **{n: [n] for n, want in OK_OR_ERROR.items() if want != 0}}

    def run(key: str) -> tuple[str, subprocess.CompletedProcess]:
        m = tmp_path / f"{key}.csv"
        m.write_text("path,label\n" + "".join(f"{corpus[n]},{labels[i % len(labels)]}\n"
                                               for i, n in enumerate(manifests[key])))
        return key, emotiond("eval", str(m), "--set", f"model.path={model_path}", timeout=120)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, manifests))
    for key, proc in results:
        err = proc.stderr.decode()
        if key == "good":
            assert proc.returncode == 0 and "Traceback" not in err, err[-3000:]
            assert f"{len(good)} clips" in proc.stdout.decode()
        else:
            check_outcome("eval", key, proc.returncode, err)


def test_junk_on_stdin_is_handled(model_path: Path) -> None:
    rng = np.random.default_rng(9)
    cases = {
        "random": (rng.bytes(SR * 2 * 4 + 1), []),  # 4 s of random samples and an odd byte
        "empty": (b"", []),
        "one byte": (b"\x7f", []),
        "44.1k random": (rng.bytes(44100 * 2 * 2), ["--set", "source.stdin_rate=44100"]),
        "full scale": ((np.tile([32767, -32768], SR * 2)).astype("<i2").tobytes(), []),
    }

    def run(item):
        name, (data, extra) = item
        return name, emotiond("run", "--input", "-", "--stdout", "--set", "mqtt.enabled=false",
                              "--set", f"model.path={model_path}", *extra, stdin=data, timeout=60)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, cases.items()))
    for name, proc in results:
        err = proc.stderr.decode()
        assert proc.returncode == 0 and "Traceback" not in err, (name, err[-2000:])
        for line in proc.stdout.decode().splitlines():
            e = json.loads(line)
            if e["event"] == "utterance":
                sane_probabilities(e["probabilities"])
