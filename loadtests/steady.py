"""Steady trading: `python -m loadtests steady [--accounts 10000] [--duration 60] [--rate 7]
[--deals-per-second 50] [--poll 1 15 60 300] [--json PATH]`

The `news_burst` scenario with no news: the same accounts (some near their floors), ticks at the
ordinary `--rate` per symbol on three symbols drifting 0.5% over `--duration`, and ordinary
accounts opening and closing positions at `--deals-per-second`. The same figures and designs
(single process, polling) are reported; see `loadtests/news_burst.py`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from loadtests import news_burst

DEFAULTS = news_burst.Settings(
    scenario="steady",
    duration_s=60.0,
    multiplier=1.0,
    deals_per_second=50.0,
    actor_per_account=0,
    polls_s=(1.0, 15.0, 60.0, 300.0),
)


def main(argv: Sequence[str]) -> int:
    args = news_burst.parser("steady", DEFAULTS).parse_args(argv)
    return news_burst.execute(news_burst.settings_of(args, "steady"), args.json, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
