"""Centaure installed the way users install it, away from the checkout.

* A wheel built from a copy of the checkout, installed with its ``demo`` extra
  into a fresh virtualenv: ``centaure init``, ``twistd --help`` (every plugin),
  ``centaure rules check`` and ``centaure demo`` run from a 0700 folder, and
  the demo stores samples before Ctrl-C stops it cleanly.
* Then a plain ``pip install -e`` (setuptools' default editable mode) of
  another copy into the same virtualenv, replacing the wheel (as a user moving
  to a checkout does; its dependencies are there already, which spares a
  second venv and a second download of them): the package is imported from
  that copy, ``twistd --help`` lists the plugins and ``centaure bus-config``
  declares the topology on the real RabbitMQ with the shipped settings.

The venv never sees this checkout: each command runs with a clean environment
(no PYTHONPATH) from a folder of its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import AMQP_URL, ROOT, _delete_prefixed, rabbitmqctl

pytestmark = pytest.mark.integration

PLUGINS = ("centaure-all", "centaure-alerter", "centaure-console", "centaure-correlator",
           "centaure-db", "centaure-snmp", "centaure-traps")


def user_env(venv: str | None = None) -> dict[str, str]:
    """A user's environment: no PYTHONPATH, the venv's bin first on PATH."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV")}
    if venv:
        env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env.get("PATH", "")
        env["VIRTUAL_ENV"] = venv
    return env


def run(argv: list[str], cwd, timeout: float = 600, check: bool = True,
        venv: str | None = None) -> subprocess.CompletedProcess:
    """Run a command as a user would (:func:`user_env`)."""
    r = subprocess.run(argv, cwd=cwd, env=user_env(venv), capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {r.returncode}:\n"
                             f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def copy_checkout(dest: str) -> str:
    """Copy the files of the checkout (tracked and not ignored), as a clone would hold them."""
    r = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for name in filter(None, r.stdout.decode().split("\0")):
        src = os.path.join(ROOT, name)
        if not os.path.isfile(src):
            continue
        dst = os.path.join(dest, name)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst)
    return dest


def private_dir(path) -> str:
    """``path`` created with mode 0700, as root's home is."""
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o700)
    return str(path)


def fresh_venv(path: str) -> str:
    """A new virtualenv with no access to this one's packages."""
    run([sys.executable, "-m", "venv", path], cwd=os.path.dirname(path))
    return path


def imported_from(venv: str, cwd: str, module: str) -> str:
    """The folder ``module`` is imported from by the venv's Python."""
    out = run([os.path.join(venv, "bin", "python"), "-c",
               f"import os, {module}; print(os.path.dirname({module}.__file__))"],
              cwd=cwd, venv=venv).stdout
    return out.strip()


def demo_until_polled(centaure: str, work: str, venv: str, timeout: float = 180) -> str:
    """``centaure demo`` until it says every device is polled and stored, then Ctrl-C
    (SIGINT); returns its output once it has exited 0 (the test fails otherwise)."""
    out_path = os.path.join(work, "demo.out")

    def output() -> str:
        with open(out_path, errors="replace") as f:
            return f.read()

    with open(out_path, "w") as out:
        proc = subprocess.Popen([centaure, "demo", "--plain", "--workdir", "demo"], cwd=work,
                                env=user_env(venv), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while "every device polled and stored" not in output():
            assert proc.poll() is None, f"the demo exited {proc.returncode}:\n{output()[-3000:]}"
            assert time.monotonic() < deadline, f"no poll stored in {timeout}s:\n{output()[-3000:]}"
            time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, f"the demo exited {code} after Ctrl-C:\n{output()[-3000:]}"
    return output()


def twistd_plugins(venv: str, cwd: str) -> list[str]:
    out = run([os.path.join(venv, "bin", "twistd"), "--help"], cwd=cwd, venv=venv).stdout
    return sorted({word for line in out.splitlines() for word in line.split()[:1]
                   if word.startswith("centaure-")})


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> str:
    """A 0700 folder standing for root's home, holding the copies and the venvs."""
    return private_dir(tmp_path_factory.mktemp("home") / "root")


@pytest.fixture(scope="module")
def wheel_venv(home) -> tuple[str, str]:
    """(venv, wheel): the wheel built from a copy of the checkout, installed with [demo]
    into the module's one virtualenv (``editable_venv`` replaces it there afterwards)."""
    src = copy_checkout(os.path.join(home, "src"))
    dist = os.path.join(home, "dist")
    with ThreadPoolExecutor(1) as pool:
        # Independent of the build: made meanwhile.
        made = pool.submit(fresh_venv, os.path.join(home, "venv"))
        run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, src],
            cwd=home)
        venv = made.result()
    wheels = [n for n in os.listdir(dist) if n.endswith(".whl")]
    assert len(wheels) == 1, wheels
    wheel = os.path.join(dist, wheels[0])
    shutil.rmtree(src)  # the installed wheel must not need the source
    run([os.path.join(venv, "bin", "pip"), "install", "-q", f"{wheel}[demo]"], cwd=home,
        venv=venv)
    return venv, wheel


def test_wheel_carries_what_the_program_reads(wheel_venv):
    import zipfile

    _, wheel = wheel_venv
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ("connector/amqp/amqp0-9-1.extended.xml",
                     "centaure/data/examples/settings.ini",
                     "centaure/data/examples/traps.yaml",
                     "centaure/data/examples/mibs/CENTAURE-EXAMPLE-MIB.txt",
                     "centaure/data/fleet/router01.snmprec",
                     "connector_snmp/data/profiles/if-mib.yaml",
                     "connector_db/migrations/versions/0001_initial.py",
                     "connector_alarms/migrations/env.py",
                     "twisted/plugins/centaure_snmp.py",
                     "connector_console/templates/board.html",
                     "connector_console/static/board.js"):
        assert expected in names, f"{expected} missing from {os.path.basename(wheel)}"
    assert not any(n.startswith(("tests/", "bench/")) for n in names)


def test_wheel_init_plugins_rules_and_demo(wheel_venv, home):
    venv, _ = wheel_venv
    work = private_dir(os.path.join(home, "work"))
    centaure = os.path.join(venv, "bin", "centaure")
    assert imported_from(venv, work, "connector").startswith(os.path.join(venv, "lib", "")), \
        "the wheel is not what the venv imports"

    r = run([centaure, "init", "etc"], cwd=work, venv=venv)
    assert "wrote etc/settings.ini" in r.stdout
    settings = os.path.join(work, "etc", "settings.ini")
    assert os.path.isfile(os.path.join(work, "etc", "traps.yaml"))
    assert stat.S_IMODE(os.stat(settings).st_mode) & 0o007 == 0
    again = run([centaure, "init", "etc"], cwd=work, venv=venv, check=False)
    assert again.returncode != 0 and "nothing written" in again.stderr

    assert twistd_plugins(venv, work) == sorted(PLUGINS)

    rules = run([centaure, "rules", "check", "-c", settings], cwd=work, venv=venv)
    assert "rules valid" in rules.stdout

    demo = demo_until_polled(centaure, work, venv)
    assert "Traceback" not in demo, demo[-3000:]
    assert "centaure demo stopped after" in demo, demo[-3000:]
    db = os.path.join(work, "demo", "centaure.sqlite3")
    with sqlite3.connect(db) as conn:
        (samples,) = conn.execute("select count(*) from samples").fetchone()
        hosts = {h for (h,) in conn.execute("select name from devices")}
    assert samples > 0, demo[-2000:]
    assert "router01" in hosts


@pytest.fixture(scope="module")
def editable_venv(home, wheel_venv) -> tuple[str, str]:
    """(venv, checkout copy): a plain ``pip install -e`` of a copy of the checkout, over
    the wheel (the wheel's tests come first: this fixture asks for it)."""
    venv, _ = wheel_venv
    src = copy_checkout(os.path.join(home, "checkout"))
    run([os.path.join(venv, "bin", "pip"), "install", "-q", "-e", src], cwd=home, venv=venv)
    return venv, src


def test_editable_install_plugins_and_bus_config(editable_venv, home, tmp_path):
    venv, src = editable_venv
    work = private_dir(os.path.join(home, "work-editable"))
    assert imported_from(venv, work, "connector") == os.path.join(src, "src", "connector")
    assert twistd_plugins(venv, work) == sorted(PLUGINS)

    centaure = os.path.join(venv, "bin", "centaure")
    run([centaure, "init", "etc"], cwd=work, venv=venv)
    settings = os.path.join(work, "etc", "settings.ini")
    prefix = f"tinstall{os.getpid()}"
    text = open(settings).read()
    text = text.replace("\nurl = embedded\n", f"\nurl = {AMQP_URL}\n", 1)
    text = text.replace("\nexchange_prefix = centaure\n", f"\nexchange_prefix = {prefix}\n", 1)
    assert AMQP_URL in text and prefix in text
    with open(settings, "w") as f:
        f.write(text)
    try:
        r = run([centaure, "bus-config", "-c", settings], cwd=work, venv=venv, timeout=120)
        assert "bus configured" in r.stdout
        queues = rabbitmqctl("list_queues", "name").split()
        assert f"{prefix}.db" in queues or any(q.startswith(prefix + ".") for q in queues)
    finally:
        _delete_prefixed(prefix)
