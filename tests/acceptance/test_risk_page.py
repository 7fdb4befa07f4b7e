"""The live risk page (`/risk/`) in a real browser against a running demo.

`propvisor demo` runs as its own process in `tmp_path` (a fresh SQLite database, so migration
0005 seeds the default alert rules, among them "Rule breached"); Debian's chromium
(`/usr/bin/chromium`, headless, driven by Playwright) opens the page. The main page reaches the
demo through a byte-for-byte TCP relay in this test, so the test can cut the page's connections
and see it resume the stream where it left off.

The screenshot is written to `risk-page.png` in the test's `tmp_path` and copied to
`var/artifacts/risk-page.png` under the repository root (a stable path, overwritten by each run);
when the main page's checks fail, the page as it was goes to `risk-page-failed.png` in both.
The demo's startup (Ray, the actors) takes most of the test's time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from playwright.async_api import Browser, Page, async_playwright, expect

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARTIFACT = ROOT / "var" / "artifacts" / "risk-page.png"
MONEY = re.compile(r"^-?\d{1,3}(,\d{3})*\.\d{2}$")
SIGNED_MONEY = re.compile(r"^[+-]?\d{1,3}(,\d{3})*\.\d{2}$")
NOTE = "acknowledged on the live risk page"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Demo:
    url: str  # http://host:port
    token: str  # the run's admin token
    run_id: str  # the prefix of its account ids


async def _read_banner(stdout: asyncio.StreamReader) -> Demo:
    """The demo's address, token and run id, from the lines it prints once it serves."""
    seen: list[str] = []
    token = url = run_id = None
    while run_id is None:
        line = (await stdout.readline()).decode()
        assert line, "the demo exited before serving:\n" + "".join(seen)
        seen.append(line)
        if found := re.search(r"admin token for this run: (pv_[\w-]+)\)", line):
            token = found.group(1)
        if found := re.search(r"Risk page:\s+(http://[\d.]+:\d+)/risk/", line):
            url = found.group(1)
        if found := re.search(r"/api/v1/accounts/(\w+)-00001", line):
            run_id = found.group(1)
    assert token is not None, "".join(seen)
    assert url is not None, "".join(seen)
    return Demo(url=url, token=token, run_id=run_id)


async def _drain(stdout: asyncio.StreamReader) -> None:
    while await stdout.readline():
        pass


@contextlib.asynccontextmanager
async def running_demo(workdir: Path) -> AsyncIterator[Demo]:
    """`propvisor demo` until the block ends, then SIGINT (its clean stop) and a wait."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROPVISOR_")}
    env["PROPVISOR_RECKLESS_FRACTION"] = "0.2"  # breaches within seconds
    command = [
        str(Path(sys.executable).with_name("propvisor")), "demo",
        "--accounts", "200", "--shards", "1", "--duration", "300",
        "--http-port", "0", "--dashboard-port", str(free_port()),
    ]  # fmt: skip
    with (workdir / "demo.err").open("wb") as errors:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=workdir, env=env, stdout=asyncio.subprocess.PIPE, stderr=errors
        )
        assert process.stdout is not None
        drain: asyncio.Task[None] | None = None
        try:
            demo = await asyncio.wait_for(_read_banner(process.stdout), timeout=150)
            drain = asyncio.create_task(_drain(process.stdout))
            yield demo
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), timeout=60)
            except TimeoutError:
                process.kill()
                await process.wait()
            if drain is not None:
                drain.cancel()
                await asyncio.gather(drain, return_exceptions=True)


class Relay:
    """A TCP relay to the demo: bytes pass unchanged; `cut()` drops every open connection."""

    def __init__(self, target: str) -> None:
        host, _, port = target.removeprefix("http://").partition(":")
        self.target = (host, int(port))
        self.open: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.open |= {writer, up_writer}
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
            )
        finally:
            for side in (writer, up_writer):
                self.open.discard(side)
                side.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.transport.abort()

    def cut(self) -> int:
        cut = len(self.open)
        for writer in list(self.open):
            writer.transport.abort()
        return cut

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def _acknowledged(demo: Demo, account_id: str) -> list[dict[str, object]]:
    headers = {"Authorization": f"Bearer {demo.token}"}
    query = {"status": "acknowledged", "account_id": account_id, "kind": "breach"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{demo.url}/api/v1/alerts", params=query, headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        body = await response.json()
    items: list[dict[str, object]] = body["items"]
    return items


def _watch_errors(page: Page, errors: list[str]) -> None:
    page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
    page.on(
        "console",
        lambda message: (
            errors.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )


async def _check_accounts(page: Page, demo: Demo) -> None:
    rows = page.get_by_test_id("account-row")
    await expect(rows.first).to_be_visible(timeout=20_000)
    # One read of the whole table: it is redrawn as rows change.
    shown = await rows.evaluate_all(
        "rows => rows.map(r => [r.dataset.accountId, r.dataset.used, r.cells[4].innerText])"
    )
    assert 1 <= len(shown) <= 25
    ids = [account for account, _, _ in shown]
    assert all(re.fullmatch(rf"{demo.run_id}-\d{{5}}", account) for account in ids), ids
    levels = [float(used) for _, used, _ in shown if used]
    assert levels, "no account shows how much of its limits it used"
    assert levels == sorted(levels, reverse=True), "accounts are not nearest-limit first"
    assert all(MONEY.match(equity.split()[0]) for _, _, equity in shown), shown


async def _check_exposure(page: Page) -> None:
    lines = page.get_by_test_id("exposure-currency-row")
    await expect(lines.first).to_be_visible(timeout=20_000)
    notional = (await lines.first.locator("td").nth(2).inner_text()).strip()
    assert SIGNED_MONEY.match(notional), notional
    symbols = page.get_by_test_id("exposure-symbol-row")
    assert await symbols.count() >= 1
    await expect(page.get_by_test_id("exposure-asof")).to_contain_text("as of")


async def _check_resume(page: Page, relay: Relay) -> None:
    """A dropped connection resumes from the last message the page applied."""
    status = page.get_by_test_id("status")
    before = int(await status.get_attribute("data-seq") or 0)
    assert relay.cut() >= 2
    detail = page.get_by_test_id("status-detail")
    await expect(detail).to_have_text(re.compile(r"^resumed after seq \d+$"), timeout=15_000)
    await expect(status).to_have_attribute("data-state", "connected")
    resumed = re.fullmatch(r"resumed after seq (\d+)", await detail.inner_text())
    assert resumed is not None
    assert int(resumed.group(1)) >= before


async def _acknowledge_a_breach(page: Page, demo: Demo) -> None:
    breach = page.locator('[data-testid="alert"][data-kind="breach"]')
    await expect(breach.first).to_be_visible(timeout=45_000)
    alert_id = await breach.first.get_attribute("data-alert-id")
    alert = page.locator(f'[data-testid="alert"][data-alert-id="{alert_id}"]')
    account_id = await alert.get_attribute("data-account-id")
    assert alert_id
    assert account_id
    assert account_id.startswith(demo.run_id)
    await expect(alert.get_by_test_id("alert-message")).to_contain_text(account_id)
    await expect(
        page.locator(f'[data-testid="breach-row"][data-account-id="{account_id}"]').first
    ).to_be_visible()
    await alert.get_by_test_id("alert-ack").click()
    # The pointer is over the feed, which holds still: the stream's alert_ack marks the alert;
    # it leaves once the pointer does.
    try:
        await expect(alert).to_have_class(re.compile(r"\bgone\b"), timeout=15_000)
    except AssertionError:
        problem = await alert.get_by_test_id("alert-error").inner_text()
        raise AssertionError(f"the alert was not acknowledged; the page says {problem!r}") from None
    await expect(alert.get_by_test_id("alert-ack")).to_have_text("Acknowledged")
    await page.mouse.move(0, 0)
    await expect(alert).to_have_count(0, timeout=5_000)
    acknowledged = {str(a["id"]): a for a in await _acknowledged(demo, account_id)}
    assert alert_id in acknowledged, acknowledged
    assert acknowledged[alert_id]["acknowledged_by"] == f"demo-{demo.run_id}"
    assert acknowledged[alert_id]["note"] == NOTE


async def _main_page(browser: Browser, demo: Demo, relay: Relay, shot: Path) -> None:
    context = await browser.new_context(viewport={"width": 1366, "height": 768})
    page = await context.new_page()
    try:
        await _main_flow(page, demo, relay, shot)
    except BaseException:
        failed = shot.with_name("risk-page-failed.png")
        await page.screenshot(path=failed)
        _keep(failed)
        raise
    finally:
        await context.close()


async def _main_flow(page: Page, demo: Demo, relay: Relay, shot: Path) -> None:
    errors: list[str] = []
    _watch_errors(page, errors)
    await page.goto(f"{relay.url}/risk/#token={demo.token}")
    status = page.get_by_test_id("status")
    await expect(status).to_have_attribute("data-state", "connected", timeout=30_000)
    assert "token" not in page.url, "the token stayed in the address bar"
    assert await page.evaluate("sessionStorage.length") == 1
    await expect(page.get_by_test_id("status-currency")).to_have_text("USD")
    await _check_accounts(page, demo)
    await _check_exposure(page)
    await _check_resume(page, relay)
    await _acknowledge_a_breach(page, demo)
    await expect(page.get_by_test_id("breach-row").first).to_be_visible()
    await expect(page.get_by_test_id("status-lag")).to_have_text(re.compile(r"^\d+ ms$"))
    await page.screenshot(path=shot)
    _keep(shot)
    assert errors == [], errors


async def _typed_token(browser: Browser, demo: Demo) -> None:
    """Without a token the page waits for one; a wrong one is refused, the right one works."""
    context = await browser.new_context(viewport={"width": 1366, "height": 768})
    page = await context.new_page()
    await page.goto(f"{demo.url}/risk/")
    status = page.get_by_test_id("status")
    await expect(status).to_have_attribute("data-state", "idle")
    await page.get_by_test_id("token-input").fill("pv_not-a-token")
    await page.get_by_test_id("token-submit").click()
    await expect(status).to_have_attribute("data-state", "unauthorized", timeout=10_000)
    assert await page.get_by_test_id("account-row").count() == 0
    await page.get_by_test_id("token-input").fill(demo.token)
    await page.get_by_test_id("token-submit").click()
    await expect(status).to_have_attribute("data-state", "connected", timeout=10_000)
    await expect(page.get_by_test_id("account-row").first).to_be_visible(timeout=10_000)
    await context.close()


def _chromium() -> str:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: `make browser` installs it"
    return CHROMIUM


def _keep(shot: Path) -> None:
    """A copy of a screenshot under var/artifacts/ (the same name as in tmp_path)."""
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, ARTIFACT.with_name(shot.name))


async def test_risk_page_shows_the_live_risk_and_acknowledges_an_alert(tmp_path: Path) -> None:
    shot = tmp_path / "risk-page.png"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=_chromium(), headless=True)
        try:
            async with running_demo(tmp_path) as demo:
                relay = Relay(demo.url)
                await relay.start()
                try:
                    await _main_page(browser, demo, relay, shot)
                    await _typed_token(browser, demo)
                finally:
                    await relay.close()
        finally:
            await browser.close()
