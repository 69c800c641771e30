"""`umsg import`: the corpus, mbox and Maildir, the JSON summary, and importing twice."""

from __future__ import annotations

import json
import mailbox
from pathlib import Path
from typing import Any

from serve_proc import db_env, run_umsg
from sqlalchemy import func, select

from storage.models import Message

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "email" / "imap_tools"


def _summary(out: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return data


async def test_corpus_import_twice(db_config: dict[str, object], tmp_path: Path, core: Any) -> None:
    env = db_env(db_config)
    args = ["import", "--json", "--data-dir", str(tmp_path / "data"), str(CORPUS)]
    status, out, err = await run_umsg(args, env, seconds=180)
    assert status == 0, err
    first = _summary(out)
    assert first["total"] == 113
    assert first["ingested"] + first["duplicates"] + len(first["rejected"]) == 113
    assert first["ingested"] >= 100
    for r in first["rejected"]:
        assert r["path"].startswith(str(CORPUS)) and r["reason"], r
    # the one message with no sender address at all
    assert [Path(r["path"]).name for r in first["rejected"]] == ["bad_encoded_subject.eml"]
    assert "113/113" in err  # the progress bar went to stderr
    async with core.readers() as s:
        stored = await s.scalar(select(func.count()).select_from(Message).where(Message.channel == "email"))
    assert stored == first["ingested"]

    status, out, err = await run_umsg(args, env, seconds=180)
    assert status == 0, err
    second = _summary(out)
    assert second["ingested"] == 0
    assert second["duplicates"] == first["ingested"] + first["duplicates"]
    assert second["rejected"] == first["rejected"]


def _mail(n: int) -> bytes:
    return (f"From: Customer {n} <c{n}@example.com>\r\nTo: support@acme.test\r\nSubject: order {n}\r\n"
            f"Message-ID: <order-{n}@example.com>\r\n\r\nWhere is order {n}?\r\n").encode()


async def test_mbox_maildir_and_eml(db_config: dict[str, object], tmp_path: Path) -> None:
    box = mailbox.mbox(tmp_path / "archive.mbox")
    for n in range(3):
        box.add(_mail(n))
    box.flush()
    box.close()
    md = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for n in range(3, 5):
        md.add(_mail(n))
    (tmp_path / "one.eml").write_bytes(_mail(5))
    (tmp_path / "junk.eml").write_bytes(b"this is not mail\r\n")
    paths = [str(tmp_path / "archive.mbox"), str(tmp_path / "Maildir"), str(tmp_path / "one.eml"),
             str(tmp_path / "junk.eml")]
    env = db_env(db_config)
    status, out, err = await run_umsg(["import", "--json", "--data-dir", str(tmp_path / "data"), *paths], env)
    assert status == 0, err
    summary = _summary(out)
    assert summary["total"] == 7 and summary["ingested"] == 6 and summary["duplicates"] == 0
    reason = "no sender address (no usable From, Sender or envelope sender)"
    assert summary["rejected"] == [{"path": str(tmp_path / "junk.eml"), "reason": reason}]
    status, out, _ = await run_umsg(["import", "--data-dir", str(tmp_path / "data"), *paths], env)
    assert status == 0
    assert out.startswith("7 messages: 0 new, 6 already stored, 1 rejected")


async def test_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    status, _out, err = await run_umsg(["import", "--data-dir", str(tmp_path), str(tmp_path / "nope")], {})
    assert status == 2 and "does not exist" in err
