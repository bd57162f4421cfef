"""A database written by the release before conversations were trees (tests/fixtures/release-db,
made by its make_release_db.py on commit 1c399be) opened by this one: migration 6 and the
backfill turn every conversation into a tree with its superseded messages as the branches they
were, and the clients go on as if nothing happened."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import httpx
import pytest

from tests import storage

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "release-db"
MODEL = "gpt-4o-mini"


def _upgraded(tmp_path: Path, database_url: str) -> str:
    if not database_url.startswith("sqlite"):
        pytest.skip("the release's database is a SQLite file; the Postgres migration and "
                    "backfill are tested in tests/store")
    path = tmp_path / "release.db"
    shutil.copy(FIXTURE / "memproxy.db", path)
    return f"sqlite:///{path}"


def _rows(url: str, conversation: str) -> list[tuple]:
    db = sqlite3.connect(url.split("///", 1)[1])
    try:
        return db.execute(
            "SELECT m.seq, m.parent_seq, m.path_hash, m.superseded, m.summary IS NOT NULL"
            " FROM messages m JOIN conversations c ON c.pk = m.conversation_pk"
            " WHERE c.conversation_id = ? ORDER BY m.seq", (conversation,)).fetchall()
    finally:
        db.close()


def _visible_sent(fake_upstream) -> list[tuple[str, str]]:
    return [(m["role"], m.get("content") or "") for m in fake_upstream.last.json["messages"]
            if m["role"] != "system"]


def test_an_old_database_becomes_trees_and_a_chat_ui_switches_back_to_an_old_branch(
        make_proxy, fake_upstream, tmp_path, database_url):
    url = _upgraded(tmp_path, database_url)
    client = json.loads((FIXTURE / "client.json").read_text())
    proxy = make_proxy({"database": {"url": url},
                        "models": {MODEL: {"context_window": 3000}}})
    # the chat: Oslo asked, its reply regenerated, then message 3 edited to Bergen
    trip = _rows(url, "trip")
    assert [(seq, parent, superseded) for seq, parent, _, superseded, _ in trip] == [
        (1, 0, 0), (2, 1, 0), (3, 2, 1), (4, 3, 1), (5, 3, 1), (6, 2, 0), (7, 6, 0)]
    assert all(path for _, _, path, _, _ in trip)
    db = sqlite3.connect(url.split("///", 1)[1])
    assert db.execute("SELECT count(*) FROM tree_backfill").fetchone()[0] == 0
    db.close()

    # the UI switches back to the Oslo branch (`< 1/2 >`) and goes on there
    headers = {"X-Agent-Id": "ada", "X-OpenWebUI-Chat-Id": "trip"}
    sent = [*client["oslo"], {"role": "user", "content": "In June"}]
    r = httpx.post(f"{proxy.base_url}/chat/completions", headers=headers, timeout=30,
                   json={"model": MODEL, "messages": sent})
    assert r.status_code == 200, r.text
    assert _visible_sent(fake_upstream) == [(m["role"], m["content"]) for m in sent]
    reply = r.json()["choices"][0]["message"]["content"]
    assert storage.roles_and_texts(storage.transcript(url, "ada", "trip")) == [
        *[(m["role"], m["content"]) for m in sent], ("assistant", reply)]
    everything = storage.transcript(url, "ada", "trip", include_superseded=True)
    assert sum(m.data.get("content") == "Plan a trip to Oslo" for m in everything) == 1


def test_an_old_paged_out_conversation_keeps_its_summary_on_its_path(
        make_proxy, fake_upstream, tmp_path, database_url):
    url = _upgraded(tmp_path, database_url)
    proxy = make_proxy({"database": {"url": url},
                        "models": {MODEL: {"context_window": 3000}}})
    notes = _rows(url, "notes")
    evicted_through = max(seq for seq, *_ in notes[:-2])
    assert [seq for seq, _, _, _, has_summary in notes if has_summary] == [evicted_through]
    headers = {"X-Agent-Id": "ada", "X-Conversation-Id": "notes"}
    r = httpx.post(f"{proxy.base_url}/chat/completions", headers=headers, timeout=30,
                   json={"model": MODEL, "messages": [{"role": "user", "content": "And?"}]})
    assert r.status_code == 200, r.text
    prompt = json.dumps(fake_upstream.last.json["messages"])
    db = sqlite3.connect(url.split("///", 1)[1])
    summary = db.execute("SELECT summary FROM conversations WHERE conversation_id = 'notes'"
                         ).fetchone()[0]
    db.close()
    assert summary and json.dumps(summary)[1:200] in prompt  # the old summary, in the prompt
