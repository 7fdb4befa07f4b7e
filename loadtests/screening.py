"""Sanctions screening speed: `python -m loadtests screening [--entries 20000] [--traders 50000]
[--seeded 200] [--json PATH]`

A synthetic list of `--entries` people (invented names from syllables, one or two aliases each,
a date of birth, a country) and `--traders` traders, `--seeded` of whom are listed people under
another spelling (reordered words, accents, one letter changed, Cyrillic) with the same date of
birth; the rest are invented names that may still resemble a listed one. Every trader is screened
once (a full re-screen after a list update, the issue's goal: 50,000 traders in under a minute).

Reported: the list's indexed names, the re-screen's seconds and screenings per second, the
seeded traders found (all must be) and the other traders with a hit (possible: invented names
can resemble each other; each is a review for compliance, so the count matters).
Exit status 1 if a seeded trader was not found. Nothing asserts on speed.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec

from actors.screening import ListEntry, Person, Screener
from loadtests.common import positive, write_report
from loadtests.entity import _cpu_model

SYLLABLES = (
    *("ka", "ri", "mo", "len", "dar", "vi", "sto", "pel", "an", "ru", "zha", "tin", "bor"),
    *("mi", "sa", "lo", "ven", "gra", "do", "nes", "ul", "fer", "ko", "ta", "yan", "shi"),
)
COUNTRIES = ("RU", "IR", "SY", "VE", "BY", "KP", "CU", "MM", "GB", "DE", "FR", "US", "CN", "TR")
# Latin letters to the Cyrillic ones that transliterate back to them (a, k, o, r, e, t, m).
CYRILLIC = str.maketrans(
    dict(zip("akoretm", "\u0430\u043a\u043e\u0440\u0435\u0442\u043c", strict=True))
)


def invented(rng: random.Random, words: int) -> str:
    return " ".join(
        "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
        for _ in range(words)
    )


def build_list(entries: int, rng: random.Random) -> list[ListEntry]:
    found = []
    for i in range(entries):
        name = invented(rng, rng.choice((2, 2, 3)))
        aliases = tuple(invented(rng, 2) for _ in range(rng.randint(1, 2)))
        dob = f"{rng.randint(1940, 2000)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        found.append(
            ListEntry(
                uid=f"SYN:{i}",
                list="SYN",
                name=name,
                aliases=aliases,
                dobs=(dob,),
                country=rng.choice(COUNTRIES),
            )
        )
    return found


def variant(name: str, rng: random.Random) -> str:
    """Another spelling of `name`: reordered, accented, one letter changed, or Cyrillic."""
    words = name.split()
    kind = rng.randrange(4)
    if kind == 0:
        return " ".join(reversed(words))
    if kind == 1:
        return name.replace("a", "á", 1).replace("o", "ö", 1)
    if kind == 2:
        longest = max(words, key=len)
        at = rng.randrange(3, len(longest))  # past the indexed prefix
        changed = longest[:at] + rng.choice("aeiou") + longest[at + 1 :]
        return name.replace(longest, changed, 1)
    return name.lower().translate(CYRILLIC)


class Report(msgspec.Struct, kw_only=True):
    scenario: str
    machine: str
    entries: int
    names_indexed: int
    traders: int
    seeded: int
    build_s: float
    rescreen_s: float
    screenings_per_s: float
    seeded_found: int
    seeded_missed: list[str]
    other_hits: int
    command: str = ""


def run(entries: int, traders: int, seeded: int, seed: int) -> Report:
    rng = random.Random(seed)
    listed = build_list(entries, rng)
    people = []
    for i in range(traders):
        if i < seeded:
            entry = listed[rng.randrange(len(listed))]
            name = variant(rng.choice((entry.name, *entry.aliases)), rng)
            people.append(Person(trader_id=f"seeded-{entry.uid}-{i}", name=name, dob=entry.dobs[0]))
        else:
            dob = f"{rng.randint(1950, 2005)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            people.append(Person(trader_id=f"t{i}", name=invented(rng, 2), dob=dob))
    started = time.perf_counter()
    screener = Screener(listed)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    hits = screener.screen_all(people)
    rescreen_s = time.perf_counter() - started
    missed = []
    for person in people[:seeded]:
        uid = person.trader_id.split("-", 1)[1].rsplit("-", 1)[0]
        if uid not in {h.uid for h in hits.get(person.trader_id, [])}:
            missed.append(f"{person.trader_id}: {person.name}")
    return Report(
        scenario="screening",
        machine=f"{_cpu_model()}, {os.cpu_count()} cores",
        entries=entries,
        names_indexed=len(screener.names),
        traders=traders,
        seeded=seeded,
        build_s=round(build_s, 3),
        rescreen_s=round(rescreen_s, 3),
        screenings_per_s=round(traders / rescreen_s, 1),
        seeded_found=seeded - len(missed),
        seeded_missed=missed,
        other_hits=sum(1 for t in hits if not t.startswith("seeded-")),
    )


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests screening", description=__doc__)
    parser.add_argument("--entries", type=positive, default=20_000)
    parser.add_argument("--traders", type=positive, default=50_000)
    parser.add_argument("--seeded", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report = run(args.entries, args.traders, min(args.seeded, args.traders), args.seed)
    report.command = " ".join(["python -m loadtests screening", *argv])
    print(
        f"screening: {report.entries:,} listed ({report.names_indexed:,} names), "
        f"{report.traders:,} traders re-screened in {report.rescreen_s:.2f} s "
        f"({report.screenings_per_s:,.0f}/s; goal 50,000 in under 60 s) on {report.machine}; "
        f"seeded found {report.seeded_found}/{report.seeded}, other traders with a hit "
        f"{report.other_hits}",
        flush=True,
    )
    for line in report.seeded_missed[:10]:
        print(f"  missed {line}")
    if args.json is not None:
        write_report(args.json, report)
    return 1 if report.seeded_missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
