"""A bounded run of the CLI fuzzer (unmask/fuzz.py): random argument vectors and damaged input
files must end in an exit code with at most one error line, never a traceback or a hang. The
long run behind the hardening note is `python -m unmask.fuzz --cases 2000`."""

from __future__ import annotations

from unmask import cli, fuzz


def test_fuzzed_command_lines_end_cleanly() -> None:
    tried, failures = fuzz.fuzz(cases=40, seed=7, limit_s=60, log=lambda *_: None)
    assert tried == 40
    assert [(case.argv, case.damage, what) for case, what in failures] == []


def test_the_fuzzer_notices_a_traceback(monkeypatch) -> None:
    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "cmd_generate", broken)
    monkeypatch.setattr(cli, "cmd_eval", broken)
    monkeypatch.setattr(cli, "cmd_bench", broken)
    _, failures = fuzz.fuzz(cases=20, seed=7, limit_s=60, log=lambda *_: None)
    assert any("KeyError" in what for _, what in failures)
