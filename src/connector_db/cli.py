"""``centaure query``: samples, events and alarms read back from the database.

The queries are those of
:mod:`centaure_shared.storage.query`; this module parses the options, prints a table
(or JSON, or CSV) and turns every problem into one line on stderr::

    centaure query -c settings.ini r1 ifInOctets --index 3 --since 1h
    centaure query -c settings.ini r1 --from 2026-11-23T10:00 --to 2026-11-23T11:00 --csv
    centaure query -c settings.ini --events --since 15m
    centaure query -c settings.ini --alarms --active --json

With ``[db] layout = per_device`` the samples are read from the table of
each metric of the device (``table_template``, ``table_struct``; the
inventory gives the device ids the writer names them after), in the same
formats. Times are printed as ISO 8601 UTC with milliseconds. The database URL is
only ever shown with its password masked.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, TextIO

from connector.settings import Duration, InvalidValue, ParseContext, mask_url

# SQLAlchemy and centaure_shared.storage.query are imported by the functions that run the
# query, not here: `centaure` calls add_query_arguments to build its parser for
# every subcommand, and importing SQLAlchemy costs about 0.3 s.

__all__ = ["add_query_arguments", "query_command"]

_PROG = "centaure query"
# Fields holding UNIX seconds, printed as ISO 8601 in every format.
_TIME_FIELDS = frozenset({"ts", "first_seen", "last_seen", "cleared_at", "last_ts"})
_UNIX_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
# Longest --since: 100 years (beyond is a typo).
_SINCE = Duration(0.001, 100 * 365 * 86400)


def add_query_arguments(parser: argparse.ArgumentParser) -> None:
    """Define the options of ``centaure query`` on ``parser`` (``-c`` is added by the caller)."""
    parser.description = ("Print stored samples of a device (the default), events (--events) "
                          "or alarms (--alarms) as a table, JSON or CSV.")
    parser.add_argument("host", nargs="?",
                        help="device name (required for samples; optional filter for "
                             "--events and --alarms)")
    parser.add_argument("metric", nargs="?", help="metric name (samples only; default: all)")
    parser.add_argument("--index", metavar="I", help="metric index, e.g. 3 (samples only)")
    parser.add_argument("--since", metavar="DURATION",
                        help="only the last DURATION, e.g. 15m, 1h, 2d")
    parser.add_argument("--from", dest="start", metavar="TIME",
                        help="start (inclusive): ISO 8601 date-time, UTC unless it has an "
                             "offset (2026-11-23T10:00:00Z), or UNIX seconds")
    parser.add_argument("--to", dest="end", metavar="TIME",
                        help="end (inclusive), as --from")
    # Kept as text and checked by query_command: every mistake gets the same one-line error.
    parser.add_argument("--limit", metavar="N", default="100",
                        help="at most N rows (default 100)")
    parser.add_argument("--order", metavar="asc|desc", default=None,
                        help="desc: newest first (default); asc: oldest first")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="a JSON array, one object per row")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header line")
    parser.add_argument("--events", action="store_true", help="stored traps and informs")
    parser.add_argument("--alarms", action="store_true", help="current state of alarms")
    parser.add_argument("--notifications", action="store_true",
                        help="the alerter's notification attempts (the delivery ledger)")
    parser.add_argument("--active", action="store_true",
                        help="with --alarms: only alarms not cleared")
    parser.add_argument("--resolution", metavar="raw|5m|1h|auto", default="auto",
                        help="samples: raw rows, 5-minute or hourly rollups (min, max, avg, "
                             "count, last); auto (default): raw up to 6 hours, 5m up to 7 "
                             "days, 1h beyond, raw when the rollups have nothing there")


def query_command(settings: Any, args: argparse.Namespace) -> int:
    """Run ``centaure query``: 0 when the query ran (even with no rows), 1 on any error."""
    import sqlalchemy as sa

    from centaure_shared.storage.query import QueryError

    url = settings.database.url.reveal()
    try:
        return _query(settings, args, url, sys.stdout)
    except QueryError as exc:
        return _fail(str(exc), url)
    except sa.exc.SQLAlchemyError as exc:
        return _fail(f"cannot query {_masked(url)}: {_first_line(exc)}", url)
    except BrokenPipeError:
        # `centaure query ... | head`: the reader left; not an error worth a traceback.
        # Point stdout at /dev/null so the interpreter's final flush fails no more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:  # a driver missing, an OS error: one line, never a traceback
        return _fail(f"{type(exc).__name__}: {_first_line(exc)}", url)


# --- the command -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Request:
    """The checked options."""

    what: str  # samples, events or alarms
    host: str | None
    metric: str | None
    index: str | None
    start: float | None
    end: float | None
    window: str  # how the time range reads in "no samples ... <window>"
    limit: int
    order: str
    output: str  # table, json or csv
    resolution: str = "raw"  # raw, 5m, 1h or auto (samples)
    # How the resolution was chosen, for the summary ("" when asked for as such).
    why: str = ""


def _query(settings: Any, args: argparse.Namespace, url: str, out: TextIO) -> int:
    import sqlalchemy as sa

    from centaure_shared.storage import query
    from centaure_shared.storage.schema import make_schema

    from .per_device_query import per_device_samples

    req = _request(args, time.time())
    db = settings.section("db")
    _check_sqlite_file(url)
    schema = make_schema(db.table_prefix)
    engine = sa.create_engine(url)
    try:
        if req.what == "samples" and db.layout == "per_device":
            if req.resolution in ("5m", "1h"):
                raise _error(f"--resolution {req.resolution}: [db] layout = per_device "
                             "keeps raw samples only")
            rows = per_device_samples(
                engine, _per_device_layout(settings, db), req.host, req.metric,
                index=req.index, start=req.start, end=req.end, limit=req.limit,
                order=req.order)
        elif req.what == "samples":
            req, rows = _samples_at_resolution(query, engine, schema, req)
        elif req.what == "events":
            rows = query.events(engine, schema, req.host, start=req.start, end=req.end,
                                limit=req.limit, order=req.order)
        elif req.what == "notifications":
            rows = query.notifications(engine, schema, req.host, start=req.start, end=req.end,
                                       limit=req.limit, order=req.order)
        else:
            rows = query.alarms(engine, schema, req.host, active=args.active, limit=req.limit)
    finally:
        engine.dispose()
    _print(req, args, rows, out)
    return 0


def _per_device_layout(settings: Any, db: Any) -> Any:
    """The per_device layout of ``[db]``, with the inventory's ids as the writer's table names."""
    from centaure_shared.inventory import InventoryError, load_optional_inventory

    from .per_device import PerDeviceLayout

    try:
        inventory = load_optional_inventory(settings)
    except InventoryError as exc:
        # The writer names tables after inventory ids: without them a guess could mislead.
        raise _error(f"[db] layout = per_device needs the inventory's device ids: "
                     f"{_first_line(exc)}") from None
    ids = {} if inventory is None else {d.name: d.id or d.name for d in inventory}
    return PerDeviceLayout(db.table_struct, db.table_template, ids)


def _request(args: argparse.Namespace, now: float) -> _Request:
    """Check the combination of options; QueryError says what is wrong."""
    if args.events + args.alarms + args.notifications > 1:
        raise _error("--events, --alarms and --notifications cannot be combined: choose one")
    what = ("events" if args.events else "alarms" if args.alarms
            else "notifications" if args.notifications else "samples")
    if args.active and what != "alarms":
        raise _error("--active only applies to --alarms")
    if what == "samples" and not args.host:
        raise _error("a HOST is required for samples (or use --events or --alarms)")
    if what != "samples" and (args.metric is not None or args.index is not None):
        raise _error(f"METRIC and --index apply to samples, not to --{what}")
    if args.since is not None and (args.start is not None or args.end is not None):
        raise _error("--since cannot be combined with --from/--to: give one or the other")
    if what == "alarms":
        if args.since is not None or args.start is not None or args.end is not None:
            raise _error("--since, --from and --to do not apply to --alarms "
                             "(they list the current state, the most recently seen first)")
        if args.order is not None:
            raise _error("--order does not apply to --alarms (most recently seen first)")
    limit = _parse_limit(args.limit)
    order = "desc" if args.order is None else args.order
    if order not in ("asc", "desc"):
        raise _error(f"--order {args.order!r}: expected asc (oldest first) or desc "
                         "(newest first)")
    start = end = None
    window = ""
    if args.since is not None:
        try:
            since = _SINCE.parse(args.since.strip(), ParseContext())
        except InvalidValue as exc:
            raise _error(f"--since {args.since!r}: {exc}") from None
        start = now - since
        window = f" in the last {args.since.strip()}"
    else:
        if args.start is not None:
            start = _parse_time("--from", args.start)
        if args.end is not None:
            end = _parse_time("--to", args.end)
        if start is not None and end is not None:
            if start > end:
                raise _error(f"--from {_iso(start)} is after --to {_iso(end)}")
            window = f" from {_iso(start)} to {_iso(end)}"
        elif start is not None:
            window = f" since {_iso(start)}"
        elif end is not None:
            window = f" until {_iso(end)}"
    output = "json" if args.json else "csv" if args.csv else "table"
    resolution = str(args.resolution).strip().lower()
    if resolution not in ("raw", "5m", "1h", "auto"):
        raise _error(f"--resolution {args.resolution!r}: expected raw, 5m, 1h or auto")
    if what != "samples" and resolution not in ("raw", "auto"):
        raise _error(f"--resolution applies to samples, not to --{what}")
    return _Request(what, args.host or None, args.metric, args.index, start, end, window,
                    limit, order, output, resolution)


def _samples_at_resolution(query: Any, engine: Any, schema: Any,
                           req: _Request) -> tuple[_Request, Sequence[Any]]:
    """Raw samples or rollups as ``req.resolution`` says; the request as answered."""
    resolution, why = req.resolution, ""
    if resolution == "auto":
        resolution = query.pick_resolution(req.start, req.end, time.time())
        why = "auto"
    if resolution != "raw":
        rows = query.rollups(engine, schema, req.host, req.metric, index=req.index,
                             start=req.start, end=req.end, limit=req.limit, order=req.order,
                             resolution=resolution)
        if rows or why != "auto":
            return dataclasses.replace(req, what="rollups", resolution=resolution, why=why), rows
        why = f"auto: no {resolution} rollups there"
        resolution = "raw"
    rows = query.samples(engine, schema, req.host, req.metric, index=req.index,
                         start=req.start, end=req.end, limit=req.limit, order=req.order)
    return dataclasses.replace(req, resolution=resolution, why=why), rows


def _parse_limit(raw: str) -> int:
    text = str(raw).strip()
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise _error(f"--limit {raw!r}: expected a whole number of at least 1")
    return int(text)


def _parse_time(option: str, raw: str) -> float:
    """ISO 8601 (UTC when naive) or UNIX seconds, as UNIX seconds."""
    text = raw.strip()
    if _UNIX_RE.fullmatch(text):
        value = float(text)
    else:
        try:
            # Python 3.11 takes "Z", a space for "T", a date alone, offsets.
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise _error(
                f"{option} {raw!r}: expected an ISO 8601 date-time such as "
                "2026-11-23T10:00:00Z (UTC when it has no offset) or UNIX seconds") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        value = dt.timestamp()
    if not math.isfinite(value):
        raise _error(f"{option} {raw!r}: not a finite time")
    return value


def _check_sqlite_file(url: str) -> None:
    """Refuse a SQLite file that does not exist: connecting would create an empty one."""
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return  # create_engine reports it (masked by query_command)
    if parsed.get_backend_name() != "sqlite":
        return
    path = parsed.database
    if not path or path == ":memory:" or path.startswith("file:") or parsed.query.get("uri"):
        return
    if not os.path.exists(path):
        raise _error(f"no SQLite database at {path} ([database] url = {_masked(url)}): "
                         "run 'centaure db upgrade -c settings.ini' or start centaure-db")


# --- output ------------------------------------------------------------------------------


def _print(req: _Request, args: argparse.Namespace, rows: Sequence[Any], out: TextIO) -> None:
    if req.output != "table" and (req.what == "rollups" or (
            req.what == "samples" and args.resolution != "auto")):
        # Machine output stays parseable: which rows these are goes to stderr.
        print(f"{_PROG}: {_resolution_text(req)}", file=sys.stderr)
    if req.output == "json":
        _print_json(rows, out)
    elif req.output == "csv":
        _print_csv(req, rows, out)
    elif not rows:
        out.write(_nothing(req, args) + "\n")
    else:
        headers, getters = _COLUMNS[req.what]
        table = [[_cell(get(r)) for get in getters] for r in rows]
        out.write(_aligned([list(headers), *table]))
        out.write(_summary(req, args, len(rows)) + "\n")


def _plain(row: Any) -> dict[str, Any]:
    """A row as a dict of JSON-ready values: times as ISO 8601 strings."""
    d = dataclasses.asdict(row)
    for k in _TIME_FIELDS & d.keys():
        if d[k] is not None:
            d[k] = _iso(d[k])
    if "varbinds" in d:
        d["varbinds"] = list(d["varbinds"])
    return d


def _print_json(rows: Sequence[Any], out: TextIO) -> None:
    if not rows:
        out.write("[]\n")
        return
    # One object per line: valid JSON that grep and head still work on.
    lines = [json.dumps(_plain(r), ensure_ascii=False) for r in rows]
    out.write("[\n" + ",\n".join(lines) + "\n]\n")


def _print_csv(req: _Request, rows: Sequence[Any], out: TextIO) -> None:
    fields = [f.name for f in dataclasses.fields(_row_type(req.what))]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(fields)
    for r in rows:
        d = _plain(r)
        writer.writerow([_csv_value(d[f]) for f in fields])


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"  # as in the JSON output, not Python's True
    if isinstance(v, list):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, float):
        return _number(v)
    return v


def _number(v: float) -> str:
    """A float without noise: 42.0 -> 42, 0.1 -> 0.1 (repr is the shortest exact form)."""
    if v.is_integer() and abs(v) < 1e16:
        return str(int(v))
    return repr(v)


def _cell(v: Any) -> str:
    """One table cell on one line: control characters escaped."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return _number(v)
    text = str(v)
    if any(c < " " or c == "\x7f" for c in text):
        text = text.encode("unicode_escape").decode("ascii")
    return text


def _aligned(lines: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() + "\n" for line in lines)


def _what_text(req: _Request, args: argparse.Namespace) -> str:
    """The subject of the summary line: "samples", "active alarms"..."""
    if req.what == "rollups":
        return f"{_ROLLUP_NAMES[req.resolution]} rollups"
    return "active alarms" if req.what == "alarms" and args.active else req.what


_ROLLUP_NAMES = {"5m": "5-minute", "1h": "hourly"}


def _resolution_text(req: _Request) -> str:
    """Which rows were read: "hourly rollups (resolution 1h, auto)", "raw samples"..."""
    text = (f"{_ROLLUP_NAMES[req.resolution]} rollups (resolution {req.resolution}"
            if req.what == "rollups" else "raw samples (resolution raw")
    return text + (f", {req.why})" if req.why else ")")


def _nothing(req: _Request, args: argparse.Namespace) -> str:
    """The line for an empty result: "no samples for r1 cpu in the last 1h"."""
    subject = [req.host or ""]
    if req.what in ("samples", "rollups"):
        subject += [req.metric or "", f"index {req.index}" if req.index is not None else ""]
    subject_text = " ".join(s for s in subject if s)
    text = f"no {_what_text(req, args)}"
    if subject_text:
        text += f" for {subject_text}"
    return text + req.window


def _summary(req: _Request, args: argparse.Namespace, n: int) -> str:
    noun = _what_text(req, args)
    if n == 1:
        noun = noun[:-1]  # samples -> sample, events -> event, alarms -> alarm
    if req.what == "alarms":
        how = "most recently seen first"
    else:
        how = "newest first" if req.order == "desc" else "oldest first"
    text = f"{n} {noun} ({how})"
    if req.what == "rollups" or (req.what == "samples" and req.why.startswith("auto:")):
        text += f"; {_resolution_text(req)}"
    if n == req.limit:
        text += f"; --limit {req.limit} reached, there may be more"
    return text


def _getter(name: str) -> Callable[[Any], Any]:
    if name in _TIME_FIELDS:
        return lambda r: None if getattr(r, name) is None else _iso(getattr(r, name))
    return lambda r: getattr(r, name)


def _columns(*spec: tuple[str, str]) -> tuple[tuple[str, ...], tuple[Callable, ...]]:
    return tuple(h for h, _ in spec), tuple(_getter(f) for _, f in spec)


_COLUMNS = {
    "samples": _columns(("TIME", "ts"), ("METRIC", "metric"), ("INDEX", "index"),
                        ("VALUE", "value"), ("UNIT", "unit")),
    "rollups": _columns(("TIME", "ts"), ("METRIC", "metric"), ("INDEX", "index"),
                        ("MIN", "min"), ("MAX", "max"), ("AVG", "avg"), ("COUNT", "count"),
                        ("LAST", "last"), ("UNIT", "unit")),
    "events": _columns(("TIME", "ts"), ("HOST", "host"), ("ADDRESS", "address"),
                       ("SEVERITY", "severity"), ("ACTION", "action"), ("NAME", "name"),
                       ("MESSAGE", "message")),
    "notifications": _columns(("TIME", "ts"), ("HOST", "host"), ("REF", "ref"),
                              ("CHANNEL", "channel"), ("RECIPIENT", "recipient"),
                              ("STATE", "state"), ("ATTEMPTS", "attempts"),
                              ("REASON", "reason")),
    "alarms": _columns(("REF", "ref"), ("HOST", "host"), ("SEVERITY", "severity"),
                       ("STATE", "state"), ("NAME", "name"), ("COUNT", "count"),
                       ("FIRST SEEN", "first_seen"), ("LAST SEEN", "last_seen"),
                       ("ACKED BY", "acked_by"), ("MESSAGE", "message")),
}


def _row_type(what: str) -> type:
    from centaure_shared.storage.query import (AlarmRow, EventRow, NotificationRow, RollupRow,
                                               SampleRow)

    return {"samples": SampleRow, "events": EventRow, "alarms": AlarmRow,
            "notifications": NotificationRow, "rollups": RollupRow}[what]


def _iso(seconds: float) -> str:
    from centaure_shared.storage.query import iso_time

    return iso_time(seconds)


def _error(message: str) -> Exception:
    """A QueryError: bad options get the same one-line treatment as bad queries."""
    from centaure_shared.storage.query import QueryError

    return QueryError(message)


# --- errors --------------------------------------------------------------------------------


def _masked(url: str) -> str:
    return mask_url(url)


def _first_line(exc: BaseException) -> str:
    """The driver's message, first line only: SQLAlchemy appends the SQL and its parameters."""
    orig = getattr(exc, "orig", None)
    if orig is not None:
        exc = orig
    return (str(exc).splitlines() or [type(exc).__name__])[0][:500]


def _passwords(url: str) -> list[str]:
    """The URL's password as written (maybe %-encoded) and decoded."""
    import sqlalchemy as sa

    found = []
    userinfo = url.partition("://")[2].rpartition("@")[0]
    if ":" in userinfo:
        found.append(userinfo.split(":", 1)[1])
    try:
        decoded = sa.engine.make_url(url).password
    except Exception:  # not a URL SQLAlchemy can parse: the raw form is all there is
        decoded = None
    if decoded:
        found.append(str(decoded))
    return [p for p in found if p]


def _fail(message: str, url: str) -> int:
    # Belt and braces: whatever a driver put in its message, the password goes.
    for password in sorted(_passwords(url), key=len, reverse=True):
        message = message.replace(password, "***")
    print(f"{_PROG}: {message}", file=sys.stderr)
    return 1


def add_commands(sub: argparse._SubParsersAction, with_config: Callable) -> dict[str, Callable]:
    """``centaure db`` and ``centaure query``: their parsers, and their handlers by name."""
    db = with_config(sub.add_parser("db", help="the SQL schema: upgrade, current, check, "
                                               "maintain"))
    db.add_argument("action", choices=("upgrade", "current", "check", "maintain"),
                    help="upgrade: create or upgrade the tables; current: print the "
                         "revision; check: exit 1 unless the schema is up to date; "
                         "maintain: apply [retention] (drop old partitions and rows, make "
                         "partitions ahead)")
    add_query_arguments(with_config(sub.add_parser("query", help="stored samples, events or alarms")))

    def db_handler(settings: Any, args: argparse.Namespace) -> int:
        from .migrate import db_command

        if args.action == "maintain":
            from .maintain import maintain_command

            return maintain_command(settings)

        return db_command(settings, args.action)

    return {"db": db_handler, "query": query_command}
