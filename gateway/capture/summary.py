"""The replay / capture-check summary, worded for an installer at a mirror port."""

from __future__ import annotations

from collections import Counter

from gateway.capture.session import CaptureReport


def _pairs(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counter.most_common()) or "none"


def format_report(r: CaptureReport, *, sample_rate: float) -> str:
    lines = [
        f"frames read             {r.frames}"
        + ("  (file truncated: read up to the cut)" if r.truncated else ""),
        f"UDP/TCP payloads        {r.datagrams}",
        f"SIP messages            {r.sip_messages} (malformed {r.sip_malformed})",
        f"calls                   {r.calls} (answered {r.answered})",
        f"  ended                 {_pairs(r.end_reasons)}",
        f"  policy                {_pairs(r.policies)}",
        f"  queue                 {_pairs(r.queues)}",
    ]
    achieved = r.sampling_rate
    if achieved is not None:
        lines.append(
            f"  sampling              {achieved:.1%} analysed (configured {sample_rate:.0%};"
            " small captures vary)"
        )
    lines += [
        f"  codecs offered        {_pairs(r.codecs)}",
        f"  undecodable           {_pairs(r.undecodable)}",
        f"  one-way audio         {r.one_way_audio}",
        f"  answered, no media    {r.no_media}",
        f"RTP matched to calls    {r.rtp_packets_matched} parsed (analysed/contract), "
        f"{r.rtp_packets_dropped_unsampled} dropped unparsed (not sampled)",
        f"RTCP                    {r.rtcp_packets}",
        f"video / fax (T.38)      {r.non_audio_packets} packets, never treated as audio",
        f"media after call end    {r.late_media_packets} packets",
        f"payload type not agreed {r.unknown_payload_type} packets (not decoded)",
        f"second flow, ignored    {r.competing_packets} packets (another flow already carried"
        " that direction)",
        f"RTP without signalling  {r.unmatched_flows} flows ({r.unmatched_packets} packets"
        " not matched to any call)",
    ]
    if r.analysed_directions:
        loss = r.lost / r.expected if r.expected else 0.0
        lines += [
            f"analysed directions     {r.analysed_directions}",
            f"  packet loss           {loss:.2%} ({r.lost} of {r.expected}),"
            f" duplicates {r.duplicates}",
            f"  jitter (RFC 3550)     mean {r.mean_jitter_ms:.1f} ms, max {r.max_jitter_ms:.1f} ms"
            " at the end of each direction",
            f"  audio                 {r.decoded_seconds:.1f} s decoded,"
            f" {r.trimmed_seconds:.1f} s trimmed before decoding,"
            f" {r.concealed_seconds:.1f} s concealed",
            f"  telephone events      {r.telephone_events} (never decoded as audio)",
        ]
    problems = {k: v for k, v in (r.packet_layer + r.dialog_layer).items() if v}
    if problems:
        lines.append("layer counters          " + _pairs(Counter(problems)))
    return "\n".join(lines)
