"""Small-cell suppression: no published count describes fewer than ``k`` calls.

The rule, applied to each histogram on its own:

1. Primary: every cell counting fewer than ``k`` calls is withheld, zero included, so a
   withheld cell does not tell "none" from "a few".
2. Complementary: a histogram's total is known (it is the number of analysed calls, or of
   calls where that side spoke), so the withheld cells' sum follows by subtraction. While that
   sum lies between 1 and ``k - 1``, the smallest published cell is withheld too, so no count
   below ``k`` can be recovered (a sum of zero reveals only that the withheld cells are empty).

With noise on, the rule runs on the noisy counts (post-processing, which costs no privacy);
negative noisy counts weigh as zero in the sum.
"""

from __future__ import annotations

from collections.abc import Sequence


def suppress(counts: Sequence[int], k: int) -> tuple[int | None, ...]:
    """``counts`` with withheld cells as None."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    out: list[int | None] = [c if c >= k else None for c in counts]

    def withheld_sum() -> int:
        return sum(max(c, 0) for c, o in zip(counts, out, strict=True) if o is None)

    while 0 < withheld_sum() < k:
        published = [i for i, o in enumerate(out) if o is not None]
        if not published:
            break
        out[min(published, key=lambda i: counts[i])] = None
    return tuple(out)
