"""`propvisor token create|list|revoke` and `propvisor audit verify` on a real database, called
in-process through `api.cli.main` (and once through the installed entry point)."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from api.auth import Principal, Role, Tokens, hash_token
from api.cli import main
from ledger import audit
from ledger.audit import AuditEntry
from ledger.database import create_engine, upgrade
from ledger.schema import audit_log
from tests.database import run_async

OPERATOR = f"cli:{getpass.getuser()}"


# ---- helpers ------------------------------------------------------------------------------


def create(url: str, capsys: pytest.CaptureFixture[str], role: str, name: str) -> str:
    """A new token's secret, from the first line of `token create`."""
    assert main(["token", "create", "--role", role, "--name", name, "--database-url", url]) == 0
    out = capsys.readouterr().out
    return out.splitlines()[0]


def principal(url: str, token: str) -> Principal | None:
    """Who `token` stands for, asked of a fresh `Tokens` (nothing cached)."""

    async def ask() -> Principal | None:
        engine = create_engine(url)
        try:
            return await Tokens(engine).principal(token)
        finally:
            await engine.dispose()

    return run_async(ask())


def entries(url: str) -> list[AuditEntry]:
    """The audit trail, oldest first."""

    async def read() -> list[AuditEntry]:
        engine = create_engine(url)
        try:
            return await audit.read(engine, select(audit_log), 1_000)
        finally:
            await engine.dispose()

    return run_async(read())[::-1]


def tamper(url: str, statement: object) -> None:
    """Run one UPDATE or DELETE on the (SQLite) audit trail."""

    async def run() -> None:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.execute(statement)  # type: ignore[call-overload]
        finally:
            await engine.dispose()

    run_async(run())


# ---- token create -------------------------------------------------------------------------


def test_token_create_when_run_then_first_stdout_line_is_a_token_that_authenticates(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["token", "create", "--role", "risk", "--name", "alice", "--database-url", database_url]

    code = main(argv)

    out, err = capsys.readouterr()
    assert code == 0
    (token,) = out.splitlines()
    assert token.startswith("pv_")
    found = principal(database_url, token)
    assert found is not None
    assert (found.name, found.role) == ("alice", Role.RISK)
    assert found.token_id in err
    assert "risk" in err
    assert "not shown again" in err
    assert token not in err
    (record,) = entries(database_url)
    assert (record.actor, record.role, record.action) == (OPERATOR, "admin", "token.create")
    assert (record.target_type, record.target_id) == ("token", found.token_id)


def test_token_create_when_database_never_migrated_then_migrates_and_creates(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    token = create(sqlite_url, capsys, "support", "helpdesk")

    found = principal(sqlite_url, token)
    assert found is not None
    assert found.role == Role.SUPPORT


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (["--role", "janitor", "--name", "x"], "--role"),
        (["--role", "risk", "--name", "  "], "--name"),
        (["--name", "x"], "--role"),
    ],
    ids=["unknown-role", "blank-name", "no-role"],
)
def test_token_create_when_arguments_wrong_then_exit_2_naming_the_option(
    extra: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["token", "create", *extra])

    assert exit_info.value.code == 2
    assert option in capsys.readouterr().err


def test_token_create_when_run_through_the_installed_command_then_its_token_authenticates(
    sqlite_url: str,
) -> None:
    command = Path(sys.executable).parent / "propvisor"

    done = subprocess.run(
        [command, "token", "create", "--role", "finance", "--name", "books"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PROPVISOR_DATABASE_URL": sqlite_url, "PATH": "/usr/bin:/bin"},
    )

    assert done.returncode == 0, done.stderr
    (token,) = done.stdout.splitlines()
    found = principal(sqlite_url, token)
    assert found is not None
    assert (found.name, found.role) == ("books", Role.FINANCE)
    assert "not shown again" in done.stderr


# ---- token list and revoke ----------------------------------------------------------------


def test_token_list_when_tokens_exist_then_ids_names_roles_shown_and_never_a_hash_or_token(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = [
        create(database_url, capsys, "risk", "alice"),
        create(database_url, capsys, "admin", "ops bot"),
    ]

    assert main(["token", "list", "--database-url", database_url]) == 0

    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "NAME", "ROLE", "CREATED", "REVOKED"]
    assert len(rows) == 2
    for token in tokens:
        found = principal(database_url, token)
        assert found is not None
        (row,) = [r for r in rows if r.startswith(found.token_id)]
        assert found.name in row
        assert found.role.value in row
        assert row.endswith("-")
        assert hash_token(token) not in out
        assert token not in out


def test_token_revoke_when_live_then_refused_by_a_fresh_lookup_listed_revoked_and_audited(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    token = create(database_url, capsys, "operations", "crm")
    found = principal(database_url, token)
    assert found is not None

    code = main(["token", "revoke", found.token_id, "--database-url", database_url])

    assert code == 0
    assert found.token_id in capsys.readouterr().out
    assert principal(database_url, token) is None
    assert main(["token", "list", "--database-url", database_url]) == 0
    (row,) = capsys.readouterr().out.splitlines()[1:]
    assert not row.endswith("-")
    revoked = entries(database_url)[-1]
    assert (revoked.actor, revoked.role, revoked.action) == (OPERATOR, "admin", "token.revoke")
    assert (revoked.target_type, revoked.target_id) == ("token", found.token_id)
    assert revoked.before == {"name": "crm", "role": "operations", "revoked": False}
    assert revoked.after == {"name": "crm", "role": "operations", "revoked": True}


def test_token_revoke_when_already_revoked_or_unknown_then_exit_1_and_nothing_audited(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    token = create(database_url, capsys, "support", "desk")
    found = principal(database_url, token)
    assert found is not None
    assert main(["token", "revoke", found.token_id, "--database-url", database_url]) == 0
    capsys.readouterr()
    audited = len(entries(database_url))

    again = main(["token", "revoke", found.token_id, "--database-url", database_url])
    again_err = capsys.readouterr().err
    unknown = main(["token", "revoke", "tok_nosuchtoken", "--database-url", database_url])
    unknown_err = capsys.readouterr().err

    assert (again, unknown) == (1, 1)
    assert f"no live token {found.token_id!r}" in again_err
    assert "no live token 'tok_nosuchtoken'" in unknown_err
    assert len(entries(database_url)) == audited


# ---- audit verify -------------------------------------------------------------------------


def test_audit_verify_when_chain_intact_then_exit_0_with_count_and_head(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    create(database_url, capsys, "risk", "alice")
    create(database_url, capsys, "risk", "bob")

    code = main(["audit", "verify", "--database-url", database_url])

    head = entries(database_url)[-1].hash
    assert code == 0
    assert capsys.readouterr().out == f"audit chain intact: 2 records, head {head}\n"


def test_audit_verify_when_a_middle_record_deleted_then_exit_1_naming_it(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("a", "b", "c"):
        create(sqlite_url, capsys, "risk", name)
    tamper(sqlite_url, delete(audit_log).where(audit_log.c.seq == 2))

    code = main(["audit", "verify", "--database-url", sqlite_url])

    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert err.startswith("audit chain broken at record 3: record 2 is missing (found 3)")


def test_audit_verify_when_json_and_record_changed_then_exit_1_with_the_report(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("a", "b"):
        create(sqlite_url, capsys, "risk", name)
    tamper(sqlite_url, update(audit_log).where(audit_log.c.seq == 2).values(actor="mallory"))

    code = main(["audit", "verify", "--json", "--database-url", sqlite_url])

    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert report["ok"] is False
    assert report["broken_at"] == 2
    assert report["problem"] == "record 2 was changed after it was written"


def test_audit_verify_when_database_empty_then_exit_0_with_no_records(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_async(upgrade(sqlite_url))

    assert main(["audit", "verify", "--json", "--database-url", sqlite_url]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 0
