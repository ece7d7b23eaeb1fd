"""``centaure console``: the web console's users (add-user, passwd, remove-user, users).

The password is read from the terminal (asked twice) or, with
``--password-stdin``, from the first line of standard input (scripts); it is
never an argument, where other users of the machine could read it.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable

__all__ = ["add_commands", "console_command"]

ACTIONS = ("add-user", "passwd", "remove-user", "users")


def add_console_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``centaure console``."""
    parser.add_argument("action", choices=ACTIONS,
                        help="add-user NAME (or change its role), passwd NAME, remove-user NAME, "
                             "users (list them)")
    parser.add_argument("name", nargs="?", help="the user's name")
    parser.add_argument("--role", choices=("viewer", "operator"),
                        help="add-user: viewer (reads) or operator (also acks, clears, notes); "
                             "default viewer for a new user")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input")
    parser.add_argument("--file", help="the users file (default: [console] users_file)")


def _password(args) -> str | None:
    if args.password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        return line or None
    first = getpass.getpass(f"Password for {args.name}: ")
    if first != getpass.getpass("Again: "):
        print("centaure console: the two passwords differ", file=sys.stderr)
        return None
    return first or None


def console_command(settings, args) -> int:
    """Run ``centaure console``; returns the exit code."""
    from .users import ROLES, UsersError, _read, remove_user, write_user

    def fail(text: str) -> int:
        print(f"centaure console: {text}", file=sys.stderr)
        return 1

    from .settings import resolved

    path = args.file or resolved(settings, settings.section("console").users_file)
    if not path:
        return fail("no users file: set [console] users_file in the settings (or give --file)")
    try:
        if args.action == "users":
            users = _read(path)
            for name in sorted(users):
                print(f"{name}  {users[name]['role']}")
            print(f"{len(users)} user{'s' * (len(users) != 1)} in {path}")
            return 0
        if not args.name:
            return fail(f"{args.action} needs the user's NAME")
        if args.action == "remove-user":
            if not remove_user(path, args.name):
                return fail(f"no user {args.name!r} in {path}")
            print(f"removed {args.name} from {path}")
            return 0
        known = _read(path).get(args.name)
        if args.action == "passwd" and known is None:
            return fail(f"no user {args.name!r} in {path} (add-user adds one)")
        role = args.role or (known["role"] if known else ROLES[0])
        password = None
        if args.action == "passwd" or known is None or args.password_stdin:
            password = _password(args)
            if password is None:
                return fail("no password given: nothing changed")
        new = write_user(path, args.name, role, password)
    except (UsersError, OSError) as e:
        return fail(str(e))
    print(f"{'added' if new else 'updated'} {args.name} ({role}) in {path}; a running console "
          "reads it at the next login")
    return 0


def add_commands(sub: argparse._SubParsersAction, with_config: Callable) -> dict[str, Callable]:
    """``centaure console``: its parser, and its handler by name."""
    add_console_arguments(with_config(sub.add_parser(
        "console", help="the web console's users: add-user, passwd, remove-user, users")))
    return {"console": console_command}
