"""``centaure init DIR``: a commented starter configuration in a folder of the user's.

Copies the shipped example files (settings.ini with every setting explained,
the inventory, credentials, trap definitions, threshold rules, alert routes and
an example MIB) into DIR. Nothing is ever overwritten: if one of the files is
already there, nothing is written and the command says which ones exist.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from centaure.shipped import EXAMPLES_DIR

#: Mode of the folder ``init`` creates: the service's group may read it, others nothing.
DIR_MODE = 0o750
#: Mode of the files it writes: settings and credentials may hold secrets.
FILE_MODE = 0o640


class InitError(Exception):
    """The starter configuration cannot be written (the message says why)."""


def shipped_files() -> list[str]:
    """The example files ``init`` writes, as paths relative to the examples folder."""
    found = []
    for folder, dirs, files in os.walk(EXAMPLES_DIR):
        dirs.sort()
        for name in sorted(files):
            if name.startswith(".") or name.endswith((".pyc", ".pyo")):
                continue
            found.append(os.path.relpath(os.path.join(folder, name), EXAMPLES_DIR))
    return found


def write_starter(target: str) -> list[str]:
    """Copy the example files into ``target``; return the paths written.

    Raises :class:`InitError` (and writes nothing) when ``target`` is a file,
    cannot be created, or already holds one of the files.
    """
    names = shipped_files()
    if not names:
        raise InitError(f"no example files in {EXAMPLES_DIR}: the installation is incomplete")
    if os.path.exists(target) and not os.path.isdir(target):
        raise InitError(f"{target} exists and is not a folder")
    existing = [n for n in names if os.path.lexists(os.path.join(target, n))]
    if existing:
        raise InitError(f"{target} already holds {', '.join(existing)}: nothing written "
                        "(move them away or choose another folder)")
    try:
        os.makedirs(target, mode=DIR_MODE, exist_ok=True)
        written = []
        for name in names:
            dst = os.path.join(target, name)
            os.makedirs(os.path.dirname(dst), mode=DIR_MODE, exist_ok=True)
            # O_EXCL: a file that appeared since the check above is not overwritten.
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            with os.fdopen(fd, "wb") as out, open(os.path.join(EXAMPLES_DIR, name), "rb") as src:
                shutil.copyfileobj(src, out)
            written.append(dst)
    except OSError as e:
        raise InitError(f"cannot write into {target}: {e.strerror or e}"
                        + (f" ({e.filename})" if e.filename else "")) from None
    return written


def add_init_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``centaure init``."""
    parser.add_argument("folder", help="where to write settings.ini and the example files "
                                       "(created if missing; existing files are never overwritten)")


def init_command(args: argparse.Namespace) -> int:
    """Run ``centaure init``: write the files, list them, say what to do next."""
    try:
        written = write_starter(args.folder)
    except InitError as e:
        print(f"centaure init: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    settings = os.path.join(args.folder, "settings.ini")
    print(f"\nNext: edit {settings} ([bus] url, [database] url, [buffer] path), then\n"
          f"  centaure rules check -c {settings}\n"
          f"  centaure db upgrade -c {settings}\n"
          f"  twistd -n --pidfile= centaure-all -c {settings}")
    return 0
