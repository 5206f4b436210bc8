"""The one definition of emotiond's acoustic features.

Training, conversion, offline classification and the live daemon all call this
module, so a model never sees features computed in a way the daemon does not
reproduce. Frames are 25 ms long every 10 ms, with no centring or padding:
frame ``t`` covers samples ``[t * hop, t * hop + frame_length)``. That choice
makes streaming exact: a frame is computed as soon as its last sample arrives,
and feeding the same audio in any chunk size yields the same frames.

librosa is deliberately not imported here: its first feature call compiles
numba kernels for ~25 s and keeps ~300 MB resident, which a Raspberry Pi
daemon cannot afford. The Slaney mel filter bank below is a few lines of
numpy; ``tests/test_features.py`` checks it against ``librosa.filters.mel``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class FeatureConfig:
    """Parameters that a model's sidecar must match exactly."""

    sample_rate: int = SAMPLE_RATE
    frame_length: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    n_fft: int = 512
    n_mels: int = 40
    fmin: float = 50.0
    fmax: float = 7_600.0
    # Below 16-bit quantisation noise in every band, so quiet speech (RAVDESS
    # sits near -45 dBFS) keeps its spectral detail instead of hitting the floor.
    log_floor: float = 1e-10
    kind: str = "log_mel"
    window: str = "hann"
    # Periodicity bands appended after the mel bands (0: none). 25 ms Hann frames
    # cannot resolve the harmonics of a low voice, so the mel bands barely show
    # pitch; these show how periodic each frame is at lags of F0 pitch_fmin..pitch_fmax.
    pitch_bands: int = 0
    pitch_fmin: float = 75.0
    pitch_fmax: float = 400.0

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def n_features(self) -> int:
        """Values per frame: the mel bands, then the periodicity bands."""
        return self.n_mels + self.pitch_bands

    def to_dict(self) -> dict[str, Any]:
        """The sidecar's ``features``; without periodicity bands, exactly what models before them carry."""
        d = asdict(self)
        if not self.pitch_bands:
            for k in PITCH_KEYS:
                del d[k]
        return d


FEATURES = FeatureConfig()
PITCH_KEYS = ("pitch_bands", "pitch_fmin", "pitch_fmax")
# What a model may choose; everything else in FeatureConfig is fixed by dsp.
TUNABLE_FEATURES = frozenset({"n_mels", "fmin", "fmax", *PITCH_KEYS})


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa's default)."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = hz / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-9) / min_log_hz) / logstep, mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)


def mel_band_edges_hz(cfg: FeatureConfig = FEATURES) -> np.ndarray:
    """The ``n_mels + 2`` corner frequencies of the triangles; band ``j`` peaks at ``edges[j + 1]``."""
    return _mel_to_hz(np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(cfg.fmax), cfg.n_mels + 2))


def mel_filterbank(cfg: FeatureConfig = FEATURES) -> np.ndarray:
    """Slaney-normalised triangular filters, shape ``(n_bins, n_mels)``."""
    fft_freqs = np.linspace(0.0, cfg.sample_rate / 2, cfg.n_bins)
    hz_points = mel_band_edges_hz(cfg)
    fdiff = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]
    return np.ascontiguousarray(weights.T)


def analysis_window(cfg: FeatureConfig = FEATURES) -> np.ndarray:
    """Periodic Hann window of ``frame_length`` samples (scipy.signal.get_window('hann'))."""
    n = np.arange(cfg.frame_length)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / cfg.frame_length)


def frame_count(n_samples: int, cfg: FeatureConfig = FEATURES) -> int:
    if n_samples < cfg.frame_length:
        return 0
    return 1 + (n_samples - cfg.frame_length) // cfg.hop_length


def frame_signal(signal: np.ndarray, cfg: FeatureConfig = FEATURES) -> np.ndarray:
    """All complete frames of ``signal`` as a read-only strided view ``(n_frames, frame_length)``."""
    n = frame_count(len(signal), cfg)
    if n == 0:
        return np.zeros((0, cfg.frame_length), dtype=np.float64)
    return np.lib.stride_tricks.sliding_window_view(signal, cfg.frame_length)[:: cfg.hop_length][:n]


def frames_at(buf: np.ndarray, first_sample: int, n: int, cfg: FeatureConfig = FEATURES) -> np.ndarray:
    """``n`` frames of ``buf`` starting at ``first_sample``, as a read-only strided view ``(n, frame_length)``.

    One ``as_strided`` call: cheaper per block than ``sliding_window_view``, which the
    live daemon would otherwise pay ten times a second.
    """
    if n <= 0:
        return np.zeros((0, cfg.frame_length), dtype=buf.dtype)
    end = first_sample + (n - 1) * cfg.hop_length + cfg.frame_length
    if first_sample < 0 or end > len(buf):
        raise ValueError(f"frames {first_sample}..{end} outside a buffer of {len(buf)} samples")
    step = buf.strides[0]
    return np.lib.stride_tricks.as_strided(buf[first_sample:], shape=(n, cfg.frame_length),
                                           strides=(cfg.hop_length * step, step), writeable=False)


class Spectrum:
    """Frames → power spectra → log-mel, with the constant tables built once."""

    def __init__(self, cfg: FeatureConfig = FEATURES) -> None:
        self.cfg = cfg
        self.window = analysis_window(cfg)
        self.mel_basis = mel_filterbank(cfg)
        # The filter bank is sparse (every FFT bin feeds at most two filters): each
        # filter's non-zero bins, laid end to end, and where each filter starts.
        cols, weights, starts = [], [], []
        for k in range(cfg.n_mels):
            nz = np.flatnonzero(self.mel_basis[:, k])
            if len(nz) == 0:  # an empty filter (odd configs) sums one zero-weighted bin
                nz = np.zeros(1, dtype=np.intp)
            starts.append(sum(len(c) for c in cols))
            cols.append(nz)
            weights.append(self.mel_basis[nz, k])
        self._mel_cols = np.concatenate(cols)
        self._mel_weights = np.concatenate(weights)
        self._mel_starts = np.asarray(starts, dtype=np.intp)
        if cfg.pitch_bands:
            self._lags, self._lag_gain, self._lag_starts = _lag_bands(cfg, self.window)

    def power(self, frames: np.ndarray) -> np.ndarray:
        """Power spectrum ``|rfft(frame * window)|**2``, shape ``(n_frames, n_bins)``."""
        spec = np.fft.rfft(frames * self.window, n=self.cfg.n_fft, axis=-1)
        return spec.real**2 + spec.imag**2

    def log_mel(self, power: np.ndarray) -> np.ndarray:
        """Natural-log mel energies, float32 ``(n_frames, n_mels)``.

        Each filter is a sequential sum over its own non-zero bins
        (``np.add.reduceat``), so a frame's result never depends on how many
        frames are batched with it (a BLAS matrix product may block a batch
        differently for different sizes), and a whole block costs a handful of
        numpy calls instead of a few per frame.
        """
        if power.shape[0] == 0:
            return np.zeros((0, self.cfg.n_mels), dtype=np.float32)
        terms = power[:, self._mel_cols] * self._mel_weights
        mel = np.add.reduceat(terms, self._mel_starts, axis=1)
        mel += self.cfg.log_floor
        return np.log(mel).astype(np.float32)

    def periodicity(self, power: np.ndarray) -> np.ndarray:
        """Per periodicity band, the highest normalised autocorrelation of the frame, float32 in [-1, 1].

        The autocorrelation is the inverse FFT of the power spectrum the mel bands
        use (so the denoise stage cleans both alike), divided by the Hann window's
        own autocorrelation at each lag (Boersma's correction) and by the frame's
        energy. Each band spans an equal share of pitch_fmin..pitch_fmax in log
        frequency, so a voice moving up a few semitones moves up a band.
        """
        if power.shape[0] == 0:
            return np.zeros((0, self.cfg.pitch_bands), dtype=np.float32)
        r = np.fft.irfft(power, n=self.cfg.n_fft, axis=-1)
        energy = np.maximum(r[:, :1], 1e-20)
        nr = r[:, self._lags] * self._lag_gain / energy
        return np.clip(np.maximum.reduceat(nr, self._lag_starts, axis=1), -1.0, 1.0).astype(np.float32)

    def features(self, power: np.ndarray) -> np.ndarray:
        """What a model sees per frame: log-mel, then the periodicity bands when the config has them."""
        mel = self.log_mel(power)
        if not self.cfg.pitch_bands:
            return mel
        return np.concatenate([mel, self.periodicity(power)], axis=1)


def _lag_bands(cfg: FeatureConfig, window: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lags of F0 pitch_fmax..pitch_fmin, their window correction, and where each band starts among them."""
    lo = int(np.ceil(cfg.sample_rate / cfg.pitch_fmax))
    hi = int(np.floor(cfg.sample_rate / cfg.pitch_fmin))
    lags = np.arange(lo, hi + 1)
    edges = cfg.sample_rate / np.geomspace(cfg.pitch_fmax, cfg.pitch_fmin, cfg.pitch_bands + 1)
    starts = np.searchsorted(lags, edges[:-1], side="left")
    if len(np.unique(starts)) != cfg.pitch_bands:
        raise ValueError(f"pitch_bands={cfg.pitch_bands}: more bands than lags in {cfg.pitch_fmin}-{cfg.pitch_fmax} Hz")
    win_ac = np.correlate(window, window, mode="full")[len(window) - 1 :]
    return lags, win_ac[0] / win_ac[lags], starts.astype(np.intp)


def feature_config(values: Mapping[str, Any]) -> FeatureConfig:
    """A model's ``features`` as the front end will compute them; ``ValueError`` names what it cannot.

    Only the mel bands (count and range) and the periodicity bands may differ from ``dsp.features.FEATURES``:
    sample rate, frame and hop are assumed throughout (VAD frames, the adapt
    stage's horizon, the windows' timing), and ``kind``/``window`` name the
    only transform there is.
    """
    if not isinstance(values, Mapping):
        raise ValueError(f"features: expected an object, got {type(values).__name__}")
    names = {f.name for f in fields(FeatureConfig)}
    if "pitch_bands" not in values:  # written by models without periodicity bands (FeatureConfig.to_dict)
        names -= set(PITCH_KEYS)
    if set(values) != names:
        odd = sorted(set(values) ^ names)
        raise ValueError(f"features: keys {', '.join(odd)} missing or unknown")
    ours = FEATURES.to_dict()
    fixed = sorted(k for k in names - TUNABLE_FEATURES if values[k] != ours[k])
    if fixed:
        raise ValueError("features: " + ", ".join(f"{k}={values[k]!r} (dsp has {ours[k]!r})" for k in fixed))
    cfg = FeatureConfig(**{k: values[k] for k in names})
    if not (isinstance(cfg.n_mels, int) and 8 <= cfg.n_mels <= 128 and 0 <= cfg.fmin < cfg.fmax <= cfg.sample_rate / 2):
        raise ValueError(f"features: n_mels={cfg.n_mels!r}, fmin={cfg.fmin!r}, fmax={cfg.fmax!r} out of range")
    pitch_ok = isinstance(cfg.pitch_bands, int) and 0 <= cfg.pitch_bands <= 32
    lags_fit = 50 <= cfg.pitch_fmin < cfg.pitch_fmax <= 1000 and cfg.sample_rate / cfg.pitch_fmin < cfg.n_fft / 2
    if not (pitch_ok and lags_fit):
        raise ValueError(
            f"features: pitch_bands={cfg.pitch_bands!r}, pitch_fmin={cfg.pitch_fmin!r}, "
            f"pitch_fmax={cfg.pitch_fmax!r} out of range"
        )
    if cfg.pitch_bands:
        Spectrum(cfg)  # a band without a lag raises ValueError naming it
    return cfg



def offline_log_mel(signal: np.ndarray, cfg: FeatureConfig = FEATURES) -> np.ndarray:
    """Log-mel frames of a whole 16 kHz mono signal (no VAD, no denoising)."""
    spectrum = Spectrum(cfg)
    return spectrum.log_mel(spectrum.power(frame_signal(np.asarray(signal, np.float64), cfg)))


class StreamingFramer:
    """Turns audio chunks of any size into complete analysis frames.

    Keeps only the ``frame_length - hop_length`` samples of overlap between
    calls, so memory is constant however long the stream runs.
    """

    def __init__(self, cfg: FeatureConfig = FEATURES) -> None:
        self.cfg = cfg
        self._tail = np.zeros(0, dtype=np.float64)
        self.frames_emitted = 0

    def push(self, chunk: np.ndarray) -> np.ndarray:
        buf = np.concatenate([self._tail, np.asarray(chunk, dtype=np.float64)])
        frames = frame_signal(buf, self.cfg)
        n = frames.shape[0]
        self._tail = buf[n * self.cfg.hop_length :].copy()
        self.frames_emitted += n
        return np.array(frames)  # copy: the view would pin ``buf``

    def reset(self) -> None:
        self._tail = np.zeros(0, dtype=np.float64)
        self.frames_emitted = 0


def normalise_window(window: np.ndarray) -> np.ndarray:
    """Subtract each mel band's mean over the window.

    A microphone's gain and a room's colouration are (nearly) constant offsets
    per band in the log domain, so removing the per-band mean cancels them;
    on the training corpora this alone absorbed the 23 dB spread of speech
    levels (see shared/data/README.md).
    """
    return (window - window.mean(axis=0, keepdims=True)).astype(np.float32)


def fit_window(frames: np.ndarray, window_frames: int) -> np.ndarray:
    """Normalise a run of speech frames and make it exactly ``window_frames`` long.

    Longer runs keep their most recent frames. Shorter ones are normalised on
    the frames they have and padded with zeros, i.e. with each band's mean, so
    padding adds no energy pattern of its own.
    """
    frames = frames[-window_frames:]
    out = np.zeros((window_frames, frames.shape[1]), dtype=np.float32)
    if frames.shape[0]:
        out[: frames.shape[0]] = normalise_window(frames)
    return out
