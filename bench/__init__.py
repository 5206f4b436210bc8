"""Benchmarks for emotiond: speed and memory (``python -m bench``), conversation replay (``python -m bench.replay``).

Nothing here is imported by the daemon. Audio is generated at run time
(espeak-ng speech over noise) or read from a manifest / data folder given by
``--data`` or ``EMOTIOND_DATA``; no audio is ever written into the repository.
"""
