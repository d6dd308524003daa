"""The memguard command: run (each way a program ends, exit status), report, help."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import memguard
from memguard import cli
from memguard.cli import RunSpec, main, parse_run_args

LEAK_HEADER = "Direct leak of 24 byte(s) in 1 object(s) allocated from:"


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "MEMGUARD_OPTIONS"}
    e["PYTHONDONTWRITEBYTECODE"] = "1"
    return e


def memguard_run(tmp_path: Path, source: str, *args: str, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(source))
    opts = [a for o in options for a in ("-o", o)]
    return subprocess.run(
        [sys.executable, "-m", "memguard", "run", *opts, str(script), *args],
        capture_output=True, text=True, env=env(), cwd=tmp_path, timeout=60,
    )


def python(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "plain.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env(), cwd=tmp_path, timeout=60)


LEAKY = """\
import memguard, sys
def leak():
    return memguard.malloc(24)
leak()
"""


# ---------------------------------------------------------------- ways a program ends
def test_clean_program_prints_nothing_and_keeps_status(tmp_path: Path) -> None:
    r = memguard_run(tmp_path, "import memguard, sys\nmemguard.free(memguard.malloc(8))\nprint('hi')\nsys.exit(4)\n")
    assert (r.returncode, r.stdout, r.stderr) == (4, "hi\n", "")


def test_normal_exit_with_leak(tmp_path: Path) -> None:
    r = memguard_run(tmp_path, LEAKY)
    assert r.returncode == 23
    assert LEAK_HEADER in r.stderr and "prog.py:3 in leak" in r.stderr and "prog.py:4 in <module>" in r.stderr
    assert "SUMMARY: memguard: 24 byte(s) leaked in 1 allocation(s)." in r.stderr
    assert "runpy" not in r.stderr and "cli.py" not in r.stderr  # launcher frames trimmed


def test_sys_exit_with_leak_uses_exitcode(tmp_path: Path) -> None:
    r = memguard_run(tmp_path, LEAKY + "sys.exit(3)\n", options=("exitcode=9",))
    assert r.returncode == 9 and LEAK_HEADER in r.stderr


def test_sys_exit_with_message(tmp_path: Path) -> None:
    r = memguard_run(tmp_path, "import sys\nsys.exit('fatal: no config')\n")
    assert r.returncode == 1 and r.stderr == "fatal: no config\n"


def test_uncaught_exception(tmp_path: Path) -> None:
    r = memguard_run(tmp_path, LEAKY + "raise KeyError('boom')\n")
    assert r.returncode == 23
    assert r.stderr.startswith("Traceback (most recent call last):\n  File ")
    assert "KeyError: 'boom'" in r.stderr and "memguard/cli.py" not in r.stderr
    assert r.stderr.index("KeyError") < r.stderr.index(LEAK_HEADER)
    clean = memguard_run(tmp_path, "raise KeyError('boom')\n")
    assert clean.returncode == 1 and clean.stderr.rstrip().endswith("KeyError: 'boom'")


def test_keyboard_interrupt(tmp_path: Path) -> None:
    r = memguard_run(tmp_path, "raise KeyboardInterrupt\n")
    assert r.returncode == 130 and r.stderr.rstrip().endswith("KeyboardInterrupt") and "runpy" not in r.stderr


SIGTERMED = LEAKY + """
import os, signal, time
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(30)
"""


def test_sigterm_with_handler_still_reports(tmp_path: Path) -> None:
    r = memguard_run(tmp_path, SIGTERMED, options=("handle_sigterm=1",))
    assert r.returncode == 23 and LEAK_HEADER in r.stderr
    clean = memguard_run(tmp_path, "import os, signal, time\nos.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(30)\n", options=("handle_sigterm=1",))
    assert (clean.returncode, clean.stderr) == (128 + signal.SIGTERM, "")


def test_sigterm_without_handler_and_os_exit_are_not_covered(tmp_path: Path) -> None:
    r = memguard_run(tmp_path, SIGTERMED)
    assert r.returncode == -signal.SIGTERM and r.stderr == ""
    r = memguard_run(tmp_path, LEAKY + "import os\nos._exit(0)\n")
    assert r.returncode == 0 and r.stderr == ""


def test_program_atexit_handlers_and_threads_run_before_the_check(tmp_path: Path) -> None:
    r = memguard_run(tmp_path, """
        import atexit, threading, time, memguard
        p = memguard.malloc(10)
        atexit.register(memguard.free, p)
        def later():
            q = memguard.malloc(20)
            time.sleep(0.2)
            memguard.free(q)
        threading.Thread(target=later).start()
    """)
    assert (r.returncode, r.stderr) == (0, "")


def test_corruption_alone_sets_exitcode(tmp_path: Path) -> None:
    r = memguard_run(tmp_path, """
        import ctypes, memguard
        p = memguard.malloc(4)
        ctypes.memset(p, 0x41, 5)
        memguard.free(p)
    """)
    assert r.returncode == 23
    assert "ERROR: memguard: heap-buffer-overflow" in r.stderr and "detected memory leaks" not in r.stderr


def test_plain_python_with_install_reports_at_exit(tmp_path: Path) -> None:
    r = python(tmp_path, """
        import sys, memguard
        memguard.install(verbose=1)
        memguard.malloc(24)
        sys.exit(3)
    """)
    assert r.returncode == 3 and LEAK_HEADER in r.stderr  # the status stays the program's
    r = python(tmp_path, """
        import memguard
        memguard.malloc(24)
        raise SystemError('x')
    """)
    assert r.returncode == 1 and r.stderr.index("SystemError: x") < r.stderr.index(LEAK_HEADER)
    r = python(tmp_path, "import memguard\nmemguard.install(verbose=1)\n")
    assert "memguard: no leaks or heap errors found (0 allocation(s)" in r.stderr
    r = python(tmp_path, "import memguard\nmemguard.malloc(5)\nmemguard.process_heap().close(check=False)\n")
    assert (r.returncode, r.stderr) == (0, "")  # closed heap: nothing to say, no crash


# ---------------------------------------------------------------- running like python
def test_script_argv_main_and_sys_path(tmp_path: Path) -> None:
    (tmp_path / "helper_mod.py").write_text("VALUE = 42\n")
    r = memguard_run(tmp_path, """
        import sys, helper_mod
        print(__name__, sys.argv[1:], helper_mod.VALUE, sys.argv[0].endswith('prog.py'))
    """, "-x", "--flag", "arg")
    assert r.returncode == 0 and r.stdout == "__main__ ['-x', '--flag', 'arg'] 42 True\n"


def test_module_mode(tmp_path: Path) -> None:
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tool.py").write_text(textwrap.dedent("""
        import sys, memguard
        def run():
            return memguard.malloc(24)
        if __name__ == "__main__":
            print(sys.argv[1:], sys.argv[0].endswith("tool.py"))
            run()
            sys.exit(int(sys.argv[1]))
    """))
    r = subprocess.run(
        [sys.executable, "-m", "memguard", "run", "-o", "exitcode=0", "-m", "mypkg.tool", "5", "--x"],
        capture_output=True, text=True, env=env(), cwd=tmp_path, timeout=60,
    )
    assert r.returncode == 5 and r.stdout == "['5', '--x'] True\n"
    assert LEAK_HEADER in r.stderr and "mypkg/tool.py:4 in run" in r.stderr


# ---------------------------------------------------------------- options, reports
def test_only_and_suppressions_from_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "supp.txt").write_text("leak:third_party\n")
    source = """
        import memguard
        def third_party():
            return memguard.malloc(100)
        def mine():
            return memguard.malloc(24)
        third_party()
        mine()
    """
    r = memguard_run(tmp_path, source, options=("suppressions=supp.txt",))
    assert r.returncode == 23 and LEAK_HEADER in r.stderr and "Direct leak of 100" not in r.stderr
    assert "      1        100 leak:third_party" in r.stderr
    r = memguard_run(tmp_path, source, options=("only=third_*",))
    assert r.returncode == 23 and "Direct leak of 100 byte(s)" in r.stderr and LEAK_HEADER not in r.stderr
    r = memguard_run(tmp_path, source, options=("only=nothing_here",))
    assert (r.returncode, r.stderr) == (0, "")


def test_json_log_file_and_report_command_round_trip(tmp_path: Path) -> None:
    r = memguard_run(tmp_path, LEAKY + "sys.exit(2)\n", options=(f"log_path={tmp_path}/mg", "report_format=json"))
    assert r.returncode == 23 and r.stderr == ""
    files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("mg."))
    assert len(files) == 1 and not files[0].endswith(".tmp")  # atomic: no temporary file left
    path = tmp_path / files[0]
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == 2 and doc["program_status"] == 2 and doc["leak_summary"]["total_bytes"] == 24
    assert doc["argv"][0].endswith("prog.py") and files[0] == f"mg.{doc['pid']}"

    text = subprocess.run([sys.executable, "-m", "memguard", "report", str(path)], capture_output=True, text=True, env=env(), timeout=60)
    assert text.returncode == 0 and LEAK_HEADER in text.stdout and "(exit status 2)" in text.stdout
    assert "prog.py:3 in leak" in text.stdout
    # the leak header names the program's process, not the renderer's
    assert f"=={doc['pid']}==ERROR: memguard: detected memory leaks" in text.stdout
    again = subprocess.run(
        [sys.executable, "-m", "memguard", "report", "--format", "json", str(path)], capture_output=True, text=True, env=env(), timeout=60
    )
    assert json.loads(again.stdout) == doc


def test_report_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "none.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "x.json").write_text("{not json")
    assert main(["report", str(tmp_path / "x.json")]) == 2
    assert "not JSON" in capsys.readouterr().err
    (tmp_path / "y.json").write_text('{"schema": "memguard.exit-report", "schema_version": 7}')
    assert main(["report", str(tmp_path / "y.json")]) == 2
    assert "schema_version 7 is not supported" in capsys.readouterr().err


def test_bad_options_and_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMGUARD_OPTIONS", raising=False)
    script = tmp_path / "s.py"
    script.write_text("")
    assert main(["run", "-o", "redzone=3", str(script)]) == 2
    assert "bad value '3' for option 'redzone': expected a multiple of 16" in capsys.readouterr().err
    assert main(["run", "-o", "colour=1", str(script)]) == 2
    assert "unknown option 'colour'" in capsys.readouterr().err
    monkeypatch.setenv("MEMGUARD_OPTIONS", "leak_check=perhaps")
    assert main(["run", str(script)]) == 2
    assert "MEMGUARD_OPTIONS: bad value 'perhaps' for option 'leak_check'" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.py")]) == 2
    assert "can't open file" in capsys.readouterr().err
    assert main(["run"]) == 2 and "no script" in capsys.readouterr().err
    assert main(["run", "--bogus", "x.py"]) == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2 and "unknown command" in capsys.readouterr().err
    assert main([]) == 2


def test_help_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "memguard run examples/leaky.py" in out
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "exitcode" in out and "MEMGUARD_OPTIONS" in out and "handle_sigterm" in out
    assert main(["report", "--help"]) == 0 and "examples:" in capsys.readouterr().out
    assert main(["--version"]) == 0 and capsys.readouterr().out == f"memguard {memguard.__version__}\n"
    # one parser style for every command: argparse's usage line and option list
    for argv in (["--help"], ["run", "--help"], ["report", "--help"]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: memguard") and "-h, --help" in out, argv


def test_parse_run_args() -> None:
    assert parse_run_args(["-o", "redzone=32", "--option=verbose=1", "-oexitcode=1", "s.py", "-o", "x"]) == RunSpec(
        "s.py", False, ("-o", "x"), {"redzone": "32", "verbose": "1", "exitcode": "1"}
    )
    assert parse_run_args(["-m", "pkg.mod", "-h"]) == RunSpec("pkg.mod", True, ("-h",), {})
    assert parse_run_args(["-mpkg"]) == RunSpec("pkg", True, (), {})
    assert parse_run_args(["--", "-weird.py", "a"]) == RunSpec("-weird.py", False, ("a",), {})
    assert parse_run_args(["--help"]) is None
    assert parse_run_args(["s.py", "--help", "-m", "x"]) == RunSpec("s.py", False, ("--help", "-m", "x"), {})
    assert parse_run_args(["-o", "a=1", "-m", "pkg", "-o", "b=2"]) == RunSpec("pkg", True, ("-o", "b=2"), {"a": "1"})
    with pytest.raises(cli.UsageError, match="no script"):
        parse_run_args(["-o", "a=1"])
    with pytest.raises(cli.UsageError, match="key=value") as exc:
        parse_run_args(["-o", "novalue", "s.py"])
    assert isinstance(exc.value, memguard.MemguardError) and exc.value.exit_code == cli.USAGE_ERROR


def test_run_m_of_a_missing_module_or_a_package_without_main_says_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "nomain").mkdir()
    (tmp_path / "nomain" / "__init__.py").write_text("")
    for target, words in (("pkg_missing_here.sub", "No module named 'pkg_missing_here'"),
                          ("nomain", "'nomain' is a package and cannot be directly executed")):
        r = subprocess.run([sys.executable, "-m", "memguard", "run", "-m", target], capture_output=True, text=True,
                           env=env(), cwd=tmp_path, timeout=60)
        assert r.returncode == 1, r.stderr
        assert r.stderr.startswith("memguard run: ") and words in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_run_m_keeps_the_traceback_of_an_import_error_inside_the_program(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import module_that_is_not_there\n")
    r = subprocess.run([sys.executable, "-m", "memguard", "run", "-m", "broken"], capture_output=True, text=True,
                       env=env(), cwd=tmp_path, timeout=60)
    assert r.returncode == 1
    assert "Traceback" in r.stderr and "broken.py" in r.stderr and "runpy" not in r.stderr, r.stderr
