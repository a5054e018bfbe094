"""An API key never reaches a file the run writes: database, WAL, exports, atlas."""

from __future__ import annotations


from autointerp.cli import main
from tests.fakes.openai_server import FakeOpenAIServer

KEY = "sk-autointerp-SECRET-7f3a9c1e5b"


def test_the_key_is_in_no_written_file(planted, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer() as server:
        code = main(["run", str(planted.config), "--llm", "openai", "--model", "gpt-4.1-mini",
                     "--base-url", server.url])
        assert any(KEY in str(r.headers) for r in server.requests)  # it was used...
    assert code == 0, capsys.readouterr().err
    out = planted.root / "out"
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "autointerp.db" for p in written) and any(p.suffix == ".html" for p in written)
    for path in written:
        assert KEY.encode() not in path.read_bytes(), path  # ...and stored nowhere
    captured = capsys.readouterr()
    assert KEY not in captured.out and KEY not in captured.err
