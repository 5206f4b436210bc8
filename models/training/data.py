"""Corpus loading, the shipped label set and the speaker-independent split.

Everything is driven by each corpus's ``labels.csv``
(``stem,emotion,speaker,gender,extra,duration_s``; audio is ``<stem>.opus`` next
to it). The data folder is always passed in (``--data`` or ``EMOTIOND_DATA``);
no path to the data is written in code.
"""

from __future__ import annotations

import csv
import os
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: The label set of the shipped model, in output order.
LABELS: tuple[str, ...] = ("angry", "disgust", "fearful", "happy", "neutral", "sad", "surprised")

#: Corpus label → shipped label; ``None`` drops the clip. Labels not listed are
#: kept only if they are already in ``LABELS``. Justified in docs/model-card.md:
#: RAVDESS/TurEV-DB "calm" is the low-arousal, no-salient-emotion state the daemon
#: must call neutral in a living room; EMO-DB "boredom" is a distinct (low
#: arousal, negative) emotion with no counterpart elsewhere, so it is dropped
#: rather than taught as neutral.
LABEL_MAP: dict[str, str | None] = {"calm": "neutral", "boredom": None}

#: Corpora with categorical labels, trained on the seven classes.
CORPORA: tuple[str, ...] = ("ravdess", "tess", "savee", "emodb", "turevdb", "ased", "nemo")
#: BAVED labels the *level* of emotion (low / neutral / high), not a category:
#: it trains the auxiliary level head (``--aux-levels``) or the emotion head
#: through the classes each level allows (``--level-sets``), never a category.
LEVEL_CORPORA: tuple[str, ...] = ("baved",)
LEVELS: tuple[str, ...] = ("low", "neutral", "high")
#: The emotion classes each BAVED level allows (its README: ``low`` = a tired or
#: bored tone, ``high`` = happy, angry, sad or surprised, ``neutral`` a real
#: neutral). ``--level-sets`` teaches the emotion head that a level's clip is one
#: of these, without guessing which: a set-valued target, not an invented label.
LEVEL_CLASSES: dict[str, tuple[str, ...]] = {
    "low": ("neutral", "sad"),
    "neutral": ("neutral",),
    "high": ("angry", "happy", "sad", "surprised"),
}
ALL_CORPORA: tuple[str, ...] = CORPORA + LEVEL_CORPORA
DATA_ENV = "EMOTIOND_DATA"
#: Audio next to ``labels.csv``: the shared corpora are Opus; a corpus of one's own may be WAV, FLAC or Ogg.
AUDIO_SUFFIXES: tuple[str, ...] = (".opus", ".wav", ".flac", ".ogg")
#: The columns a ``labels.csv`` must have; ``gender``, ``extra`` and ``duration_s`` are optional.
REQUIRED_COLUMNS: tuple[str, ...] = ("stem", "emotion", "speaker")


class CorpusError(ValueError):
    """A corpus folder that cannot be trained on; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Clip:
    corpus: str
    stem: str
    path: Path
    label: str  # mapped, in LABELS
    orig_label: str
    speaker: str  # globally unique: "<corpus>:<speaker>"
    gender: str
    duration_s: float


def data_dir(arg: str | os.PathLike[str] | None = None) -> Path:
    """The data folder from ``--data`` or ``$EMOTIOND_DATA``; an error if neither."""
    value = arg if arg is not None else os.environ.get(DATA_ENV)
    if not value:
        raise SystemExit(f"no data folder: pass --data DIR or set {DATA_ENV}")
    path = Path(value)
    if not path.is_dir():
        raise SystemExit(f"data folder {path} does not exist")
    return path


def map_label(label: str, mapping: Mapping[str, str | None] | None = LABEL_MAP) -> str | None:
    """The shipped label for a corpus label; ``mapping=None`` keeps every label as it is."""
    label = label.strip().lower()
    if mapping is None:
        return label
    if label in mapping:
        return mapping[label]
    return label if label in LABELS else None


def _audio_path(folder: Path, stem: str) -> Path | None:
    for suffix in AUDIO_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def _rows(table: Path) -> list[dict[str, str]]:
    with table.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise CorpusError(f"{table}: no column {', '.join(missing)} (needs {','.join(REQUIRED_COLUMNS)})")
        return list(reader)


def load_corpus(root: Path, corpus: str, mapping: Mapping[str, str | None] | None = LABEL_MAP) -> list[Clip]:
    """All usable clips of one corpus folder, in ``labels.csv`` order.

    A row whose audio is missing is an error, not a silent gap: a corpus of
    one's own is where that happens, and a model quietly trained on part of it
    would be reported as trained on all of it.
    """
    folder = Path(root) / corpus
    table = folder / "labels.csv"
    if not table.is_file():
        raise FileNotFoundError(f"{table}: corpus {corpus!r} has no labels.csv")
    clips = []
    for line, row in enumerate(_rows(table), start=2):
        label = map_label(row["emotion"], mapping)
        if label is None:
            continue
        path = _audio_path(folder, row["stem"])
        if path is None:
            raise CorpusError(f"{table}:{line}: no audio for stem {row['stem']!r} ({'/'.join(AUDIO_SUFFIXES)})")
        clips.append(
            Clip(
                corpus=corpus,
                stem=row["stem"],
                path=path,
                label=label,
                orig_label=row["emotion"],
                speaker=f"{corpus}:{row['speaker']}",
                gender=row.get("gender", "?") or "?",
                duration_s=float(row.get("duration_s") or 0.0),
            )
        )
    return clips


def dropped_labels(root: Path, corpus: str, mapping: Mapping[str, str | None] = LABEL_MAP) -> Counter[str]:
    """How many clips of each corpus label the label map drops (for a corpus of one's own: say what is not used)."""
    rows = _rows(Path(root) / corpus / "labels.csv")
    return Counter(r["emotion"].strip().lower() for r in rows if map_label(r["emotion"], mapping) is None)


def load_corpora(root: Path, corpora: Iterable[str] = CORPORA) -> list[Clip]:
    out: list[Clip] = []
    for c in corpora:
        out.extend(load_corpus(root, c))
    return out


def load_noise(root: Path) -> list[tuple[Path, str, str]]:
    """``(path, class, fold)`` of the noise recordings; empty if there is no noise folder."""
    table = Path(root) / "noise" / "labels.csv"
    if not table.is_file():
        return []
    with table.open(newline="") as fh:
        return [(table.parent / f"{r['stem']}.opus", r["class"], r.get("fold", "")) for r in csv.DictReader(fh)]


# -- the split -----------------------------------------------------------------

#: Fixed held-out speakers per corpus (corpus-local ids). Chosen before any
#: training: RAVDESS 2 m + 2 f per side, EMO-DB 1 m + 1 f per side, TESS's
#: younger speaker as its test, TurEV-DB 2 test / 1 val, SAVEE one each.
DEFAULT_HELD_OUT: dict[str, dict[str, tuple[str, ...]]] = {
    "ravdess": {"test": ("A03", "A04", "A17", "A18"), "val": ("A07", "A08", "A13", "A14")},
    "emodb": {"test": ("03", "08"), "val": ("10", "13")},
    "savee": {"test": ("JK",), "val": ("JE",)},
    "tess": {"test": ("YAF",), "val": ()},
    "turevdb": {"test": ("1234", "6783"), "val": ("1984",)},
}


@dataclass
class Split:
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)

    def part_of(self, speaker: str) -> str | None:
        for name in ("train", "val", "test"):
            if speaker in getattr(self, name):
                return name
        return None

    def to_dict(self) -> dict[str, list[str]]:
        return {"train": sorted(self.train), "val": sorted(self.val), "test": sorted(self.test)}


def speaker_split(
    clips: Sequence[Clip],
    held_out: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Split:
    """Assign every speaker to exactly one of train/val/test.

    Corpora named in ``held_out`` use those speakers; the others get a seeded
    random choice of about ``test_fraction``/``val_fraction`` of their speakers
    (at least one test speaker when a corpus has two or more).
    """
    held_out = DEFAULT_HELD_OUT if held_out is None else held_out
    by_corpus: dict[str, list[str]] = {}
    for c in clips:
        spk = by_corpus.setdefault(c.corpus, [])
        if c.speaker not in spk:
            spk.append(c.speaker)
    split = Split()
    rng = random.Random(seed)
    for corpus, speakers in sorted(by_corpus.items()):
        speakers = sorted(speakers)
        if corpus in held_out:
            test = {f"{corpus}:{s}" for s in held_out[corpus].get("test", ())} & set(speakers)
            val = ({f"{corpus}:{s}" for s in held_out[corpus].get("val", ())} & set(speakers)) - test
        else:
            order = speakers[:]
            # a corpus added with --add-corpus draws from its own generator: sorted in among the built-in ones
            # it would otherwise move their split (ASED's and nEMO's test speakers) under the shipped model
            (rng if corpus in ALL_CORPORA else random.Random(f"{seed}:{corpus}")).shuffle(order)
            n_test = max(1, round(len(order) * test_fraction)) if len(order) >= 2 else 0
            n_val = round(len(order) * val_fraction) if len(order) - n_test >= 2 else 0
            test, val = set(order[:n_test]), set(order[n_test : n_test + n_val])
        for s in speakers:
            (split.test if s in test else split.val if s in val else split.train).append(s)
    return split


def select(clips: Iterable[Clip], speakers: Iterable[str]) -> list[Clip]:
    keep = set(speakers)
    return [c for c in clips if c.speaker in keep]
