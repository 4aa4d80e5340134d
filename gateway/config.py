"""The one TOML configuration file, validated at start-up.

Every section is a frozen dataclass whose fields carry their own limits and a hint for the
fix, so that an unknown key, a wrong type or an out-of-range value stops the program with a
message naming the key, the value and what to write instead.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A configuration problem, phrased for the person who edits the file."""


def _spec(
    default: Any,
    help: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] | None = None,
    check: typing.Callable[[Any], str | None] | None = None,
    path: bool = False,
) -> Any:
    # path=True: a file path that load_config makes relative to the configuration file
    meta = {"help": help, "lo": lo, "hi": hi, "choices": choices, "check": check, "path": path}
    if isinstance(default, list | tuple | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _check_networks(values: list[str]) -> str | None:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"{value!r} is not an address range; write it like '10.20.0.0/16' or 'fd00::/8'"
    return None


def _check_regex(value: str) -> str | None:
    try:
        re.compile(value)
    except re.error as exc:
        return f"{value!r} is not a valid regular expression ({exc})"
    return None


def _check_header_name(value: str) -> str | None:
    if value and not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", value):
        return f"{value!r} is not a SIP header name; write it like 'X-Contract'"
    return None


@dataclass(frozen=True)
class SiteConfig:
    name: str = _spec(
        "site",
        "label of this site or queue in published aggregates (no personal data)",
        check=lambda v: (
            None
            if re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", v)
            else f"{v!r} must be 1-63 lowercase letters, digits, '-' or '_'"
        ),
    )


@dataclass(frozen=True)
class CaptureConfig:
    interface: str = _spec("eth1", "network interface wired to the mirror port")
    sip_ports: list[int] = _spec([5060], "UDP/TCP ports that carry SIP", lo=1, hi=65535)
    snaplen: int = _spec(2048, "bytes kept of each captured frame", lo=256, hi=65535)
    kernel_filter: bool = _spec(
        True,
        "drop unsampled media in the kernel; set false for VXLAN/GRE/ERSPAN mirror feeds,"
        " whose inner ports a kernel filter cannot see",
    )
    socket_buffer_mib: int = _spec(
        32, "kernel receive buffer for the capture socket", lo=1, hi=1024
    )
    jitter_depth: int = _spec(6, "packets held to reorder RTP", lo=1, hi=50)
    max_calls: int = _spec(20000, "calls tracked at once; beyond it the oldest are dropped", lo=1)
    answered_timeout_s: float = _spec(
        3600.0, "seconds without SIP or media before an answered call is closed", lo=10, hi=86400
    )
    unanswered_timeout_s: float = _spec(
        180.0, "seconds before a call that was never answered is closed", lo=5, hi=3600
    )


@dataclass(frozen=True)
class SoundcardConfig:
    device: str = _spec("", "input device name (or part of it); empty: the default input")
    sample_rate: int = _spec(8000, "capture rate in Hz", lo=8000, hi=48000)
    operator_channel: int = _spec(0, "input channel wired to the operator side", lo=0, hi=1)
    activity_dbfs: float = _spec(
        -45.0, "level above which a channel counts as active (call starts)", lo=-90, hi=0
    )
    end_silence_s: float = _spec(
        8.0, "seconds of silence on both channels that end a call", lo=1, hi=600
    )


@dataclass(frozen=True)
class PrivacyConfig:
    sample_rate: float = _spec(
        0.10, "fraction of calls analysed (chosen by a keyed hash)", lo=0, hi=1
    )
    trim_seconds: float = _spec(
        10.0, "seconds cut from the start of each direction before decoding", lo=0, hi=120
    )
    sampling_key_file: str = _spec(
        "/var/lib/callveil/sampling.key",
        "per-box secret for the sampling hash (created if absent)",
        path=True,
    )


@dataclass(frozen=True)
class RolesConfig:
    operator_networks: list[str] = _spec(
        [], "address ranges of operator phones or the PBX's operator side", check=_check_networks
    )
    customer_networks: list[str] = _spec(
        [], "address ranges of the trunk / customer side", check=_check_networks
    )
    caller_default: str = _spec(
        "customer",
        "role of a caller outside both ranges (inbound call centers: customer)",
        choices=("customer", "operator", "unknown"),
    )


@dataclass(frozen=True)
class ContractRule:
    kind: str = _spec(
        "header", "what the rule looks at", choices=("header", "called_number", "queue")
    )
    header: str = _spec("", "SIP header name, for kind = 'header'", check=_check_header_name)
    pattern: str = _spec("", "regular expression the value must match", check=_check_regex)


@dataclass(frozen=True)
class ContractConfig:
    rules: list[ContractRule] = _spec([], "rules that mark a call as contract evidence")


def _check_queue_labels(values: list[str]) -> str | None:
    from gateway.aggregates.labels import check_label

    for value in values:
        try:
            check_label(value, "queue label")
        except ValueError as exc:
            return f"{exc}; it is published as the queue of a bucket"
    for value in values:
        if values.count(value) > 1:
            return f"{value!r} is listed twice; keep it once"
    return None


@dataclass(frozen=True)
class QueuesConfig:
    header: str = _spec(
        "X-Queue",
        "SIP header of the INVITE that names the call's queue: read by contract rules of kind "
        "'queue' and for the per-queue aggregates",
        check=_check_header_name,
    )
    labels: list[str] = _spec(
        [],
        "the queues counted on their own; empty: every call counts for the site only. A header "
        "value not listed (compared ignoring case) counts for the site. List only queues served "
        "by several operators",
        check=_check_queue_labels,
    )


@dataclass(frozen=True)
class LoggingConfig:
    level: str = _spec(
        "info", "least severe level logged", choices=("debug", "info", "warning", "error")
    )
    format: str = _spec(
        "auto",
        "json for machines, console for people, auto picks by terminal",
        choices=("auto", "json", "console"),
    )


def _check_bounds(values: list[float]) -> str | None:
    if len(values) != 2 or values[0] > values[1]:
        return f"{values!r} must be [low, high] with low <= high, e.g. [2.0, 5.0]"
    return None


@dataclass(frozen=True)
class AnonymizerConfig:
    pitch_semitones: list[float] = _spec(
        [3.5, 5.0],
        "size of the per-call pitch shift in semitones, [low, high]; up or down is drawn too",
        lo=0,
        hi=12,
        check=_check_bounds,
    )
    formant_warp: list[float] = _spec(
        [0.17, 0.2],
        "size of the per-call formant (spectral-envelope) warp, [low, high]; its sign is drawn",
        lo=0,
        hi=0.3,
        check=_check_bounds,
    )
    tilt_db: list[float] = _spec(
        [4.0, 6.0],
        "size of the per-call spectral tilt in dB across the band, [low, high]; sign drawn",
        lo=0,
        hi=12,
        check=_check_bounds,
    )
    formant_jitter: list[float] = _spec(
        [0.15, 0.2],
        "size of the per-call move of each formant region (fraction of its frequency),"
        " [low, high]; drawn for each region, with its sign",
        lo=0,
        hi=0.4,
        check=_check_bounds,
    )
    ripple_db: list[float] = _spec(
        [2.0, 2.5],
        "size of each of six smooth per-call ripples of the spectral envelope across the band,"
        " dB, [low, high]; drawn for each ripple, with its sign",
        lo=0,
        hi=6,
        check=_check_bounds,
    )


def _check_pcr(value: int) -> str | None:
    if value not in (16, 23):
        return f"{value} cannot hold the release measurement; use 23 (16 only for tests)"
    return None


@dataclass(frozen=True)
class KeysConfig:
    provider: str = _spec(
        "tpm",
        "where the vault key and signing key live: the TPM, or a passphrase-protected file "
        "for boxes without one",
        choices=("tpm", "software"),
    )
    tcti: str = _spec("device:/dev/tpmrm0", "how to reach the TPM (a TSS2 TCTI string)")
    pcr: int = _spec(23, "PCR that holds the release measurement", check=_check_pcr)
    state_dir: str = _spec(
        "/var/lib/callveil/tpm", "directory of the TPM-encrypted key blobs", path=True
    )
    key_file: str = _spec(
        "/var/lib/callveil/keys.soft", "key file of the software provider", path=True
    )
    passphrase_file: str = _spec(
        "/etc/callveil/keys.passphrase",
        "file (mode 0600) holding the software provider's passphrase; never put it here",
        path=True,
    )


@dataclass(frozen=True)
class VaultConfig:
    path: str = _spec("/var/lib/callveil/vault.db", "the encrypted record store", path=True)
    users_path: str = _spec(
        "/var/lib/callveil/users.db", "staff accounts and their password hashes", path=True
    )
    audit_path: str = _spec("/var/lib/callveil/audit.db", "the hash-chained audit log", path=True)
    analytics_recording_days: int = _spec(
        30, "days an anonymized trimmed recording is kept", lo=7, hi=3660
    )
    analytics_summary_days: int = _spec(
        365, "days a call summary (no ids, no times) is kept", lo=7, hi=3660
    )
    contract_recording_days: int = _spec(
        3653, "days a contract recording is kept as legal evidence", lo=7, hi=7310
    )
    sign_every: int = _spec(
        100, "sign the audit log's chain head with the box key every this many entries", lo=1
    )
    password_free_attempts: int = _spec(
        3, "wrong passwords in a row before an account is locked", lo=1, hi=20
    )
    password_lockout_s: float = _spec(
        30.0, "first lockout; each further wrong password doubles it", lo=0.1, hi=3600
    )
    password_lockout_max_s: float = _spec(3600.0, "longest lockout", lo=1, hi=86400)
    password_memory_mib: int = _spec(
        64,
        "memory each password check takes (Argon2id, 3 passes, 4 lanes); 64 is RFC 9106's "
        "low-memory profile, lower only on boxes short of memory",
        lo=19,
        hi=1024,
    )


_TOPICS = {
    "billing": ["fattura", "bolletta", "addebito", "pagamento", "rimborso"],
    "cancellation": ["disdetta", "recesso", "annullare", "disdire", "chiudere il contratto"],
    "technical_fault": ["guasto", "non funziona", "senza linea", "linea disturbata"],
    "complaint": ["reclamo", "lamentela", "inaccettabile", "insoddisfatto"],
}
# Short frequent words that are no topic: ordinary speech lands on them instead of a phrase.
_FILLERS = ["e", "a", "di", "che", "il", "la", "un", "per", "in", "con", "mi", "si", "ma", "ho"]


def _check_topics(topics: dict[str, list[str]]) -> str | None:
    if not topics:
        return 'no topics; list at least one, e.g. billing = ["fattura", "bolletta"]'
    seen: dict[tuple[str, ...], str] = {}
    for topic, phrases in topics.items():
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", topic):
            return f"topic name {topic!r} must be 1-63 lowercase letters, digits, '-' or '_'"
        if not phrases:
            return f"{topic} = []: list at least one phrase, or remove the topic"
        for i, phrase in enumerate(phrases):
            words = tuple(phrase.split())
            if not words:
                return f"{topic}[{i}] = {phrase!r} is empty; write a word or a phrase"
            if seen.get(words) == topic:
                return f"{phrase!r} is listed twice under {topic!r}; keep it once"
            if words in seen:
                return (
                    f"{phrase!r} is listed under both {seen[words]!r} and {topic!r}; "
                    "a phrase counts for one topic only, so keep it in one"
                )
            seen[words] = topic
    return None


def _check_fillers(keywords: KeywordsConfig) -> str | None:
    phrases = {" ".join(p.split()): t for t, ps in keywords.topics.items() for p in ps}
    for filler in keywords.fillers:
        if filler in phrases:
            return (
                f"{filler!r} is also a phrase of topic {phrases[filler]!r}; "
                "a filler is never reported, so remove it from one of the two"
            )
    return None


@dataclass(frozen=True)
class KeywordsConfig:
    enabled: bool = _spec(
        True, "spot topic keywords with Vosk; false on a box without a model for its language"
    )
    model_path: str = _spec(
        "/var/lib/callveil/models/vosk-model-small-it-0.22",
        "directory of the Vosk model (am/, conf/, graph/)",
        path=True,
    )
    threshold: float = _spec(
        0.9,
        "least word confidence for a phrase to count; higher: fewer false alarms, fewer hits",
        lo=0,
        hi=1,
    )
    fillers: list[str] = _spec(
        _FILLERS,
        "frequent non-topic words the recognizer may choose instead of a phrase, never reported",
        check=lambda v: None if all(w and not w.isspace() for w in v) else "an entry is empty",
    )
    topics: dict[str, list[str]] = _spec(
        _TOPICS, "topic -> phrases spoken by either side", check=_check_topics
    )


def _check_dp(enabled: bool) -> str | None:
    import importlib.util

    if enabled and importlib.util.find_spec("opendp") is None:
        return "true needs OpenDP: pip install 'callveil[dp]', or set it to false"
    return None


@dataclass(frozen=True)
class AggregatesConfig:
    period: str = _spec(
        "day",
        "span of one published bucket; it is released only after it closes",
        choices=("day", "week"),
    )
    k: int = _spec(
        10, "buckets and cells with fewer analysed calls than this are withheld", lo=2, hi=10000
    )
    dp: bool = _spec(
        False, "add differential-privacy noise (OpenDP discrete Laplace) to counts", check=_check_dp
    )
    epsilon: float = _spec(
        1.0,
        "privacy budget one bucket spends per period when dp is on; smaller: more noise",
        lo=0.01,
        hi=10,
    )
    state_path: str = _spec(
        "/var/lib/callveil/aggregates.db", "open buckets, kept until their period closes", path=True
    )


def _check_box_id(value: str) -> str | None:
    from gateway.aggregates.labels import LABEL

    if not value or LABEL.fullmatch(value):  # empty: not configured, checked when publishing
        return None
    return f"{value!r} must be 1-63 lowercase letters, digits, '-' or '_' (it is a topic segment)"


@dataclass(frozen=True)
class MqttConfig:
    host: str = _spec("", "the central MQTT broker; empty: this box publishes nothing")
    port: int = _spec(8883, "the broker's TLS port", lo=1, hi=65535)
    ca_file: str = _spec(
        "/etc/callveil/mqtt/ca.crt",
        "CA certificate the broker's certificate must chain to",
        path=True,
    )
    cert_file: str = _spec(
        "/etc/callveil/mqtt/box.crt", "this box's client certificate (its CN is box_id)", path=True
    )
    key_file: str = _spec(
        "/etc/callveil/mqtt/box.key", "private key of the client certificate (mode 0600)", path=True
    )
    box_id: str = _spec(
        "", "this box's name in topics, as registered at the centre", check=_check_box_id
    )
    keepalive: int = _spec(60, "seconds between keep-alive pings", lo=5, hi=3600)
    reconnect_max_s: float = _spec(60.0, "longest wait between reconnect attempts", lo=1, hi=3600)
    outbox_path: str = _spec(
        "/var/lib/callveil/outbox.db", "payloads kept on disk until the broker has them", path=True
    )
    outbox_max_entries: int = _spec(
        10000, "payloads the outbox holds before it refuses new ones", lo=1
    )
    outbox_max_bytes: int = _spec(
        64 * 2**20, "bytes the outbox holds before it refuses new payloads", lo=65536
    )


def _check_absolute(value: str) -> str | None:
    if value and not Path(value).is_absolute():
        return f"{value!r} is relative; write an absolute path, or leave it empty"
    return None


@dataclass(frozen=True)
class EmotionConfig:
    model_path: str = _spec(
        "",
        "ONNX emotion model exported by models/train_emotion.py; empty: the shipped model",
        check=_check_absolute,
    )
    threads: int = _spec(1, "CPU threads of one emotion inference (onnxruntime)", lo=1, hi=8)


@dataclass(frozen=True)
class SpeechConfig:
    vad_threshold: float = _spec(
        0.5,
        "speech probability at which a speech segment starts; it ends 0.15 below it",
        lo=0.2,
        hi=0.95,
    )
    min_speech_s: float = _spec(
        0.25, "shorter bursts of speech are ignored (clicks, coughs)", lo=0.02, hi=1.0
    )
    min_silence_s: float = _spec(0.3, "pause that ends a speech segment", lo=0.06, hi=5.0)
    max_segment_s: float = _spec(
        10.0, "longer speech is cut into segments of at most this length", lo=2.0, hi=60.0
    )
    analysis_rate: int = _spec(
        16000,
        "sample rate of the anonymized audio handed to the VAD and the models, Hz",
        check=lambda v: None if v in (8000, 16000) else f"{v} Hz: use 8000 or 16000",
    )


@dataclass(frozen=True)
class TensionConfig:
    arousal_threshold: float = _spec(
        0.3, "arousal above which a segment can be tense (-1 calm .. 1 excited)", lo=-1, hi=1
    )
    valence_threshold: float = _spec(
        -0.1, "valence below which a segment can be tense (-1 negative .. 1 positive)", lo=-1, hi=1
    )
    sustain_s: float = _spec(
        4.0, "seconds of the customer's tense speech that make a tension event", lo=0.5, hi=120
    )
    trend_delta: float = _spec(
        0.05, "change of the customer's mean tension (0..1) that counts as a trend", lo=0, hi=1
    )
    min_trend_speech_s: float = _spec(
        3.0, "customer speech needed in the first and last third to call a trend", lo=0, hi=600
    )


@dataclass(frozen=True)
class DaemonConfig:
    user: str = _spec(
        "callveil",
        "account the daemon switches to after opening the capture socket when started as root "
        "(empty: keep the account it was started with)",
    )
    workers: int = _spec(0, "analysis threads; 0: one per CPU core", lo=0, hi=64)
    queue_chunks: int = _spec(
        1500,
        "audio chunks (20 ms each) that may wait per analysis thread; past it, audio of "
        "analysed calls is dropped and counted as lost coverage",
        lo=10,
        hi=100_000,
    )
    shed_keywords_at: float = _spec(
        0.5, "queue fill at which newly sampled calls skip keyword spotting", lo=0, hi=1
    )
    shed_emotion_at: float = _spec(
        0.8, "queue fill at which newly sampled calls skip emotion scoring too", lo=0, hi=1
    )
    recording_part_s: float = _spec(
        120.0,
        "recordings are sealed into the vault in parts of this length, which bounds the audio "
        "a call holds in memory",
        lo=10,
        hi=3600,
    )
    status_interval_s: float = _spec(
        5.0, "how often the service status line (counters only) is refreshed", lo=0.5, hi=300
    )
    release_interval_s: float = _spec(
        60.0, "how often closed aggregate buckets are looked for and handed to the outbox",
        lo=0.5, hi=3600,
    )  # fmt: skip
    stall_s: float = _spec(
        20.0,
        "a stage busy with one item for longer than this counts as stuck: the watchdog pings "
        "stop and systemd restarts the service",
        lo=1,
        hi=600,
    )


@dataclass(frozen=True)
class Config:
    site: SiteConfig = field(default_factory=SiteConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    soundcard: SoundcardConfig = field(default_factory=SoundcardConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    roles: RolesConfig = field(default_factory=RolesConfig)
    contract: ContractConfig = field(default_factory=ContractConfig)
    queues: QueuesConfig = field(default_factory=QueuesConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    vault: VaultConfig = field(default_factory=VaultConfig)
    anonymizer: AnonymizerConfig = field(default_factory=AnonymizerConfig)
    keywords: KeywordsConfig = field(default_factory=KeywordsConfig)
    emotion: EmotionConfig = field(default_factory=EmotionConfig)
    aggregates: AggregatesConfig = field(default_factory=AggregatesConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    tension: TensionConfig = field(default_factory=TensionConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)


def anonymizer_ranges(path: Path | None) -> AnonymizerConfig:
    """The ``[anonymizer]`` ranges of the configuration at ``path``, or the built-in ones; for
    the tools that measure or train under a site's ranges."""
    return AnonymizerConfig() if path is None else load_config(path).anonymizer


def load_config(path: Path) -> Config:
    """Read and validate ``path``; raise ConfigError naming the key, the value and the fix."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such configuration file; copy callveil.example.toml there"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax at that line") from None
    return _resolve_paths(parse_config(raw, source=str(path)), path.parent)


def _resolve_paths(config: Config, base: Path) -> Config:
    """Make every relative path field (``_spec(path=True)``) relative to ``base``."""
    sections = {}
    for section in fields(config):
        value = getattr(config, section.name)
        changes = {
            f.name: str(base / getattr(value, f.name))
            for f in fields(value)
            if f.metadata.get("path") and not Path(getattr(value, f.name)).is_absolute()
        }
        if changes:
            sections[section.name] = replace(value, **changes)
    return replace(config, **sections)


def parse_config(raw: dict[str, Any], *, source: str = "configuration") -> Config:
    config = _build(Config, raw, prefix="", source=source)
    _cross_check(config, source)
    return config


# keys of earlier releases and where they live now
_MOVED = {"contract.queue_header": "queues.header"}


def _build(cls: type, raw: Any, *, prefix: str, source: str) -> Any:
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where} must be a table, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            if f"{prefix}{key}" in _MOVED:
                hint = f"; it moved to '{_MOVED[prefix + key]}'"
            raise ConfigError(
                f"{source}: unknown key '{prefix}{key}'{hint} "
                f"(known keys here: {', '.join(sorted(known))})"
            )
    values = {}
    for name, f in known.items():
        if name not in raw:
            continue
        values[name] = _convert(
            hints[name], raw[name], dict(f.metadata), key=f"{prefix}{name}", source=source
        )
    return cls(**values)


def _convert(hint: Any, value: Any, meta: dict[str, Any], *, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    if is_dataclass(hint):
        return _build(hint, value, prefix=f"{key}.", source=source)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(
                f"{source}: {key} = {value!r}: expected a list ({meta.get('help', '')})"
            )
        item_meta = {k: v for k, v in meta.items() if k != "check"}
        items = [
            _convert(item, v, item_meta, key=f"{key}[{i}]", source=source)
            for i, v in enumerate(value)
        ]
        _check(meta.get("check"), items, key, source)
        return items
    if origin is dict:
        _, item = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(
                f"{source}: {key} = {value!r}: expected a table ({meta.get('help', '')})"
            )
        item_meta = {k: v for k, v in meta.items() if k != "check"}
        table = {
            name: _convert(item, v, item_meta, key=f"{key}.{name}", source=source)
            for name, v in value.items()
        }
        _check(meta.get("check"), table, key, source)
        return table
    _check_scalar_type(hint, value, key, source, meta)
    if isinstance(value, int | float) and not isinstance(value, bool):
        lo, hi = meta.get("lo"), meta.get("hi")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(
                f"{source}: {key} = {value!r} is out of range; use a value from "
                f"{lo if lo is not None else '-inf'} to {hi if hi is not None else 'inf'} "
                f"({meta.get('help', '')})"
            )
        value = float(value) if hint is float else value
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(
            f"{source}: {key} = {value!r} is not allowed; use one of {', '.join(choices)}"
        )
    _check(meta.get("check"), value, key, source)
    return value


def _check_scalar_type(hint: Any, value: Any, key: str, source: str, meta: dict) -> None:
    expected = {str: str, int: int, float: (int, float), bool: bool}[hint]
    ok = isinstance(value, expected) and not (hint is not bool and isinstance(value, bool))
    if not ok:
        names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
        raise ConfigError(
            f"{source}: {key} = {value!r} has the wrong type; expected {names[hint]} "
            f"({meta.get('help', '')})"
        )


def _check(check: Any, value: Any, key: str, source: str) -> None:
    if check is None:
        return
    problem = check(value)
    if problem:
        raise ConfigError(f"{source}: {key}: {problem}")


def _cross_check(config: Config, source: str) -> None:
    for i, rule in enumerate(config.contract.rules):
        key = f"contract.rules[{i}]"
        if not rule.pattern:
            raise ConfigError(f"{source}: {key}.pattern is empty; give the value to match")
        if rule.kind == "header" and not rule.header:
            raise ConfigError(
                f"{source}: {key}.header is empty; kind = 'header' needs a header name"
            )
    if not config.queues.header and config.queues.labels:
        raise ConfigError(
            f"{source}: queues.header is empty, so no call would get one of queues.labels; name "
            'the header the PBX sets, e.g. "X-Queue", or set queues.labels = []'
        )
    if not config.queues.header and any(r.kind == "queue" for r in config.contract.rules):
        raise ConfigError(
            f"{source}: queues.header is empty, so contract rules of kind 'queue' see nothing; "
            'name the header the PBX sets, e.g. "X-Queue"'
        )
    if not config.capture.sip_ports:
        raise ConfigError(f"{source}: capture.sip_ports is empty; list at least one, e.g. [5060]")
    if config.daemon.shed_keywords_at > config.daemon.shed_emotion_at:
        raise ConfigError(
            f"{source}: daemon.shed_keywords_at ({config.daemon.shed_keywords_at}) is above "
            f"daemon.shed_emotion_at ({config.daemon.shed_emotion_at}); keyword spotting is "
            "shed first, so make it the lower fill level"
        )
    problem = _check_fillers(config.keywords)
    if problem:
        raise ConfigError(f"{source}: keywords.fillers: {problem}")
