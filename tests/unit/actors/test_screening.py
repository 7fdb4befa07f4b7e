"""Sanctions and PEP screening against the synthetic lists in `deploy/kyc/lists/`: list formats,
name matching (exact, reordered, accented, transliterated, aliases) and the score adjustments."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.screening import (
    THRESHOLD,
    ListEntry,
    ListError,
    Person,
    Screener,
    country_code,
    load_ofac,
    load_simple,
    normalise,
)

LISTS = Path(__file__).resolve().parents[3] / "deploy" / "kyc" / "lists"
VARLAMOV = "SANCTIONS-TEST:aleksandr-petrovich-varlamov-1968-03-14"
JOZEF = "PEP:jozef-wisniowski-kral-1975-11-02"
TARIQ = "SANCTIONS-TEST:tariq-al-nasseri-1970-06-30"


@pytest.fixture(scope="module")
def screener() -> Screener:
    simple = load_simple((LISTS / "sample.csv").read_text(encoding="utf-8"))
    ofac = load_ofac(
        (LISTS / "ofac" / "sdn.csv").read_text(encoding="utf-8"),
        (LISTS / "ofac" / "alt.csv").read_text(encoding="utf-8"),
    )
    return Screener([*simple, *ofac])


def best(screener: Screener, name: str, dob: str | None = None, country: str | None = None) -> str:
    hits = screener.screen(Person(trader_id="t", name=name, dob=dob, country=country))
    return hits[0].uid if hits else ""


def test_normalise_when_accented_or_punctuated_then_plain_words() -> None:
    assert normalise("Józef Wiśniowski-Kral") == "jozef wisniowski kral"
    assert normalise("KORVALENKO, Ilya") == "korvalenko ilya"
    assert normalise("Оксана Гребенюк") == "oksana grebenyuk"


@pytest.mark.parametrize(
    ("name", "uid"),
    [
        (
            "Aleksandr Petrovich Varlamov",
            VARLAMOV,
        ),  # exact
        (
            "Varlamov Aleksandr Petrovich",
            VARLAMOV,
        ),  # reordered
        (
            "Aleksandr Varlamov",
            VARLAMOV,
        ),  # no middle name
        ("Jozef Wisniowski Kral", JOZEF),  # accents dropped
        ("Józef Wiśniowski-Kral", JOZEF),  # accents kept
        (
            "Александр Варламов",
            VARLAMOV,
        ),  # Cyrillic, transliterated
        ("Ilya Sergeyevich Korvalenko", "OFAC-SDN:36"),  # OFAC `SURNAME, Given` order
        ("Kareem Haddawi", "OFAC-SDN:412"),  # an OFAC alias
        ("Tareq al Nasiri", TARIQ),  # a simple-CSV alias
        ("Silvana Marqueti", "OFAC-SDN:306"),  # one letter off
    ],
)
def test_screen_when_the_name_is_listed_in_any_spelling_then_a_hit(
    screener: Screener, name: str, uid: str
) -> None:
    assert best(screener, name) == uid


def test_screen_when_a_typo_changes_the_word_order_then_still_a_hit(screener: Screener) -> None:
    # "corvalenko" now sorts before "ilya": only the shared word finds the pair.
    person = Person(trader_id="t", name="Ilya Corvalenko", dob="1972-01-12", country="RU")

    assert [h.uid for h in screener.screen(person)] == ["OFAC-SDN:36"]


def test_load_when_an_ofac_file_ends_with_its_end_of_file_byte_then_read() -> None:
    sdn = (LISTS / "ofac" / "sdn.csv").read_text(encoding="utf-8") + "\x1a"

    assert len(load_ofac(sdn)) == 3


def test_simple_list_ids_when_a_row_is_inserted_above_then_unchanged() -> None:
    header = "name,aliases,date_of_birth,country,list\n"
    row = "Mirela Dragomirescu,,1981,RO,PEP\n"
    alone = load_simple(header + row)
    after_insert = load_simple(header + "Anna Berg,,1990-01-01,SE,PEP\n" + row)

    assert alone[0].uid == after_insert[1].uid == "PEP:mirela-dragomirescu-1981"


def test_screen_when_the_name_is_not_listed_then_no_hit(screener: Screener) -> None:
    assert best(screener, "Margaret Ellison") == ""
    assert best(screener, "Aleksandra Varga") == ""
    assert best(screener, "") == ""


def test_screen_when_the_date_of_birth_differs_then_below_the_threshold(screener: Screener) -> None:
    same = screener.screen(Person(trader_id="t", name="Mirela Dragomirescu", dob="1981-05-05"))
    other = Person(trader_id="t", name="Mirela Dragomirescu", dob="1992-05-05")

    assert same[0].score == 100.0  # the list has only the year: +5, capped
    assert "same year of birth" in same[0].reasons
    assert screener.screen(other) == []  # 100 - 25 = 75 < 85
    assert THRESHOLD > 75


def test_screen_when_the_date_and_country_agree_then_scored_up(screener: Screener) -> None:
    name = "Ilyas Korvalenka"  # two letters off: not enough on its own
    hits = screener.screen(Person(trader_id="t", name=name, dob="1972-01-12", country="RU"))

    assert best(screener, name) == ""
    assert hits[0].uid == "OFAC-SDN:36"
    assert hits[0].name_score < THRESHOLD
    assert hits[0].score == round(hits[0].name_score + 10 + 5, 1)
    assert set(hits[0].reasons) >= {"same date of birth", "same country"}


def test_load_ofac_when_read_then_individuals_with_dates_nationality_and_aliases(
    screener: Screener,
) -> None:
    entries = {e.uid: e for e in screener.entries}

    assert "OFAC-SDN:173" not in entries  # an entity, not a person
    korvalenko = entries["OFAC-SDN:36"]
    assert korvalenko.dobs == ("1972-01-12", "1973")
    assert korvalenko.country == "RU"
    assert korvalenko.aliases == ("KORVALENKO, Ilia", "KARVALENKO, Ilya")
    assert korvalenko.program == "TEST-PROGRAM"
    assert entries["OFAC-SDN:412"].country == "IR"  # `citizen Iran`
    assert entries["OFAC-SDN:306"].dobs == ("1978",)


def test_load_simple_when_malformed_then_the_line_and_field_are_named() -> None:
    with pytest.raises(ListError, match="header"):
        load_simple("full_name,dob\nA,1970\n")
    with pytest.raises(ListError, match=r"list.csv:3: date_of_birth '12/01/1970'"):
        load_simple(
            "name,aliases,date_of_birth,country,list\nA B,,1970,,PEP\nC D,,12/01/1970,,PEP\n"
        )
    with pytest.raises(ListError, match=r"list.csv:2: name is empty"):
        load_simple("name,aliases,date_of_birth,country,list\n,,1970,,PEP\n")
    with pytest.raises(ListError, match="3 columns, the SDN layout has 12"):
        load_ofac('1,"A, B","individual"\n')


def test_country_code_when_a_name_or_code_then_alpha_2() -> None:
    assert country_code("Russia") == "RU"
    assert country_code("gb") == "GB"
    assert country_code("Atlantis") is None
    assert country_code("") is None


def test_screener_when_an_entry_has_aliases_then_one_hit_per_entry() -> None:
    entry = ListEntry(uid="L:1", list="L", name="Anna Berg", aliases=("Anna Bergh", "Ana Berg"))
    hits = Screener([entry]).screen(Person(trader_id="t", name="Anna Berg"))

    assert [h.uid for h in hits] == ["L:1"]
    assert hits[0].listed_name == "Anna Berg"
