"""The worker's queries (history, positions, account state): after every command, through the
same rate limit, shared when asked twice, retried on 429/5xx, a refusal answered at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from bridge.codec import encode_batch
from bridge.commands import DisableTrading
from bridge.platform import AccountState, NotFound, RateLimited, Refused, Unavailable
from tests.unit.bridge.test_worker_commands import ScriptedPlatform, provision, started, stop


def state(account_id: str) -> AccountState:
    return AccountState(
        account_id=account_id,
        currency="USD",
        balance_cents=10_000_000,
        credit_cents=0,
        equity_cents=9_990_000,
        enabled=True,
    )


class AskedPlatform(ScriptedPlatform):
    """Records every request, commands and queries, in the order it received them; a query
    raises the scripted query failures in turn first."""

    def __init__(self, query_failures: Sequence[Exception] = (), delay_s: float = 0.0) -> None:
        super().__init__(delay_s=delay_s)
        self.query_failures = list(query_failures)
        self.log: list[str] = []

    async def execute(self, commands: Sequence[Any]) -> list[int]:
        self.log.extend(c.command_id for c in commands)
        return await super().execute(commands)

    async def account_state(self, account_id: str) -> AccountState:
        self.log.append(f"state:{account_id}")
        await asyncio.sleep(self.delay_s)
        if self.query_failures:
            raise self.query_failures.pop(0)
        return state(account_id)

    async def history(self, account_id: str, since_ns: int) -> list[bytes]:
        self.log.append(f"history:{account_id}:{since_ns}")
        return [b'{"type":"balance"}']


async def test_query_when_commands_wait_then_it_goes_after_them() -> None:
    platform = AskedPlatform()
    worker = await started(platform, requests_per_second=20.0, burst=1)
    try:
        await worker.limiter.acquire()  # the bucket is empty: everything below queues
        asked = asyncio.ensure_future(worker.account_state("a"))
        await asyncio.sleep(0.01)  # the sender holds the query, waiting for a token
        freeze = DisableTrading(command_id="freeze:b", account_id="b", reason="x", caused_by="e")
        await worker.submit(encode_batch([freeze]))
        opened = asyncio.ensure_future(worker.execute(encode_batch([provision("c")])))
        assert await asked == state("a")
        await opened
    finally:
        stop(worker)
    # The freeze and the provisioning, asked later, shared the first request; the query waited.
    assert platform.log == ["freeze:b", "provision:c", "state:a"]


async def test_query_when_in_flight_then_worker_is_not_idle_and_a_new_caller_asks_anew() -> None:
    platform = AskedPlatform(delay_s=0.05)
    worker = await started(platform)
    try:
        first = asyncio.ensure_future(worker.account_state("a"))
        await asyncio.sleep(0.02)  # sent, not answered
        assert not await worker.idle()
        second = asyncio.ensure_future(worker.account_state("a"))
        assert await first == await second == state("a")
        assert await worker.idle()
    finally:
        stop(worker)
    assert platform.log == ["state:a", "state:a"]  # the later question got a later answer


async def test_query_when_every_caller_gives_up_before_it_is_sent_then_it_is_not_sent() -> None:
    platform = AskedPlatform()
    worker = await started(platform, requests_per_second=20.0, burst=1)
    try:
        await worker.limiter.acquire()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(worker.account_state("a"), timeout=0.01)
        await asyncio.sleep(0.1)  # a token came: the sender passed over it
        assert await worker.idle()
    finally:
        stop(worker)
    assert platform.log == []


async def test_query_when_asked_twice_while_waiting_then_one_request_answers_both() -> None:
    platform = AskedPlatform(delay_s=0.02)
    worker = await started(platform)
    try:
        first, second, other = await asyncio.gather(
            worker.account_state("a"), worker.account_state("a"), worker.history("a", 5)
        )
    finally:
        stop(worker)
    assert first == second == state("a")
    assert other == [b'{"type":"balance"}']
    assert platform.log == ["state:a", "history:a:5"]
    stats = await worker.stats()
    assert (stats.queries, stats.queries_coalesced) == (2, 1)


async def test_query_when_rate_limited_or_unavailable_then_retried_until_answered() -> None:
    platform = AskedPlatform([RateLimited("429", retry_after_s=0.01), Unavailable("503")])
    worker = await started(platform)
    try:
        answer = await worker.account_state("a")
    finally:
        stop(worker)
    assert answer == state("a")
    assert platform.log == ["state:a"] * 3
    stats = await worker.stats()
    assert (stats.query_failures, stats.rate_limited, stats.queries) == (2, 1, 1)
    assert await worker.idle()


async def test_query_when_refused_then_the_caller_gets_the_refusal_and_it_is_not_retried() -> None:
    platform = AskedPlatform([NotFound("no account 'ghost'")])
    worker = await started(platform)
    try:
        with pytest.raises(NotFound, match="ghost"):
            await worker.account_state("ghost")
        assert await worker.account_state("ghost") == state("ghost")  # asked again: new request
    finally:
        stop(worker)
    assert platform.log == ["state:ghost"] * 2
    assert (await worker.stats()).circuit == "closed"


async def test_query_when_credentials_are_refused_then_caller_told_and_circuit_counts_it() -> None:
    platform = AskedPlatform([Refused("401 session expired")])
    worker = await started(platform)
    try:
        with pytest.raises(Refused, match="session expired"):
            await worker.account_state("a")
    finally:
        stop(worker)
    assert worker.breaker.failures == 1
    assert (await worker.stats()).refused == 1


class BatchPlatform(AskedPlatform):
    """Has a batch call for account states; knows only the accounts in `known`."""

    def __init__(self, known: set[str], query_failures: Sequence[Exception] = ()) -> None:
        super().__init__(query_failures)
        self.known = known

    async def account_states(self, account_ids: Sequence[str]) -> list[AccountState]:
        self.log.append("states:" + ",".join(account_ids))
        if self.query_failures:
            raise self.query_failures.pop(0)
        return [state(a) for a in account_ids if a in self.known]


async def test_states_when_platform_has_a_batch_call_then_waiting_ones_share_one_request() -> None:
    platform = BatchPlatform(known={"a", "b", "c", "d"})
    worker = await started(platform, requests_per_second=20.0, burst=1, states_per_request=3)
    try:
        await worker.limiter.acquire()  # the bucket is empty: everything below queues
        asked = [asyncio.ensure_future(worker.account_state(a)) for a in "abcdx"]
        history = asyncio.ensure_future(worker.history("e", 0))
        answers = await asyncio.gather(*asked, history, return_exceptions=True)
    finally:
        stop(worker)
    # At most 3 per request, in the order asked; the history query keeps its own request.
    assert platform.log == ["states:a,b,c", "states:d,x", "history:e:0"]
    assert answers[:4] == [state(a) for a in "abcd"]
    assert isinstance(answers[4], NotFound)  # left out of the batch: no such account
    assert "'x'" in str(answers[4])
    assert worker.unsent == 0
    stats = await worker.stats()
    assert (stats.queries, stats.query_requests) == (6, 3)


async def states_of_a_and_b(platform: AskedPlatform) -> Any:
    """Ask for accounts a and b while the token bucket is empty (so both wait together);
    assert both answers; returns the stopped worker."""
    worker = await started(platform, requests_per_second=20.0, burst=1)
    try:
        await worker.limiter.acquire()
        asked = [asyncio.ensure_future(worker.account_state(a)) for a in "ab"]
        assert await asyncio.gather(*asked) == [state("a"), state("b")]
        assert worker.unsent == 0
        assert await worker.idle()
    finally:
        stop(worker)
    return worker


async def test_states_when_a_batch_request_fails_then_every_query_in_it_is_retried() -> None:
    platform = BatchPlatform(known={"a", "b"}, query_failures=[Unavailable("503")])
    worker = await states_of_a_and_b(platform)
    assert platform.log == ["states:a,b", "states:a,b"]
    assert (await worker.stats()).query_failures == 2


async def test_states_when_platform_has_no_batch_call_then_one_request_each() -> None:
    platform = AskedPlatform()
    await states_of_a_and_b(platform)
    assert platform.log == ["state:a", "state:b"]


async def test_account_states_when_asked_together_then_one_batch_and_refusals_in_place() -> None:
    platform = BatchPlatform(known={"a", "c"})
    worker = await started(platform)
    try:
        answers = await worker.account_states(["a", "x", "c"])
    finally:
        stop(worker)
    assert platform.log == ["states:a,x,c"]  # asked at once, so in one request
    assert answers[0] == state("a")
    assert isinstance(answers[1], NotFound)
    assert answers[2] == state("c")


async def test_states_when_the_batch_call_is_refused_as_a_whole_then_asked_one_by_one() -> None:
    # An older server without the batch call answers 404: not every account is missing.
    platform = BatchPlatform(known={"a", "b"}, query_failures=[NotFound("404: no such route")])
    await states_of_a_and_b(platform)
    assert platform.log == ["states:a,b", "state:a", "state:b"]
