"""One TFLite runtime in a fresh process: import time and ``invoke`` time per window (run by ``python -m bench``)."""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--module", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--n", type=int, default=300)
    args = p.parse_args(argv)
    import numpy as np

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    try:
        module = importlib.import_module(args.module)
        interp_cls = module.Interpreter
    except Exception as exc:
        print(json.dumps({"module": args.module, "available": False, "error": f"{type(exc).__name__}: {exc}"}))
        return 0
    import_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    interp = interp_cls(model_path=args.model, num_threads=1)
    interp.allocate_tensors()
    load_s = time.perf_counter() - t1
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 127, inp["shape"]).astype(inp["dtype"]) if inp["dtype"] != np.float32 \
        else rng.normal(0, 1, inp["shape"]).astype(np.float32)
    for _ in range(10):
        interp.set_tensor(inp["index"], x)
        interp.invoke()
    lat = []
    for _ in range(args.n):
        s = time.perf_counter()
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        interp.get_tensor(out["index"])
        lat.append(time.perf_counter() - s)
    version = getattr(module, "__version__", None)
    if version is None:
        top = importlib.import_module(args.module.split(".")[0])
        version = getattr(top, "__version__", None)
    print(json.dumps({
        "module": args.module, "available": True, "version": version,
        "import_s": import_s, "load_s": load_s,
        "invoke_s": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                     "mean": float(np.mean(lat))},
        "rss_mb_added": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
