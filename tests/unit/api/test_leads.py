"""Lead routing's pure parts: rule matching, the UTC day, and the strict input models."""

from __future__ import annotations

import pydantic
import pytest

from api.admin.leads import (
    DAY_NS,
    LeadRuleIn,
    SalesRepIn,
    SalesRepPatch,
    day_start,
    language_matches,
    timezone_matches,
)

REP = "rep_0123456789abcdef"


@pytest.mark.parametrize(
    ("languages", "language", "matches"),
    [
        ([], "xx", True),
        (["en", "de"], "de", True),
        (["en"], "EN", True),
        (["en"], "en-GB", True),
        (["en"], "en_US", True),
        (["en"], "es", False),
        (["pt"], "p", False),
    ],
)
def test_language_matches_when_rule_lists_languages_then_primary_subtag_decides(
    languages: list[str], language: str, matches: bool
) -> None:
    assert language_matches(languages, language) is matches


@pytest.mark.parametrize(
    ("timezones", "timezone", "matches"),
    [
        ([], "Asia/Tokyo", True),
        (["Europe/"], "Europe/Berlin", True),
        (["America/"], "America/Argentina/Buenos_Aires", True),
        (["America/Argentina/"], "America/Chicago", False),
        (["America/New_York"], "America/New_York", True),
        (["America/New_York"], "America/New_York2", False),
        (["Europe"], "Europe/Berlin", False),  # no "/": an exact name, not a prefix
        (["Europe/"], "Europe", False),
        (["Europe/", "UTC"], "UTC", True),
    ],
)
def test_timezone_matches_when_prefix_or_exact_then_only_those_zones(
    timezones: list[str], timezone: str, matches: bool
) -> None:
    assert timezone_matches(timezones, timezone) is matches


def test_day_start_when_any_moment_of_a_day_then_its_utc_midnight() -> None:
    midnight = 20_000 * DAY_NS

    assert day_start(midnight) == midnight
    assert day_start(midnight + DAY_NS - 1) == midnight
    assert day_start(midnight - 1) == midnight - DAY_NS


def errors_of(model: type[pydantic.BaseModel], data: dict[str, object]) -> list[str]:
    with pytest.raises(pydantic.ValidationError) as caught:
        model.model_validate(data)
    return [".".join(str(p) for p in error["loc"]) for error in caught.value.errors()]


def test_lead_rule_in_when_valid_then_lists_kept_in_order() -> None:
    rule = LeadRuleIn.model_validate(
        {
            "priority": 0,
            "languages": ["uk", "en"],
            "timezones": ["Europe/Kyiv", "Asia/"],
            "rep_ids": [REP],
        }
    )

    assert (rule.languages, rule.timezones) == (["uk", "en"], ["Europe/Kyiv", "Asia/"])


@pytest.mark.parametrize(
    ("given", "where"),
    [
        ({"languages": ["zz"]}, "languages.0"),
        ({"languages": ["eng"]}, "languages.0"),
        ({"timezones": ["Atlantis/"]}, "timezones.0"),
        ({"timezones": ["Europe/Paris", "europe/paris"]}, "timezones.1"),
        ({"timezones": ["/"]}, "timezones.0"),
        ({"rep_ids": [REP, REP]}, "rep_ids"),
        ({"priority": 1.0}, "priority"),
    ],
)
def test_lead_rule_in_when_entry_invalid_then_error_at_it(
    given: dict[str, object], where: str
) -> None:
    assert errors_of(LeadRuleIn, {"priority": 1, "rep_ids": [REP], **given}) == [where]


def test_sales_rep_in_when_name_has_control_characters_then_refused() -> None:
    data = {"name": "Ana\x00", "email": "ana@firm.example", "daily_capacity": 1}

    assert errors_of(SalesRepIn, data) == ["name"]


def test_sales_rep_patch_when_fields_left_out_then_only_given_ones_set() -> None:
    patch = SalesRepPatch.model_validate({"active": False})

    assert patch.model_dump(exclude_unset=True) == {"active": False}
