"""Atomic writes and run metadata."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cpi import io


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "table.csv"
    io.atomic_write_text(target, "old\n")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "replace", boom)
    with pytest.raises(OSError):
        io.atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"], "no temporary file may be left behind"


def test_save_run_writes_tables_config_and_metadata(tmp_path):
    table = pd.DataFrame({"step": [0, 1], "M_C": [0.5, 0.7]})
    io.save_run(tmp_path / "out", {"eta": 1.0}, tables={"trajectory": table}, seeds=[0])
    back = pd.read_csv(tmp_path / "out" / "trajectory.csv")
    pd.testing.assert_frame_equal(back, table)
    meta = json.loads((tmp_path / "out" / "config.json").read_text())
    assert meta["config"] == {"eta": 1.0}
    assert meta["meta"]["package"] == io.PACKAGE_NAME
    assert meta["meta"]["version"]
    assert "git_hash" in meta["meta"] and meta["meta"]["seeds"] == [0]


def test_atomic_write_uses_normal_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        path = io.atomic_write_text(tmp_path / "x.txt", "hi")
    finally:
        os.umask(umask)
    assert (path.stat().st_mode & 0o777) == 0o644


NASTY = (["plain", "a\rb", "c\r\nd", "e\nf", "\rlead", "trail\r", 'q"uo"te', "com,ma", "ünï©ødé ✓", "None", "NA",
          "tab\there", "x\x0by\x0cz", "\x1c\x1d\x1e", "u\x85v\u2028w"] + ["c" + chr(i) + "c" for i in range(1, 32)])


@pytest.mark.parametrize("with_cr", [True, False])
def test_table_round_trips_any_text(tmp_path, with_cr):
    """Carriage returns, CRLF, control characters, quotes, commas and non-ASCII survive write + read."""
    texts = NASTY if with_cr else [t for t in NASTY if "\r" not in t]
    table = pd.DataFrame({"output": texts, "context": list(reversed(texts)), "n": range(len(texts)),
                          "x": [0.5 * i for i in range(len(texts))], "ok": [i % 2 == 0 for i in range(len(texts))]})
    path = io.atomic_write_table(table, tmp_path / "t.csv")
    back = pd.read_csv(path, keep_default_na=False, na_values=[""])
    assert len(back) == len(table)
    assert list(back["output"]) == texts and list(back["context"]) == list(reversed(texts))
    assert list(back["n"]) == list(table["n"]) and list(back["x"]) == list(table["x"])
    assert list(back["ok"]) == list(table["ok"])
    if not with_cr:  # without a bare carriage return the file keeps minimal quoting
        assert path.read_text().splitlines()[0] == "output,context,n,x,ok"


def test_save_run_tables_default_is_not_shared(tmp_path):
    import inspect

    assert inspect.signature(io.save_run).parameters["tables"].default is None
    io.save_run(tmp_path / "a", {"x": 1})
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["config.json"]


def test_run_metadata_records_the_compute_environment():
    import torch

    meta = io.run_metadata()
    env = meta["environment"]
    assert env["torch"] == torch.__version__ and env["threads"] == torch.get_num_threads()
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["blas"] and "mkl" in env["torch_build"]


def test_out_path_checks(tmp_path):
    from cpi.errors import CpiError

    f = tmp_path / "f.txt"
    f.write_text("x")
    assert io.check_out_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checking writes nothing
    with pytest.raises(CpiError, match="is a file, not a folder"):
        io.check_out_dir(f)
    with pytest.raises(CpiError, match="so the folder cannot be made"):
        io.check_out_dir(f / "sub")
    with pytest.raises(CpiError, match="is a folder; give a file name"):
        io.check_out_file(tmp_path)
    with pytest.raises(CpiError, match="not writable"):
        io.check_out_dir("/proc/cpi-test-out")
    b = tmp_path / "b.bin"
    b.write_bytes(b"\x00\x01\xff")
    with pytest.raises(CpiError, match="binary data"):
        io.check_input_file(b, "data")
    u = tmp_path / "u.txt"
    u.write_bytes("é".encode("utf-8") * (1 << 15) + b"\xff\xfe ok")
    with pytest.raises(CpiError, match="not UTF-8"):
        io.check_input_file(u, "data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "f.txt", "u.txt"]


# ---------------------------------------------------------------------------- reading JSON as users give it


def test_jsonl_lines_split_on_newline_only():
    from cpi.io import jsonl_lines

    text = '{"a": "x\u2028y\u2029z\x85w\x0c"}\r\n{"b": 1}\n'
    assert jsonl_lines(text) == ['{"a": "x\u2028y\u2029z\x85w\x0c"}', '{"b": 1}', ""]
    assert len(text.splitlines()) > 2  # what str.splitlines would have done


def test_parse_json_one_line_errors():
    from cpi.errors import CpiError
    from cpi.io import parse_json

    assert parse_json('{"a": [1]}', "f") == {"a": [1]}
    with pytest.raises(CpiError, match=r"^f: malformed JSON \(Expecting value at line 2 column 1\)$"):
        parse_json('{"a":\n', "f")
    with pytest.raises(CpiError, match=r"^f:3: malformed JSON \(.* at column 6\)$"):
        parse_json('{"a":', "f:3", line_known=True)
    with pytest.raises(CpiError, match=r"^f: JSON nested too deeply to read$"):
        parse_json("[" * 100_000 + "]" * 100_000, "f")


def test_read_text_once_reads_pipes_and_refuses_bad_bytes(tmp_path):
    import subprocess
    import sys

    from cpi.errors import CpiError
    from cpi.io import read_text_once

    good = tmp_path / "g.txt"
    good.write_bytes("\ufeffcafé\n".encode())
    assert read_text_once(good, "input") == "café\n"  # the byte-order mark is not data
    for data, needle in ((b"a\x00b", "binary data"), (b"\xe9t\xe9", "not UTF-8")):
        bad = tmp_path / "b.txt"
        bad.write_bytes(data)
        with pytest.raises(CpiError, match=needle):
            read_text_once(bad, "input")
    with pytest.raises(CpiError, match="file not found"):
        read_text_once(tmp_path / "none", "input")
    with pytest.raises(CpiError, match="is a folder"):
        read_text_once(tmp_path, "input")
    code = ("import sys; from cpi.io import check_input_file, read_text_once; "
            "check_input_file(sys.argv[1], 'input'); print(read_text_once(sys.argv[1], 'input'), end='')")
    r = subprocess.run(["bash", "-c", f"{sys.executable} -c \"{code}\" <(printf 'piped\\n')"], capture_output=True,
                       text=True, timeout=60)
    assert r.stdout == "piped\n", r.stderr  # check_input_file leaves a pipe to its reader


def test_read_config_file_reads_once_and_words_errors(tmp_path):
    import subprocess
    import sys

    from cpi.config import read_config_file
    from cpi.errors import ConfigError

    cfg = tmp_path / "c.yaml"
    cfg.write_text("seed: 3\n")
    assert read_config_file(cfg) == {"seed": 3}
    (tmp_path / "e.yaml").write_text("")
    assert read_config_file(tmp_path / "e.yaml") == {}
    for name, data, needle in (("d.yaml", b"[" * 700 + b"]" * 700, "YAML nested too deeply"),
                               ("d.json", b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply"),
                               ("b.yaml", b"a: 1\n\x00", "binary data"), ("l.yaml", b"a: \xe9\n", "not a text")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ConfigError, match=needle):
            read_config_file(tmp_path / name)
    code = "import sys; from cpi.config import read_config_file; print(read_config_file(sys.argv[1]))"
    r = subprocess.run(["bash", "-c", f"{sys.executable} -c \"{code}\" <(printf 'seed: 5\\n')"], capture_output=True,
                       text=True, timeout=60)
    assert r.stdout.strip() == "{'seed': 5}", r.stderr


def test_check_fits_memory_and_check_at_most():
    from cpi.config import check_fits_memory, physical_memory_bytes
    from cpi.errors import ConfigError

    total = physical_memory_bytes()
    assert total and total > 2**28
    check_fits_memory(total / 2, "half")
    with pytest.raises(ConfigError, match=r"^twice: needs about .* GiB, more than this machine's"):
        check_fits_memory(total * 2, "twice")
