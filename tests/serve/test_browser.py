"""The page of `rankloop serve` in a real browser (Playwright driving Debian's chromium).

Starts the real server on a small SciFact slice with two BM25 pipelines, searches, opens the
second result with the keyboard and checks the SQLite click log; then interleaves the two
pipelines and checks that the impression records its teams. With RANKLOOP_SCREENSHOT=1 the
results view is saved to docs/serve.png. Playwright never downloads a browser here."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect, sync_playwright = sync_api.expect, sync_api.sync_playwright

_REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
# A document whose title is markup: the page must show it as text and never run it.
TRAP_ID = "trap-doc"
TRAP_TITLE = (
    'Trap <script>window.__pwned = 1</script> <img src=x onerror="window.__pwned = 2"> <b>bold</b>'
)
START_TIMEOUT = 120.0
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium (Playwright must never download a browser), or skip."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and os.access("/usr/bin/chromium", os.X_OK):
        path = "/usr/bin/chromium"
    if path is None:
        pytest.skip("no chromium executable (apt install chromium)")
    return path


@pytest.fixture(scope="module")
def served_beir(tmp_path_factory: pytest.TempPathFactory, scifact_dir: Path) -> tuple[Path, list[str]]:
    """A BEIR folder of 120 SciFact documents (those judged for 8 test queries, then filler)
    plus a trap document matching the first query; returns (folder, the 8 query texts)."""
    from rankloop.data.beir import load_beir

    split = load_beir(scifact_dir, split="test")
    qids = split.queries.ids[:8]
    judged = list(dict.fromkeys(d for q in qids for d in split.qrels[q]))
    filler = [d for d in split.corpus.ids if d not in set(judged)][: 120 - len(judged)]
    docs = split.corpus.subset(judged + filler)
    text = dict(split.queries.items())
    query = text[qids[0]]
    out = tmp_path_factory.mktemp("serve") / "scifact-serve"
    (out / "qrels").mkdir(parents=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for i, t, x in zip(docs.ids, docs.titles, docs.texts):
            fh.write(json.dumps({"_id": i, "title": t, "text": x}) + "\n")
        fh.write(
            json.dumps({"_id": TRAP_ID, "title": TRAP_TITLE, "text": f"{query} {query}"}) + "\n"
        )
    with open(out / "queries.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"_id": q, "text": text[q]}) + "\n" for q in qids)
    with open(out / "qrels" / "test.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        fh.writelines(f"{q}\t{d}\t{g}\n" for q in qids for d, g in split.qrels[q].items())
    return out, [text[q] for q in qids]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(served_beir: tuple[Path, list[str]], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`rankloop serve` as a subprocess: yields (base URL, click-log path); always stopped."""
    folder, _ = served_beir
    port, log = _free_port(), tmp_path / "clicks.db"
    cmd = [sys.executable, "-m", "rankloop.cli", "serve", "--dataset", str(folder),
           "--pipeline", "bm25", "--pipeline", "bm25_rm3",
           "--port", str(port), "--log", str(log)]  # fmt: skip
    errors = open(tmp_path / "server.stderr", "w+", encoding="utf-8")
    proc = subprocess.Popen(cmd, cwd=_REPO, stdout=subprocess.DEVNULL, stderr=errors)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                errors.seek(0)
                pytest.fail(
                    f"rankloop serve exited with {proc.returncode}:\n{errors.read()[-4000:]}"
                )
            try:
                with urllib.request.urlopen(f"{base}/api/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                errors.seek(0)
                pytest.fail(
                    f"rankloop serve not up after {START_TIMEOUT:.0f} s:\n{errors.read()[-4000:]}"
                )
            time.sleep(0.25)
        yield base, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        errors.close()


def _rows(log: Path, sql: str, *args: object) -> list[sqlite3.Row]:
    con = sqlite3.connect(f"file:{log}?mode=ro", uri=True, timeout=10)
    try:
        con.row_factory = sqlite3.Row
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def test_search_click_and_interleave_in_browser(
    chromium: str, served_beir: tuple[Path, list[str]], server: tuple[str, Path]
) -> None:
    query, other = served_beir[1][:2]
    base, log = server

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.set_default_timeout(WAIT_MS)
            expect.set_options(timeout=WAIT_MS)
            js_errors: list[str] = []
            foreign: list[str] = []
            page.on("pageerror", lambda e: js_errors.append(str(e)))
            page.on("request", lambda r: r.url.startswith(base) or foreign.append(r.url))
            page.goto(f"{base}/", wait_until="load")

            # The form: labelled controls, pipelines from /api/health, a sensible tab order.
            box, select = page.get_by_label("Query"), page.get_by_label("Pipeline")
            expect(select.locator("option")).to_have_count(3)  # bm25, bm25_rm3, interleave
            expect(select).to_have_value("bm25")
            expect(box).to_be_focused()
            page.keyboard.press("Tab")
            expect(select).to_be_focused()
            page.keyboard.press("Tab")
            expect(page.get_by_role("button", name="Search")).to_be_focused()

            # An empty query: the server's 422 shows in the alert region; nothing is logged.
            box.fill("  ")
            box.press("Enter")
            expect(page.get_by_role("alert")).to_contain_text("empty")

            # A real query, submitted with Enter.
            box.fill(query)
            box.press("Enter")
            results = page.locator("#results > li")
            expect(results.nth(1)).to_be_visible()
            expect(page.get_by_role("alert")).to_be_hidden()
            impression = page.locator("#results").get_attribute("data-impression")
            assert impression

            # The trap title is text: no script ran, no markup became elements.
            trap = page.locator(f'#results > li[data-doc-id="{TRAP_ID}"] a')
            expect(trap).to_have_text(TRAP_TITLE)
            assert page.evaluate("window.__pwned") is None
            assert page.locator("#results script, #results img, #results b").count() == 0

            # Open the second result with the keyboard: click logged, then the document shown.
            second = results.nth(1)
            doc_id = second.get_attribute("data-doc-id")
            title = second.locator("a").inner_text()
            second.locator("a").focus()
            page.keyboard.press("Enter")
            expect(page.locator("#doc-view")).to_be_visible()
            expect(page.locator("#doc-title")).to_have_text(title)
            expect(page.locator("#doc-text")).not_to_be_empty()

            shown = _rows(log, "SELECT * FROM impressions WHERE query = ?", query)
            assert [r["id"] for r in shown] == [impression]
            assert _rows(log, "SELECT count(*) FROM impressions")[0][0] == 1  # not the blank one
            clicks = _rows(log, "SELECT * FROM clicks WHERE impression_id = ?", impression)
            assert [(c["doc_id"], c["position"]) for c in clicks] == [(doc_id, 2)]

            # Back to the results, focus returns to the opened link.
            page.get_by_role("button", name="Back to results").click()
            expect(results.nth(1).locator("a")).to_be_focused()

            # Interleave the two pipelines: teams logged, never shown.
            select.select_option(value="interleave")
            box.fill(other)
            box.press("Enter")
            expect(page.locator("#results")).not_to_have_attribute("data-impression", impression)
            mixed = page.locator("#results").get_attribute("data-impression")
            expect(results.first).to_be_visible()
            assert results.first.get_attribute("data-team") in ("bm25", "bm25_rm3")
            assert "bm25" not in page.locator("#results").inner_text()
            (row,) = _rows(log, "SELECT * FROM impressions WHERE id = ?", mixed)
            assert row["pipeline"] == "bm25 vs bm25_rm3"
            teams = json.loads(row["teams"])
            assert len(teams) == len(json.loads(row["docs"])) and set(teams) <= {"bm25", "bm25_rm3"}

            # A click on the interleaved list shows up in the stats after going back.
            results.first.locator("a").click()
            expect(page.locator("#doc-view")).to_be_visible()
            page.get_by_role("button", name="Back to results").click()
            page.get_by_role("button", name="Refresh stats").click()
            expect(page.locator("#interleaving-table tbody th")).to_have_text("bm25 vs bm25_rm3")
            expect(page.locator("#ctr-table tbody tr")).to_have_count(2)
            expect(page.locator("#chart svg circle").first).to_be_visible()

            if os.environ.get("RANKLOOP_SCREENSHOT") == "1":
                (_REPO / "docs").mkdir(exist_ok=True)
                page.screenshot(path=str(_REPO / "docs" / "serve.png"), full_page=True)
            assert not js_errors, js_errors
            assert not foreign, f"the page fetched outside the server: {foreign}"
        finally:
            browser.close()
