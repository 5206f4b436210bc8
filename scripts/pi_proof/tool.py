"""Helpers for scripts/pi-proof (the emulated Raspberry Pi check). Not part of the package.

  tool.py requirements SETUP_CFG OUT [--without-litert]
      write setup.cfg's install_requires (markers kept) as a pip requirements file
  tool.py allowed SETUP_CFG VERSION...
      print "VERSION yes|no" per version: does the ai-edge-litert requirement that applies
      on aarch64 (environment markers evaluated for Linux/aarch64/CPython 3.11) allow it?
  tool.py probe FILE...
      (runs in either venv) per-window class probabilities at full precision + versions, JSON
  tool.py compare HOST_CLASSIFY ARM_CLASSIFY HOST_PROBE ARM_PROBE [HOST_NPZ ARM_NPZ]
      max abs differences between the x86-64 and the arm64 results, JSON on stdout:
      end to end (classify means and per window), the model alone (both interpreters on the
      same feature windows) and the frontend alone (feature windows, int8 input levels)

`probe` imports only emotiond and numpy; `allowed` needs `packaging`, `compare` numpy
(both run on the host).
"""

from __future__ import annotations

import configparser
import json
import sys
from pathlib import Path

LITERT = "ai-edge-litert"
DISTS = ("emotiond", "ai-edge-litert", "numpy", "scipy", "soundfile", "soxr", "webrtcvad-wheels",
         "paho-mqtt", "pydantic", "PyYAML", "rich", "sdnotify")
PI_ENV = {"platform_machine": "aarch64", "sys_platform": "linux", "platform_system": "Linux",
          "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython",
          "python_version": "3.11", "python_full_version": "3.11.2"}


def install_requires(setup_cfg: Path) -> list[str]:
    cp = configparser.ConfigParser()
    cp.read(setup_cfg)
    lines = [ln.split("#", 1)[0].strip() for ln in cp["options"]["install_requires"].splitlines()]
    return [ln for ln in lines if ln]


def _name(req: str) -> str:
    from packaging.requirements import Requirement

    return Requirement(req).name.lower().replace("_", "-")


def cmd_requirements(args: list[str]) -> int:
    setup_cfg, out = Path(args[0]), Path(args[1])
    reqs = install_requires(setup_cfg)
    if "--without-litert" in args:
        reqs = [r for r in reqs if _name(r) != LITERT]
    out.write_text("".join(r + "\n" for r in reqs))
    return 0


def cmd_allowed(args: list[str]) -> int:
    from packaging.requirements import Requirement

    reqs = [Requirement(r) for r in install_requires(Path(args[0]))]
    on_pi = [r for r in reqs if r.name.lower() == LITERT and (r.marker is None or r.marker.evaluate(PI_ENV))]
    if len(on_pi) != 1:
        print(f"expected exactly one {LITERT} requirement for aarch64, found {len(on_pi)}", file=sys.stderr)
        return 2
    for v in args[1:]:
        print(v, "yes" if on_pi[0].specifier.contains(v, prereleases=True) else "no")
    return 0


def cmd_probe(args: list[str]) -> int:
    """probe [--save-inputs NPZ] [--inputs NPZ] FILE...

    ``files``: per-window probabilities through this machine's own frontend (what
    ``emotiond classify`` averages). ``--save-inputs`` stores those feature windows;
    ``--inputs`` also runs the model on windows stored by another machine (``fixed``),
    which separates the interpreter's numerics from the float frontend's.
    """
    import platform
    from importlib import metadata

    import numpy as np
    from emotiond.daemon.assembly import frontend_params, load_model
    from emotiond.daemon.config import load_settings
    from emotiond.dsp.audio import load_mono_16k
    from emotiond.dsp.frontend import clip_windows

    save = load = None
    while args and args[0].startswith("--"):
        opt, value, args = args[0], args[1], args[2:]
        save, load = (value, load) if opt == "--save-inputs" else (save, value)
    settings = load_settings(None, [])
    model = load_model(settings)
    versions = {}
    for d in DISTS:
        try:
            versions[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            versions[d] = None
    out = {"machine": platform.machine(), "python": platform.python_version(), "runtime": model.runtime,
           "labels": list(model.labels), "versions": versions,
           "input_quantization": [float(model._in_scale), int(model._in_zero)], "files": {}, "fixed": {}}
    saved = {}
    for f in args:
        sig = load_mono_16k(Path(f))
        fp = frontend_params(settings, model)
        wins = clip_windows(sig, fp.vad, fp.denoise, fp.window)
        saved[Path(f).name] = np.stack([w.features for w in wins]).astype(np.float32)
        out["files"][Path(f).name] = [[float(x) for x in model.predict(w.features)] for w in wins]
    if save:
        np.savez(save, **saved)
    if load:
        with np.load(load) as other:
            stored = {name: other[name] for name in other.files}
        for name, wins in stored.items():
            out["fixed"][name] = [[float(x) for x in model.predict(w)] for w in wins]
        # the same windows through LiteRT's reference kernels (no XNNPACK, no optimised paths)
        try:
            from ai_edge_litert import interpreter as litert

            ref = litert.Interpreter(model_path=str(model.path), num_threads=1,
                                     experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
            ref.allocate_tensors()
            model._interp = ref
            out["fixed_ref"] = {name: [[float(x) for x in model.predict(w)] for w in wins]
                                for name, wins in stored.items()}
        except (ImportError, AttributeError) as exc:
            out["fixed_ref_error"] = str(exc)
    print(json.dumps(out))
    return 0


def _rows(path: Path) -> dict[str, dict]:
    rows = {}
    for ln in path.read_text().splitlines():
        if ln.strip().startswith("{"):
            r = json.loads(ln)
            rows[Path(r["file"]).name] = r
    return rows


def cmd_compare(args: list[str]) -> int:
    host_c, arm_c = _rows(Path(args[0])), _rows(Path(args[1]))
    host_p, arm_p = json.loads(Path(args[2]).read_text()), json.loads(Path(args[3]).read_text())
    res = {"files": {}, "max_abs_diff_classify": 0.0, "max_abs_diff_windows": 0.0, "same_decisions": True,
           "complete": True}
    for name, h in host_c.items():
        a = arm_c.get(name)
        hw, aw = host_p["files"].get(name), arm_p["files"].get(name)
        if a is None or hw is None or aw is None:
            res["complete"] = False
            res["files"][name] = {"missing": True}
            continue
        dc = max((abs(h["probabilities"][k] - a["probabilities"].get(k, -1.0)) for k in h["probabilities"]),
                 default=0.0)
        same = h["emotion"] == a["emotion"] and h["windows"] == a["windows"] and len(hw) == len(aw)
        dw = None
        if same:
            pairs = (xy for wh, wa in zip(hw, aw, strict=True) for xy in zip(wh, wa, strict=True))
            dw = max((abs(x - y) for x, y in pairs), default=0.0)
        res["files"][name] = {"emotion_x86": h["emotion"], "emotion_arm": a["emotion"], "windows_x86": h["windows"],
                              "windows_arm": a["windows"], "max_abs_diff_classify": dc,
                              "max_abs_diff_windows": dw}
        res["same_decisions"] &= same
        res["max_abs_diff_classify"] = max(res["max_abs_diff_classify"], dc)
        if dw is not None:
            res["max_abs_diff_windows"] = max(res["max_abs_diff_windows"], dw)
    if not host_c:
        res["complete"] = False
    # the interpreter alone: the arm64 model on the x86-64 feature windows vs the x86-64 model
    fixed = arm_p.get("fixed") or {}
    res["max_abs_diff_model_only"] = None
    if fixed:
        res["max_abs_diff_model_only"] = max(
            abs(x - y)
            for name, wins in fixed.items()
            for wa, wh in zip(wins, host_p["files"][name], strict=True)
            for x, y in zip(wa, wh, strict=True)
        )
    # the interpreters' reference kernels on the same windows: expected bit-exact
    res["max_abs_diff_reference_kernels"] = None
    if arm_p.get("fixed_ref") and host_p.get("fixed_ref"):
        res["max_abs_diff_reference_kernels"] = max(
            abs(x - y)
            for name, wins in arm_p["fixed_ref"].items()
            for wa, wh in zip(wins, host_p["fixed_ref"][name], strict=True)
            for x, y in zip(wa, wh, strict=True)
        )
    # the float frontend alone: feature windows and their int8 quantisation
    if len(args) >= 6:
        import numpy as np

        scale, zero = host_p["input_quantization"]
        with np.load(args[4]) as h, np.load(args[5]) as a:
            feats = {}
            for name in h.files:
                if name not in a.files or h[name].shape != a[name].shape:
                    feats[name] = {"shape_x86": list(h[name].shape), "shape_arm": list(a[name].shape)}
                    continue
                qh = np.clip(np.round(h[name] / scale + zero), -128, 127)
                qa = np.clip(np.round(a[name] / scale + zero), -128, 127)
                feats[name] = {"max_abs_diff_features": float(np.max(np.abs(h[name] - a[name]))),
                               "int8_inputs_differing": int(np.sum(qh != qa)), "int8_inputs": int(qh.size),
                               "windows_with_int8_difference": int(np.sum(np.any(qh != qa, axis=(1, 2))))}
            res["features"] = feats
    print(json.dumps(res))
    return 0


COMMANDS = {"requirements": cmd_requirements, "allowed": cmd_allowed, "probe": cmd_probe, "compare": cmd_compare}

if __name__ == "__main__":
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
