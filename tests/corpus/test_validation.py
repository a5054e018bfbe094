"""Valid corpus input the validation layer must accept, read exactly as written."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from autointerp.cli import main
from autointerp.corpus.items import parse_items
from tests.factory import make_wavs, planted_corpus

ODD = "line\u2028separator\u0085next\u2029para\x1crecord"


def test_jsonl_id_zero_and_unicode_line_separators_are_kept(tmp_path):
    rows = [{"id": 0, "text": ODD, "tokens": ["a\u2028b", ""], "positions": 2},
            {"id": 1, "text": "plain", "tags": {"mood": "calm"}, "size": 3}]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    items = parse_items(tmp_path / "items.jsonl")
    assert [i.key for i in items] == ["0", "1"]
    assert items[0].text == ODD and items[0].tokens == ["a\u2028b", ""] and items[0].positions == 2
    assert items[1].tags == {"mood": "calm", "size": "3"}


def test_quoted_csv_fields_keep_unicode_line_separators_and_a_tags_object(tmp_path):
    text = f'id,text,positions,tags,color\nx1,"{ODD}",2.0,"{{""shape"": ""star""}}",red\r\nx2,"two\nlines",,,\n'
    (tmp_path / "items.csv").write_text(text, newline="")
    items = parse_items(tmp_path / "items.csv")
    assert [i.key for i in items] == ["x1", "x2"]
    assert items[0].text == ODD and items[0].positions == 2 and items[0].tags == {"shape": "star", "color": "red"}
    assert items[1].text == "two\nlines" and items[1].tags == {}


def mined_rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return [*conn.execute("SELECT id, fire_count, max_act, mean_act FROM features ORDER BY id"),
                *conn.execute("SELECT feature_id, kind, rank, item_id, activation FROM examples ORDER BY 1, 2, 3")]


def test_bfloat16_safetensors_corpus_mines_like_its_float32_values(tmp_path):
    """The reference: the same bfloat16 values, upcast by torch and saved as a float32 .npy."""
    a = planted_corpus(tmp_path / "a")
    b = planted_corpus(tmp_path / "b")
    bf16 = torch.from_numpy(a.vectors).to(torch.bfloat16)
    save_file({"acts": bf16}, str(a.root / "vectors.safetensors"))
    a.config.write_text(a.config.read_text().replace('"vectors.npy"', '"vectors.safetensors"'))
    np.save(b.root / "vectors.npy", bf16.float().numpy())
    assert main(["mine", str(a.config)]) == 0 and main(["mine", str(b.config)]) == 0
    assert mined_rows(a.root / "out/autointerp.db") == mined_rows(b.root / "out/autointerp.db")


def test_reconstruction_rows_zero_is_not_measured(tmp_path):
    planted = planted_corpus(tmp_path / "c", config_text="")
    planted.config.write_text(planted.config.read_text().replace("batch_size = 50", "batch_size = 50\nreconstruction_rows = 0"))
    assert main(["mine", str(planted.config)]) == 0
    with sqlite3.connect(planted.root / "out/autointerp.db") as conn:
        assert conn.execute("SELECT fve, normalized_l2, reconstruction_rows FROM saes").fetchone() == (None, None, 0)


def test_redo_mine_takes_the_changed_corpus(tmp_path, capsys):
    """After an edit the run is refused; --redo mine mines the new corpus, equal to a fresh database's."""
    planted = planted_corpus(tmp_path / "c")
    config = str(planted.config)
    assert main(["mine", config]) == 0
    x = np.load(planted.root / "vectors.npy")
    x[::7] *= 2.0
    np.save(planted.root / "vectors.npy", x)
    assert main(["mine", config]) == 2
    assert "--redo mine" in capsys.readouterr().err
    assert main(["mine", config, "--redo", "mine"]) == 0
    assert main(["mine", config, "--db", str(tmp_path / "fresh.db")]) == 0
    assert mined_rows(planted.root / "out/autointerp.db") == mined_rows(tmp_path / "fresh.db")
    assert main(["mine", config]) == 0  # the new fingerprint is recorded: no refusal now


def test_audio_outside_the_root_is_accepted_when_allowed(tmp_path):
    planted = planted_corpus(tmp_path / "c")
    make_wavs(tmp_path / "elsewhere", 1)
    lines = (planted.root / "items.csv").read_text().splitlines()
    lines[1] = lines[1].replace(",,,,", f",{tmp_path / 'elsewhere' / '0.wav'},,,", 1)
    (planted.root / "items.csv").write_text("\n".join(lines) + "\n")
    planted.config.write_text(planted.config.read_text().replace('items = "items.csv"',
                                                                  'items = "items.csv"\nallow_outside_root = true'))
    assert main(["mine", str(planted.config)]) == 0


def test_a_csv_text_longer_than_the_csv_modules_default_limit_is_kept(tmp_path):
    """A long transcript in a quoted CSV field is read whole, as JSONL and Parquet read it."""
    long = "word " * 60_000  # 300,000 characters; the csv module refuses fields over 131,072 by default
    (tmp_path / "items.csv").write_text(f'id,text\nx1,"{long}"\nx2,short\n')
    items = parse_items(tmp_path / "items.csv")
    assert [i.key for i in items] == ["x1", "x2"] and items[0].text == long


def test_an_empty_shard_of_any_width_does_not_set_the_corpus_width(tmp_path):
    """A (0, 0) .npy shard (an extraction that got no input) listed first: the width is the others'."""
    planted = planted_corpus(tmp_path / "c")
    np.save(planted.root / "empty.npy", np.zeros((0, 0), np.float32))
    planted.config.write_text(planted.config.read_text().replace('vectors = "vectors.npy"',
                                                                 'vectors = ["empty.npy", "vectors.npy"]'))
    assert main(["mine", str(planted.config)]) == 0
    assert mined_rows(planted.root / "out/autointerp.db")


def test_decoder_notes_are_kept_aside_only_during_a_call(capfd):
    """What a native decoder prints to file descriptor 2 during a call is kept aside (and read back by
    said()); what the process prints between calls, as another thread's progress note would, still
    reaches stderr."""
    import os

    from autointerp.corpus.audio import DecoderNotes

    def decoder(text: bytes) -> int:
        return os.write(2, text)  # as C code writes: to the descriptor, not through sys.stderr

    with DecoderNotes() as notes:
        assert notes.call(decoder, b"Note: Illegal Audio-MPEG-Header\nNote: Trying to resync...\n") > 0
        print("loading the corpus …", file=sys.stderr, flush=True)
        assert notes.said() == "Note: Illegal Audio-MPEG-Header"
        notes.call(decoder, b"")
        assert notes.said() == ""
    assert capfd.readouterr().err == "loading the corpus …\n"
