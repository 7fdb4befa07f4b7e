"""Sanctions and PEP screening: lists loaded from files, a trader's name matched against every
listed name and alias, scored with date of birth and country.

Formats (documented in `docs/kyc.md`):

- **OFAC SDN CSV**: `sdn.csv` (no header: ent_num, SDN_Name, SDN_Type, Program, Title,
  Call_Sign, Vess_type, Tonnage, GRT, Vess_flag, Vess_owner, Remarks; `-0-` for empty), and
  optionally `alt.csv` (ent_num, alt_num, alt_type, alt_name, alt_remarks). Only individuals are
  kept (traders are people). Dates of birth and nationality come from the remarks
  (`DOB 12 Jan 1970; alt. DOB 1971; nationality Russia`).
- **Simple CSV** with a header: `name,aliases,date_of_birth,country,list`; aliases separated by
  `;`, the date `YYYY-MM-DD` or `YYYY`, the country an ISO 3166 code or name, the list a label
  (`PEP`, `EU`, ...).

Matching. Names are transliterated to ASCII (`anyascii`: Cyrillic, Greek, accents), lowercased,
stripped of punctuation; the score is rapidfuzz's token-sort ratio (word order does not matter:
`IVANOV, Aleksandr` is `Aleksandr Ivanov`), or 95% of the token-set ratio when both names have two
words or more (a middle name more or less). Candidates are found in batches first
(`Screener.screen_all`): only listed names sharing a word prefix (three letters) with the
trader's, compared with the words sorted and, for three words or more, with each word left out
in turn, and every listed name sharing a whole word with the trader's. So a typo in the first
three letters of every word is not found, nor a name with two words more than the other. A name
contained in the other scores 95 (`Karim Youssef` against `EL-HADDAWI, Karim Youssef`): a hit
for compliance to clear or confirm. The name score is then adjusted: the same date of birth +10 (the
same year, where the list has only a year, +5), a different one -25; the same country +5. A hit
is a score at or above the threshold (85 by default), so a full-name match with another date of
birth (75) is not one.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache

import msgspec
import numpy as np
import pycountry
from anyascii import anyascii
from rapidfuzz import fuzz, process

THRESHOLD = 85.0
SAME_DOB = 10.0
SAME_YEAR = 5.0
OTHER_DOB = -25.0
SAME_COUNTRY = 5.0
PREFIX = 3


class ListEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One listed person."""

    uid: str  # list label and the list's own id: `OFAC-SDN:36`
    list: str
    name: str
    aliases: tuple[str, ...] = ()
    dobs: tuple[str, ...] = ()  # `YYYY-MM-DD` or `YYYY`
    country: str | None = None  # ISO 3166 alpha-2
    program: str = ""


class Person(msgspec.Struct, frozen=True, kw_only=True):
    """A trader as screened."""

    trader_id: str
    name: str
    dob: str | None = None  # `YYYY-MM-DD`
    country: str | None = None  # ISO 3166 alpha-2


class Hit(msgspec.Struct, frozen=True, kw_only=True):
    uid: str
    list: str
    listed_name: str  # the name or alias that matched
    name_score: float
    score: float
    reasons: tuple[str, ...]  # how the score was adjusted


class ListError(ValueError):
    """A list file that cannot be read; names the line and what was wrong."""


# Normalisation ---------------------------------------------------------------------------------

_NOT_WORD = re.compile(r"[^a-z0-9]+")


@lru_cache(maxsize=200_000)
def normalise(name: str) -> str:
    """ASCII, lowercase, words separated by one space: `Müller-Józef` -> `muller jozef`."""
    return _NOT_WORD.sub(" ", anyascii(name).lower()).strip()


def country_code(text: str | None) -> str | None:
    """An ISO 3166 alpha-2 code for a code or a country name; None if empty or unknown."""
    if not text or not text.strip():
        return None
    value = text.strip()
    try:
        return str(pycountry.countries.lookup(value).alpha_2)
    except LookupError:
        pass
    try:
        return str(pycountry.countries.search_fuzzy(value)[0].alpha_2)
    except LookupError:
        return None


# Loading ---------------------------------------------------------------------------------------

SIMPLE_HEADER = ("name", "aliases", "date_of_birth", "country", "list")
_DATE = re.compile(r"^\d{4}(-\d{2}-\d{2})?$")


def load_simple(text: str, source: str = "list.csv") -> list[ListEntry]:
    """Entries of a simple CSV (header `name,aliases,date_of_birth,country,list`)."""
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != SIMPLE_HEADER:
        raise ListError(f"{source}: the header must be {','.join(SIMPLE_HEADER)}")
    entries = []
    for line, row in enumerate(reader, start=2):
        name = (row["name"] or "").strip()
        if not name:
            raise ListError(f"{source}:{line}: name is empty")
        dob = (row["date_of_birth"] or "").strip()
        if dob and not _DATE.match(dob):
            raise ListError(f"{source}:{line}: date_of_birth {dob!r} is not YYYY-MM-DD or YYYY")
        label = (row["list"] or "").strip() or "LIST"
        aliases = tuple(a.strip() for a in (row["aliases"] or "").split(";") if a.strip())
        entries.append(
            ListEntry(
                uid=f"{label}:{_slug(name, dob)}",
                list=label,
                name=name,
                aliases=aliases,
                dobs=(dob,) if dob else (),
                country=country_code(row["country"]),
            )
        )
    return entries


def _slug(name: str, dob: str) -> str:
    """A simple-CSV entry's id: its name and date of birth, so that editing the file elsewhere
    does not move it (a decision on a hit stays with the person it was made for)."""
    slug = normalise(name).replace(" ", "-")
    return f"{slug}-{dob}" if dob else slug


_EMPTY = "-0-"
_MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug",
                                       "sep", "oct", "nov", "dec"), start=1)}  # fmt: skip
_DOB = re.compile(r"DOB (?:(\d{1,2}) )?([A-Za-z]{3} )?(\d{4})")
_NATIONALITY = re.compile(r"(?:nationality|citizen) ([A-Za-z ,.'-]+?)(?:;|\.$|$)")


def load_ofac(sdn_csv: str, alt_csv: str = "", source: str = "sdn.csv") -> list[ListEntry]:
    """The individuals of an OFAC SDN list (`sdn.csv`, and `alt.csv` for their aliases)."""
    # OFAC's files may end with an end-of-file byte (0x1A) after the last line.
    sdn_csv, alt_csv = sdn_csv.replace("\x1a", ""), alt_csv.replace("\x1a", "")
    aliases: dict[str, list[str]] = defaultdict(list)
    for row in csv.reader(io.StringIO(alt_csv)):
        if len(row) >= 4 and row[3].strip() and row[3].strip() != _EMPTY:
            aliases[row[0].strip()].append(row[3].strip())
    entries = []
    for line, row in enumerate(csv.reader(io.StringIO(sdn_csv)), start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 12:
            raise ListError(f"{source}:{line}: {len(row)} columns, the SDN layout has 12")
        ent_num, name, kind, program, remarks = row[0], row[1], row[2], row[3], row[11]
        if kind.strip().lower() != "individual":
            continue
        remarks = "" if remarks.strip() == _EMPTY else remarks
        nationality = _NATIONALITY.search(remarks)
        entries.append(
            ListEntry(
                uid=f"OFAC-SDN:{ent_num.strip()}",
                list="OFAC-SDN",
                name=name.strip(),
                aliases=tuple(aliases.get(ent_num.strip(), ())),
                dobs=tuple(_dob(m) for m in _DOB.finditer(remarks)),
                country=country_code(nationality.group(1)) if nationality else None,
                program=program.strip(),
            )
        )
    return entries


def _dob(match: re.Match[str]) -> str:
    day, month, year = match.groups()
    if day and month and month.strip().lower() in _MONTHS:
        return f"{year}-{_MONTHS[month.strip().lower()]:02d}-{int(day):02d}"
    return year


# Matching --------------------------------------------------------------------------------------


def forms(name: str) -> set[str]:
    """A normalised name's words sorted, and, for three words or more, each with one word left
    out (a middle name the other side does not have): what the batched prefilter compares."""
    words = sorted(name.split())
    found = {" ".join(words)}
    if len(words) >= 3:
        found |= {" ".join(words[:k] + words[k + 1 :]) for k in range(len(words))}
    return found


class Screener:
    """Every listed name and alias, normalised and indexed by word prefix."""

    def __init__(self, entries: Sequence[ListEntry], threshold: float = THRESHOLD) -> None:
        self.entries = list(entries)
        self.threshold = threshold
        self.names: list[str] = []  # normalised
        self.owners: list[int] = []  # the entry of each name
        self.shown: list[str] = []  # as listed
        self.forms: list[str] = []  # see `forms`
        self.form_of: list[int] = []  # the name of each form
        blocks: dict[str, list[int]] = defaultdict(list)
        for index, entry in enumerate(self.entries):
            for shown in (entry.name, *entry.aliases):
                name = normalise(shown)
                if not name:
                    continue
                at = len(self.names)
                self.names.append(name)
                self.owners.append(index)
                self.shown.append(shown)
                for form in forms(name):
                    for word in set(form.split()):
                        blocks[word[:PREFIX]].append(len(self.forms))
                    self.forms.append(form)
                    self.form_of.append(at)
        self.blocks = dict(blocks)  # word prefix -> the forms with a word of that prefix
        words: dict[str, set[int]] = defaultdict(set)
        for at, name in enumerate(self.names):
            for word in name.split():
                words[word].add(at)
        self.words = dict(words)  # word -> the names with it

    def screen(self, person: Person) -> list[Hit]:
        """The entries the person matches at or above the threshold, best first (one hit per
        entry: its best-matching name)."""
        return self.screen_all([person]).get(person.trader_id, [])

    def screen_all(self, people: Sequence[Person]) -> dict[str, list[Hit]]:
        """The hits of every person who has any, by trader id.

        Batched: per word prefix, every person's forms with a word of that prefix against every
        listed form with one (`rapidfuzz.process.cdist`, all cores, in C), keeping pairs that
        could reach the threshold with the best adjustments; those are then scored."""
        queries = [normalise(p.name) for p in people]
        floor = self.threshold - SAME_DOB - SAME_COUNTRY  # no adjustment lifts a name above it
        pairs = self._candidates(queries, floor)
        best: dict[tuple[int, int], Hit] = {}  # (person, entry) -> its best name's hit
        for i, at in pairs:
            hit = self._hit(people[i], queries[i], at, floor)
            key = (i, self.owners[at])
            if hit is not None and (key not in best or best[key].score < hit.score):
                best[key] = hit
        found: dict[str, list[Hit]] = defaultdict(list)
        for (i, _), hit in best.items():
            found[people[i].trader_id].append(hit)
        return {t: sorted(h, key=lambda h: (-h.score, h.uid)) for t, h in found.items()}

    def _candidates(self, queries: Sequence[str], floor: float) -> set[tuple[int, int]]:
        """(person, listed name) pairs that may score `floor` or more."""
        asked: list[str] = []  # the people's forms
        asker: list[int] = []  # the person of each
        asking: dict[str, list[int]] = defaultdict(list)  # word prefix -> forms asked
        for i, query in enumerate(queries):
            for form in forms(query) if query else ():
                for prefix in {word[:PREFIX] for word in form.split()}:
                    if prefix in self.blocks:
                        asking[prefix].append(len(asked))
                asked.append(form)
                asker.append(i)
        pairs: set[tuple[int, int]] = set()
        for prefix, who in asking.items():
            block = self.blocks[prefix]
            # `ratio` on sorted words is the token-sort ratio; on a form without a middle
            # name it finds what the token-set ratio would. Plain Indel runs vectorised.
            scores = process.cdist(
                [asked[f] for f in who],
                [self.forms[f] for f in block],
                scorer=fuzz.ratio,
                score_cutoff=floor,
                dtype=np.uint8,
                workers=-1,
            )
            for row, column in zip(*np.nonzero(scores), strict=True):
                pairs.add((asker[who[row]], self.form_of[block[column]]))
        # A typo that changes the sorted order of the words ("Corvalenko Ilya") defeats the
        # Indel pass; a shared word keeps the pair for the token-set ratio to score.
        for i, query in enumerate(queries):
            for word in set(query.split()):
                pairs.update((i, at) for at in self.words.get(word, ()))
        return pairs

    def _hit(self, person: Person, query: str, at: int, floor: float) -> Hit | None:
        name = self.names[at]
        score = fuzz.token_sort_ratio(query, name)
        if " " in query and " " in name:
            score = max(score, 0.95 * fuzz.token_set_ratio(query, name))
        if score < floor:
            return None
        hit = _scored(person, self.entries[self.owners[at]], self.shown[at], score)
        return hit if hit.score >= self.threshold else None


def _scored(person: Person, entry: ListEntry, shown: str, name_score: float) -> Hit:
    score, reasons = name_score, [f"name {name_score:.1f}"]
    if person.dob and entry.dobs:
        if person.dob in entry.dobs:
            score += SAME_DOB
            reasons.append("same date of birth")
        elif person.dob[:4] in entry.dobs:
            score += SAME_YEAR
            reasons.append("same year of birth")
        else:
            score += OTHER_DOB
            reasons.append("another date of birth")
    if person.country and entry.country == person.country:
        score += SAME_COUNTRY
        reasons.append("same country")
    return Hit(
        uid=entry.uid,
        list=entry.list,
        listed_name=shown,
        name_score=round(name_score, 1),
        score=round(min(100.0, max(0.0, score)), 1),
        reasons=tuple(reasons),
    )
