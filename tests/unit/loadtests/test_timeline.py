"""The timeline benchmark: its history is what the shards would journal, and a tiny run on
PostgreSQL walks every item once and times each request. No assertion on speed."""

from __future__ import annotations

from collections import Counter

import pytest

from actors.shard_actor import journal_record
from api.admin.timeline import decode_payload, summary
from loadtests import timeline
from tests.database import admin_url

END_NS = 1_780_000_000 * 10**9


def test_history_when_built_then_each_account_gets_its_share_in_time_order() -> None:
    options = timeline.Options(events=1_003, other_events=4_000, seed=3)

    events = timeline.history(options, END_NS)

    per_account = Counter(e.account_id for e in events)  # type: ignore[union-attr]
    mine = {a: per_account[a] for a in timeline.account_ids(timeline.TRADER)}
    assert sorted(mine.values()) == [200, 200, 201, 201, 201]
    assert len(events) == 5_003
    assert [e.ts_ns for e in events] == sorted(e.ts_ns for e in events)
    assert len({e.event_id for e in events}) == len(events)
    assert events == timeline.history(options, END_NS)


def test_history_when_journaled_then_every_row_decodes_to_its_event_with_a_summary() -> None:
    events = timeline.history(timeline.Options(events=2_000, other_events=0), END_NS)

    kinds: Counter[str] = Counter()
    for event in events:
        record = journal_record(event)
        decoded, data = decode_payload(record.payload)
        assert decoded == event
        assert data["type"] == record.kind
        assert summary(decoded)
        kinds[record.kind] += 1
    assert {"deal", "balance", "rule_progressed", "rule_breached", "account_paused"} <= set(kinds)
    assert kinds["deal"] > len(events) // 2


@pytest.mark.postgres
async def test_run_when_tiny_then_the_walk_sees_every_item_once_and_each_request_is_timed() -> None:
    options = timeline.Options(
        events=400, other_events=1_200, requests=3, limit=20, admin_url=admin_url()
    )

    report = await timeline.run(options)

    assert report.walk.ok
    assert report.walk.items == report.walk.expected == 400 + report.audit_records + 5
    assert report.walk.pages == -(-report.walk.items // 20)
    assert report.journal_rows == 1_600
    assert 0 < report.deep_page_offset < report.walk.items
    for latency in (report.first_page_ms, report.deep_page_ms, report.rare_kind_ms):
        assert 0 < latency.p50 <= latency.max
    assert "goal: first and deep page p99 < 100 ms" in timeline.render(report)
