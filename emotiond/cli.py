"""The ``emotiond`` command. Subcommands import their modules lazily, so ``run``
never loads TensorFlow or librosa and starts in well under a second."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
from pathlib import Path

from . import __version__, exitcodes
from .usage import Parser, usage_exit_code

log = logging.getLogger("emotiond")


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="config file (default: /etc/emotiond/config.yaml if present)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one setting (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="emotiond", description="Speech emotion recognition daemon (MQTT).")
    parser.add_argument("--version", action="version", version=f"emotiond {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon (microphone by default)")
    _config_args(run)
    run.add_argument("--input", help="audio file, or '-' for 16-bit PCM on stdin (source.input)")
    run.add_argument("--fast", action="store_true", help="process file input as fast as possible")
    run.add_argument("--demo", action="store_true",
                     help="play the bundled demo recording, print events, publish to a broker (starting one if needed)")
    run.add_argument("--stdout", action="store_true", help="also print events as JSON lines (stdout.enabled)")
    run.add_argument("--debug", action="store_true", help="debug logging")

    classify = sub.add_parser("classify", help="classify audio files offline")
    _config_args(classify)
    classify.add_argument("files", nargs="+", type=Path)
    classify.add_argument("--json", action="store_true", help="one JSON object per file")

    devices = sub.add_parser("devices", help="list audio input devices")
    _config_args(devices)
    sample = sub.add_parser(
        "sample-events",
        help="publish a confident example event of each emotion through the real sinks (test a flow without speaking)",
    )
    _config_args(sample)
    sample.add_argument("--confidence", type=float, default=0.9, help="confidence of each example (default 0.9)")
    sample.add_argument("--interval", type=float, default=0.5, metavar="S", help="seconds between examples")

    check = sub.add_parser("check-config", help="validate the configuration and print it (secrets masked)")
    _config_args(check)

    for name, help_ in (("train", "train a model (needs the [train] extra); see emotiond train --help"),
                        ("eval", "score a labelled manifest; see emotiond eval --help"),
                        ("calibrate", "measure the calibrate stage's reference; see emotiond calibrate --help"),
                        ("monitor", "live view of a daemon's MQTT topics; see emotiond monitor --help")):
        sub.add_parser(name, help=help_, add_help=False)
    return parser


def _settings(args: argparse.Namespace, extra: list[str] | None = None):  # type: ignore[no-untyped-def]
    from .daemon.config import load_settings

    return load_settings(args.config, [*(extra or []), *args.overrides])


def cmd_run(args: argparse.Namespace) -> int:
    from .daemon.demo import DEMO_AUDIO, broker_answers, private_broker

    if args.demo and args.input is not None:
        print("emotiond run: --demo plays the bundled recording; use --input FILE or --demo, not both",
              file=sys.stderr)
        return exitcodes.USAGE
    extra = []
    if args.input is not None:
        extra.append(f"source.input={args.input}")
    if args.demo:
        extra.append(f"source.input={DEMO_AUDIO}")
    settings = _settings(args, extra)
    from .daemon.logsetup import configure_logging

    configure_logging(settings, args.debug)
    if not args.demo:
        return _run_daemon(args, extra, force_stdout=args.stdout)
    if settings.mqtt.enabled and broker_answers(settings.mqtt.host, settings.mqtt.port):
        log.info("demo: publishing to the broker at %s:%d", settings.mqtt.host, settings.mqtt.port)
        return _run_daemon(args, extra, force_stdout=True)
    with private_broker() as port:
        if port is None:
            log.warning("demo: no broker answers and mosquitto is not installed; printing events only")
            extra.append("mqtt.enabled=false")
        else:
            extra += ["mqtt.host=127.0.0.1", f"mqtt.port={port}"]
            topic = f"{settings.mqtt.base_topic}/{settings.mqtt.device()}/#"
            log.info("demo: started a private broker; watch it with: mosquitto_sub -p %d -v -t '%s'", port, topic)
        return _run_daemon(args, extra, force_stdout=True)


def _run_daemon(args: argparse.Namespace, extra: list[str], force_stdout: bool) -> int:
    """Start the daemon; ``extra`` overrides stay in force across SIGHUP reloads."""
    from .daemon.service import Daemon

    overrides = (*extra, *args.overrides)
    settings = _settings(args, extra)
    daemon = Daemon(settings, args.config, overrides, fast=args.fast, force_stdout=force_stdout)
    daemon.install_signal_handlers()
    daemon.start()
    # Everything alive now (imports, model, pipeline) lives as long as the process. Frozen,
    # the cyclic garbage collector no longer walks it, in a full collection or at exit
    # (≈ 0.1 s of CPU at every stop; docs/performance.md, third round). The main loop's
    # own short-lived objects are collected as before.
    gc.freeze()
    return daemon.run()


def cmd_classify(args: argparse.Namespace) -> int:
    from .daemon.classify import classify_main

    return classify_main(_settings(args), args.files, args.json)


def cmd_devices(args: argparse.Namespace) -> int:
    from .daemon.microphone import list_input_devices

    _settings(args)  # --config/--set are validated like everywhere else
    devices = list_input_devices()
    if not devices:
        print("emotiond: no audio input devices found (is a microphone plugged in, and is this user in the "
              "'audio' group?)", file=sys.stderr)
        return exitcodes.NOINPUT
    from rich.console import Console
    from rich.table import Table

    table = Table("index", "name", "channels", "default rate")
    for d in devices:
        table.add_row(str(d.index), d.name, str(d.channels), f"{d.default_rate} Hz")
    Console().print(table)
    return exitcodes.OK


def cmd_check_config(args: argparse.Namespace) -> int:
    from .daemon.config import redacted

    settings = _settings(args)
    print(json.dumps(redacted(settings), indent=2))
    print(f"configuration OK ({args.config or 'defaults'})", file=sys.stderr)
    return exitcodes.OK


def cmd_sample_events(args: argparse.Namespace) -> int:
    from .daemon.samples import sample_events_main

    return sample_events_main(_settings(args), args.confidence, args.interval)


def _train_data_missing(rest: list[str]) -> str | None:
    """Why ``train`` cannot start for lack of data, checked before it creates ``--out/train.log``."""
    from .models.training.data import data_dir

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--data")
    known, _ = pre.parse_known_args(rest)
    if "-h" in rest or "--help" in rest:
        return None
    try:
        data_dir(known.data)
    except SystemExit as exc:
        return str(exc)
    return None


def cmd_delegate(args: argparse.Namespace) -> int:
    """``train``/``eval``/``monitor`` parse their own options; a usage error still exits 64."""
    rest = list(args.rest)
    try:
        if args.command == "train":
            try:
                from .models.training.train import train_main
            except ImportError as exc:
                print(f"emotiond train: {exc}; install the training extra: pip install 'emotiond[train]'",
                      file=sys.stderr)
                return exitcodes.UNAVAILABLE
            missing = _train_data_missing(rest)
            if missing:
                print(f"emotiond train: {missing}", file=sys.stderr)
                return exitcodes.NOINPUT
            return int(train_main(rest) or 0)
        if args.command == "eval":
            from .daemon.evaluate import eval_main

            return eval_main(rest)
        if args.command == "calibrate":
            from .daemon.calibration import calibrate_main

            return calibrate_main(rest)
        from .daemon.monitor import monitor_main

        return monitor_main(rest)
    except SystemExit as exc:
        if isinstance(exc.code, str):  # a delegated command's own one-line error
            print(f"emotiond {args.command}: {exc.code}", file=sys.stderr)
        return usage_exit_code(exc.code)


COMMANDS = {
    "run": cmd_run,
    "classify": cmd_classify,
    "devices": cmd_devices,
    "check-config": cmd_check_config,
    "sample-events": cmd_sample_events,
    "train": cmd_delegate,
    "eval": cmd_delegate,
    "calibrate": cmd_delegate,
    "monitor": cmd_delegate,
}


DELEGATED = ("train", "eval", "calibrate", "monitor")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if argv and argv[0] in DELEGATED:  # these parse their own options (incl. --help)
        args = argparse.Namespace(command=argv[0], rest=argv[1:])
    else:
        args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .daemon.assembly import StartupError
    from .daemon.config import ConfigError
    from .dsp.audio import AudioInputError
    from .models.runtime import ModelError

    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"emotiond: config error: {exc}", file=sys.stderr)
        return exitcodes.CONFIG
    except (StartupError, AudioInputError, ModelError) as exc:
        print(f"emotiond: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", exitcodes.CONFIG)  # a model that does not fit is a config problem
    except (KeyboardInterrupt, BrokenPipeError):
        return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
