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
) -> Any:
    meta = {"help": help, "lo": lo, "hi": hi, "choices": choices, "check": check}
    if isinstance(default, list | tuple):
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
        "/var/lib/callveil/sampling.key", "per-box secret for the sampling hash (created if absent)"
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
    queue_header: str = _spec(
        "X-Queue", "SIP header that names the queue of a call", check=_check_header_name
    )
    rules: list[ContractRule] = _spec([], "rules that mark a call as contract evidence")


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


@dataclass(frozen=True)
class Config:
    site: SiteConfig = field(default_factory=SiteConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    soundcard: SoundcardConfig = field(default_factory=SoundcardConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    roles: RolesConfig = field(default_factory=RolesConfig)
    contract: ContractConfig = field(default_factory=ContractConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


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
    config = parse_config(raw, source=str(path))
    key_file = Path(config.privacy.sampling_key_file)
    if not key_file.is_absolute():  # relative paths are relative to the configuration file
        privacy = replace(config.privacy, sampling_key_file=str(path.parent / key_file))
        config = replace(config, privacy=privacy)
    return config


def parse_config(raw: dict[str, Any], *, source: str = "configuration") -> Config:
    config = _build(Config, raw, prefix="", source=source)
    _cross_check(config, source)
    return config


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
    if not config.capture.sip_ports:
        raise ConfigError(f"{source}: capture.sip_ports is empty; list at least one, e.g. [5060]")
