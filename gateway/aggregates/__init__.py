"""Aggregates: call summaries folded into per-period counts, the only data that leaves a box.

A bucket holds plain integer counts of calls per cell (no averages, no rates), so buckets from
many boxes merge exactly by addition; rates are computed by whoever reads them. A bucket is
released only after its period closes, with small cells suppressed and optional
differential-privacy noise.
"""
