"""centaure silence add/list/remove (the command functions, on SQLite)."""

from __future__ import annotations

import argparse
import json

from connector.settings import load_settings
from connector_alerter.cli import add_silence_arguments, silence_command


def run(tmp_path, capsys, *argv):
    ini = tmp_path / "settings.ini"
    if not ini.exists():
        ini.write_text(f"[database]\nurl = sqlite:///{tmp_path / 'c.sqlite3'}\n"
                       "[alerter]\ntable_prefix = al_\n")
    parser = argparse.ArgumentParser()
    add_silence_arguments(parser)
    code = silence_command(load_settings(str(ini)), parser.parse_args(list(argv)))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_add_list_remove(tmp_path, capsys):
    code, out, _ = run(tmp_path, capsys, "add", "--host", "r1", "--severity", ">=major",
                       "--for", "2h", "--comment", "maintenance", "--user", "ops")
    assert code == 0 and out.startswith("silence 1 (host=r1 severity=critical,major) until")
    code, out, _ = run(tmp_path, capsys, "list")
    assert code == 0 and "host=r1" in out and "maintenance" in out and "ops" in out
    code, out, _ = run(tmp_path, capsys, "list", "--json")
    (s,) = json.loads(out)
    assert s["active"] and s["ends"] - s["starts"] == 7200
    assert run(tmp_path, capsys, "remove", "1")[0] == 0
    assert run(tmp_path, capsys, "list")[1].strip() == "no active silences"
    assert "(ended)" in run(tmp_path, capsys, "list", "--all")[1]
    code, _, err = run(tmp_path, capsys, "remove", "1")
    assert code == 1 and "no active silence 1" in err


def test_argument_errors(tmp_path, capsys):
    assert "needs --host" in run(tmp_path, capsys, "add", "--for", "1h", "--comment", "x")[2]
    assert "needs --for" in run(tmp_path, capsys, "add", "--host", "r1", "--comment", "x")[2]
    assert "needs --comment" in run(tmp_path, capsys, "add", "--host", "r1", "--for", "1h")[2]
    assert "unknown severity" in run(tmp_path, capsys, "add", "--host", "r1", "--for", "1h",
                                     "--comment", "x", "--severity", "loud")[2]
    assert "expected a duration" in run(tmp_path, capsys, "add", "--host", "r1", "--for",
                                        "soon", "--comment", "x")[2]
    assert "needs the ID" in run(tmp_path, capsys, "remove")[2]
