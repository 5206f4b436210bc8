"""VAD → denoise → features → windows on generated audio."""

from __future__ import annotations

import numpy as np
import pytest
from emotiond.dsp.frontend import Frontend, SegmentEnd, SegmentStart, Window, clip_windows

from tests.fixtures_audio import pink_noise

SR = 16_000


def _run(signal: np.ndarray, chunk: int | None = None) -> list:
    fe = Frontend()
    if chunk is None:
        return fe.push(signal) + fe.flush()
    events = []
    for i in range(0, len(signal), chunk):
        events += fe.push(signal[i : i + chunk])
    return events + fe.flush()


def test_silence_and_noise_give_no_segments() -> None:
    rng = np.random.default_rng(0)
    for signal in (np.zeros(10 * SR), pink_noise(10 * SR, rng, -45), rng.normal(0, 10 ** (-50 / 20), 10 * SR)):
        assert not [e for e in _run(signal) if isinstance(e, SegmentStart)]


def test_speech_segments_lie_around_the_spoken_parts(speech_scene) -> None:
    signal, spoken = speech_scene
    ends = [e for e in _run(signal) if isinstance(e, SegmentEnd)]
    assert len(ends) == len(spoken), ends
    for seg, (t0, t1) in zip(ends, spoken, strict=True):
        start, end = seg.start_sample / SR, seg.end_sample / SR
        assert t0 - 0.35 <= start <= t0 + 0.15, (start, t0)
        assert t1 - 0.15 <= end <= t1 + 0.45, (end, t1)
        assert seg.n_windows >= 1


@pytest.mark.parametrize("chunk", [160, 592, 8000])  # 10 ms, 37 ms, 500 ms
def test_chunk_size_does_not_change_windows(speech_scene, chunk: int) -> None:
    signal, _ = speech_scene
    whole = [e for e in _run(signal) if isinstance(e, Window)]
    chunked = [e for e in _run(signal, chunk) if isinstance(e, Window)]
    assert len(whole) == len(chunked) > 0
    for a, b in zip(whole, chunked, strict=True):
        assert (a.segment, a.start_sample, a.end_sample) == (b.segment, b.start_sample, b.end_sample)
        assert float(np.max(np.abs(a.features - b.features))) <= 1e-4


def test_windows_are_normalised_and_sized(speech_scene) -> None:
    windows = clip_windows(speech_scene[0])
    assert windows
    for w in windows:
        assert w.features.shape == (100, 40)
        assert w.features.dtype == np.float32
        n = min(w.n_frames, 100)
        np.testing.assert_allclose(w.features[:n].mean(axis=0), 0.0, atol=1e-3)


def test_short_utterance_gives_one_padded_window(have_espeak) -> None:
    from tests.fixtures_audio import espeak

    word = espeak("yes")
    signal = np.concatenate([np.zeros(SR), word, np.zeros(SR)])
    signal = signal + pink_noise(len(signal), np.random.default_rng(1), -60)
    windows = clip_windows(signal)
    assert len(windows) == 1
    assert windows[0].n_frames < 100
    assert not windows[0].features[windows[0].n_frames :].any()


def _eager_windows(signal: np.ndarray) -> list[tuple[int, int, int, int, np.ndarray]]:
    """What the frontend computes, done the slow obvious way: every frame's spectrum, every non-speech
    frame taught to the gate as it comes, one utterance at a time. The frontend skips spectra of frames
    it will not need and teaches the gate lazily; this is the reference that proves it changes nothing."""
    from emotiond.dsp.denoise import SpectralGate
    from emotiond.dsp.features import FEATURES, Spectrum, fit_window, frame_signal
    from emotiond.dsp.frontend import WindowParams
    from emotiond.dsp.vad import VoiceActivitySegmenter

    cfg, w = FEATURES, WindowParams()
    vad = VoiceActivitySegmenter()
    spans = vad.push(signal) + vad.flush()
    spectrum, gate = Spectrum(), SpectralGate()
    power = spectrum.power(frame_signal(signal))
    centres = np.arange(len(power)) * cfg.hop_length + cfg.frame_length // 2
    label = np.full(len(power), -1)
    for s in spans:
        if s.speech:
            label[(centres >= s.start) & (centres < s.end)] = s.segment
    out = []
    t = 0
    while t < len(power):
        run_end = t
        while run_end < len(power) and label[run_end] == label[t]:
            run_end += 1
        if label[t] < 0:
            for i in range(t, run_end):
                gate.learn(power[i : i + 1])
        else:
            gate.begin_segment()
            mel = spectrum.log_mel(np.concatenate([gate.apply(power[t:run_end]), gate.end_segment()]))
            ends = list(range(w.window_frames, len(mel) + 1, w.hop_frames))
            if not ends and len(mel) >= w.min_frames:
                ends = [len(mel)]
            elif ends and len(mel) - ends[-1] >= w.hop_frames // 2:
                ends.append(len(mel))
            for e in ends:
                recent = mel[max(0, e - w.window_frames) : e]
                end_sample = (t + e - 1) * cfg.hop_length + cfg.frame_length
                start = end_sample - cfg.frame_length - (len(recent) - 1) * cfg.hop_length
                out.append((int(label[t]), start, end_sample, len(recent), fit_window(recent, w.window_frames)))
        t = run_end
    return out


@pytest.mark.parametrize("chunk", [None, 1600])
def test_windows_equal_an_eager_reference(speech_scene, chunk: int | None) -> None:
    signal, _ = speech_scene
    rng = np.random.default_rng(5)
    long = np.concatenate([signal, pink_noise(12 * SR, rng, -55), signal, signal[: 3 * SR]])
    expected = _eager_windows(long)
    got = [e for e in _run(long, chunk) if isinstance(e, Window)]
    assert len(got) == len(expected) > 4
    for g, (segment, start, end, n, features) in zip(got, expected, strict=True):
        assert (g.segment, g.start_sample, g.end_sample, g.n_frames) == (segment, start, end, n)
        assert float(np.max(np.abs(g.features - features))) <= 1e-5


def test_vad_pcm_conversion_is_pcm16() -> None:
    from emotiond.dsp.vad import VoiceActivitySegmenter, pcm16

    x = np.random.default_rng(2).normal(0, 0.5, 4800)  # some samples beyond ±1: clipped
    assert bytes(VoiceActivitySegmenter()._pcm16(x)) == pcm16(x)


class _FrameByFrameVad:
    """The VAD with its quiet-block shortcut turned off: every frame through the state machine."""

    @staticmethod
    def make():
        from emotiond.dsp.vad import VoiceActivitySegmenter

        class Reference(VoiceActivitySegmenter):
            def _quiet(self, n: int, spans: list) -> None:
                for _ in range(n):
                    self._step(False, spans)

        return Reference()


@pytest.mark.parametrize("chunk", [480, 1600, 4800])
def test_vad_quiet_shortcut_and_push_frames_decide_as_frame_by_frame(speech_scene, chunk: int) -> None:
    from emotiond.dsp.vad import VoiceActivitySegmenter

    signal, _ = speech_scene
    rng = np.random.default_rng(7)
    # speech, then short bursts (the ring fills again after each segment end), then quiet
    bursts = np.concatenate([np.concatenate([signal[SR * 2 : SR * 2 + 2400], np.zeros(3000)]) for _ in range(6)])
    x = np.concatenate([signal, bursts, pink_noise(2 * SR, rng, -55)])
    ref, fast, frames = _FrameByFrameVad.make(), VoiceActivitySegmenter(), VoiceActivitySegmenter()
    expected, got, via_frames = [], [], []
    for i in range(0, len(x), chunk):
        expected += ref.push(x[i : i + chunk])
        got += fast.push(x[i : i + chunk])
    whole = len(x) // frames.frame_len * frames.frame_len
    for i in range(0, whole, 3 * frames.frame_len):  # whole frames, read in place: the frontend's way
        via_frames += frames.push_frames(x[i : min(whole, i + 3 * frames.frame_len)])
    expected = _timeline(expected + ref.flush())
    assert len([s for s in expected if s[2]]) >= 3
    assert _timeline(got + fast.flush()) == expected
    assert _timeline(via_frames + frames.flush(total=len(x))) == expected


def _timeline(spans: list) -> list[tuple[int, int, bool, int]]:
    """Spans with neighbours of one label joined: the same decisions, however the pushes cut them."""
    out: list[list] = []
    for s in spans:
        assert not out or out[-1][1] == s.start, "spans must be contiguous"
        if out and (out[-1][2], out[-1][3]) == (s.speech, s.segment):
            out[-1][1] = s.end
        else:
            out.append([s.start, s.end, s.speech, s.segment])
    return [tuple(s) for s in out]


def test_vad_quiet_shortcut_matches_the_state_machine_from_every_ring() -> None:
    """Every ring the untriggered VAD can hold (any length, any verdicts), then n unvoiced frames:
    the one-step shortcut leaves the same state and decides the same spans as n single steps,
    including a start on an unvoiced frame while the ring is still filling."""
    import itertools
    from collections import deque

    from emotiond.dsp.vad import VoiceActivitySegmenter

    starts = 0
    for length in range(6):
        for ring in itertools.product([False, True], repeat=length):
            for n in range(1, 8):
                fast, ref = VoiceActivitySegmenter(), _FrameByFrameVad.make()
                for v in (fast, ref):
                    v._frames_seen = 40
                    v._decided = (40 - length) * v.frame_len
                    v._ring = deque(ring, maxlen=v._start_n)
                got, expected = [], []
                fast._quiet(n, got)
                ref._quiet(n, expected)
                assert got == expected, (ring, n)
                state = ("_frames_seen", "_decided", "_triggered", "_segment_id", "_segment_start", "_last_voiced_end")
                assert [getattr(fast, a) for a in state] == [getattr(ref, a) for a in state], (ring, n)
                assert list(fast._ring) == list(ref._ring)
                starts += ref._triggered
    assert starts > 0  # some of them start speech on an unvoiced frame


@pytest.mark.parametrize(("chunk", "max_segment_s"), [(1600, 12.0), (592, 12.0), (1600, 0.8)])
def test_quiet_samples_never_promise_a_push_without_events_that_brings_one(
        speech_scene, chunk: int, max_segment_s: float) -> None:
    """Whatever ``quiet_samples`` says after a push, the pushes that stay within it bring no window or segment end.

    The daemon takes that much audio in one piece inside speech, so a wrong promise would hold an event
    back by a block. Run on speech (and with segments cut short by ``max_segment_s``), in 100 ms and 37 ms
    pieces; it must also promise something often enough to matter.
    """
    from emotiond.dsp.vad import VadParams

    signal, _ = speech_scene
    signal = np.concatenate([signal, signal[: 4 * SR]])
    fe = Frontend(vad=VadParams(max_segment_s=max_segment_s))
    pushes = []  # (samples before the push, promise before it, events it brought)
    for i in range(0, len(signal), chunk):
        promise = fe.quiet_samples()
        events = [e for e in fe.push(signal[i : i + chunk]) if isinstance(e, Window | SegmentEnd)]
        pushes.append((i, promise, bool(events)))
    promised_pushes = 0
    for k, (at, promise, _) in enumerate(pushes):
        for later_at, _, brought in pushes[k:]:
            if later_at + chunk - at > promise:
                break
            assert not brought, f"push at {later_at} brought an event; {promise} samples were promised at {at}"
            promised_pushes += 1
    assert sum(brought for _, _, brought in pushes) >= 6
    assert promised_pushes >= 10


def test_quiet_samples_in_a_quiet_room_cover_the_idle_piece() -> None:
    fe = Frontend()
    assert fe.quiet_samples() >= 4 * 1600  # nothing heard yet: a segment cannot start and end within 0.5 s
    fe.push(pink_noise(2 * SR, np.random.default_rng(0), -50))
    assert fe.idle and fe.quiet_samples() >= 4 * 1600


def _step_copy(vad, voiced: bool):
    """A copy of ``vad`` one frame on; and whether that frame ended a segment."""
    import copy
    from collections import deque

    c = copy.copy(vad)
    c._ring = deque(vad._ring, maxlen=vad._ring.maxlen)
    was = c._triggered
    c._step(voiced, [])
    return c, was and not c._triggered


def _earliest_end(vad, limit: int) -> int:
    """Fewest further frames after which ``vad`` has ended a segment, searched over every verdict sequence.

    Inside speech only unvoiced verdicts are followed: a voiced one never brings the end sooner (it only
    adds a voiced frame to the hangover ring); ``test_vad_frames_before_end…`` samples that too.
    """
    level = [vad]
    for depth in range(1, limit + 1):
        nxt = []
        for v in level:
            for voiced in ((False,) if v._triggered else (False, True)):
                c, ended = _step_copy(v, voiced)
                if ended:
                    return depth
                nxt.append(c)
        level = nxt
    return limit + 1


def test_vad_frames_before_end_is_never_later_than_the_earliest_possible_end() -> None:
    """From every untriggered ring and from rings inside speech, no verdicts end a segment sooner than promised."""
    import itertools
    from collections import deque

    from emotiond.dsp.vad import VadParams, VoiceActivitySegmenter

    def vad_with(ring: tuple[bool, ...], triggered: bool, params: VadParams = VadParams()) -> VoiceActivitySegmenter:
        v = VoiceActivitySegmenter(params)
        v._frames_seen = 40
        v._decided = (40 - len(ring)) * v.frame_len
        v._triggered = triggered
        v._segment_start = v._decided
        v._ring = deque(ring, maxlen=v._end_n if triggered else v._start_n)
        return v

    promised = []
    for length in range(6):
        for ring in itertools.product([False, True], repeat=length):
            v = vad_with(ring, False)
            promised.append(v.frames_before_end())
            assert _earliest_end(v, limit=promised[-1] - 1) >= promised[-1], ring  # no end found sooner
    assert max(promised) == 17  # a quiet ring: 510 ms at least, so a 500 ms piece holds no end
    assert min(promised) == 13  # two voiced frames already in the ring: 390 ms
    rng = np.random.default_rng(1)
    for _ in range(12):
        ring = tuple(bool(b) for b in rng.integers(0, 2, int(rng.integers(5, 16))))
        v = vad_with(ring, True)
        assert v.frames_before_end() == _earliest_end(v, limit=16), ring
        for _ in range(20):  # any verdicts at all: never sooner
            c, ended, n = v, False, 0
            while not ended:
                c, ended = _step_copy(c, bool(rng.integers(0, 2)) if n < 40 else False)
                n += 1
            assert n >= v.frames_before_end(), ring
    short = vad_with((True,) * 5, True, VadParams(max_segment_s=0.3))
    assert short.frames_before_end() == _earliest_end(short, limit=16)
