"""Notification templates: Jinja2, sandboxed; email subject, text and HTML bodies, webhook JSON.

Every template sees the same context (:func:`context`):

* ``alarms``: the group's active alarms (each a dict of the ``alarm`` message's
  fields plus ``inventory`` (the device's fields: ``name``, ``address``,
  ``device_type``, ``model``, ``id``, ``tags`` and the columns listed in
  ``[alerter] device_fields``, see :func:`device_context`), ``link`` (the
  ``[alerter] link_template`` filled in), ``idempotency_key`` and ``new``
  (true for a transition not told before));
* ``resolved``: the alarms that cleared since the last message, same form;
* ``route`` (its name), ``group`` (the ``group_by`` values), ``repeat``
  (0 for a first notice, n for the n-th reminder), ``idempotency_key`` (the
  whole message's), ``now`` (UNIX seconds);
* filters ``datetime`` (UNIX seconds -> ``2026-11-23 20:32:38 UTC``) and
  ``duration`` (seconds -> ``1h 5m``).

Templates run in Jinja2's :class:`~jinja2.sandbox.SandboxedEnvironment`
(a user template cannot reach Python internals); the HTML body is
auto-escaped, the others are not. The webhook template must render a JSON
value; the default one is ``{{ payload | tojson }}`` with ``payload``
(:func:`default_payload`) in the context.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import jinja2
from jinja2.sandbox import SandboxedEnvironment

__all__ = ["DEFAULTS", "DEVICE_FIELDS", "TemplateError", "Templates", "check", "context",
           "default_payload", "device_context"]

#: The device fields every template and webhook body sees. Other inventory
#: columns only when ``[alerter] device_fields`` lists them: users keep
#: per-device communities and keys there (the credentials' ``__column__``
#: tokens), which must not go to a mail or a third-party webhook.
DEVICE_FIELDS: tuple[str, ...] = ("name", "address", "device_type", "model", "id", "tags")

#: Shipped templates, overridable per route (``templates:`` in the routes file).
DEFAULTS: dict[str, str] = {
    "subject": (
        "[Centaure] "
        "{% if alarms %}{{ alarms | length }} active{% if resolved %}, {% endif %}{% endif %}"
        "{% if resolved %}{{ resolved | length }} resolved{% endif %}"
        "{% if repeat %} (reminder){% endif %}"
        "{% set first = (alarms or resolved)[0] %}"
        " - {{ first.host }}: {{ first.name }}"
        "{% if (alarms | length) + (resolved | length) > 1 %} and more{% endif %}"
    ),
    "text": (
        "{% if repeat %}Reminder: still active.\n\n{% endif %}"
        "{% if alarms %}ACTIVE ({{ alarms | length }})\n"
        "{% for a in alarms %}\n"
        "* [{{ a.severity | upper }}] {{ a.host }} - {{ a.name }}{% if a.new %} (new){% endif %}\n"
        "  {{ a.message }}\n"
        "  since {{ a.first_seen | datetime }}, {{ a.count }} time{{ 's' if a.count != 1 }}"
        "{% if a.acked_by %}, acked by {{ a.acked_by }}{% endif %}\n"
        "{% if a.inventory.device_type %}  device: {{ a.inventory.device_type }}"
        "{% if a.inventory.model %} {{ a.inventory.model }}{% endif %}"
        "{% if a.inventory.address %} ({{ a.inventory.address }}){% endif %}\n{% endif %}"
        "{% if a.link %}  {{ a.link }}\n{% endif %}"
        "{% endfor %}\n{% endif %}"
        "{% if resolved %}RESOLVED ({{ resolved | length }})\n"
        "{% for a in resolved %}\n"
        "* {{ a.host }} - {{ a.name }}: cleared at {{ a.cleared_at | datetime }}"
        " after {{ (a.cleared_at - a.first_seen) | duration }}\n"
        "{% if a.link %}  {{ a.link }}\n{% endif %}"
        "{% endfor %}\n{% endif %}"
        "-- \nCentaure, route {{ route }}; idempotency key {{ idempotency_key }}\n"
    ),
    "html": (
        "<!DOCTYPE html><html><body style=\"font-family: sans-serif; font-size: 14px\">"
        "{% if repeat %}<p><b>Reminder:</b> still active.</p>{% endif %}"
        "{% if alarms %}<h3>Active ({{ alarms | length }})</h3>"
        "<table cellpadding=\"4\" style=\"border-collapse: collapse\">"
        "<tr style=\"background: #eee\"><th>Severity</th><th>Host</th><th>Alarm</th>"
        "<th>Message</th><th>Since</th><th>Count</th></tr>"
        "{% for a in alarms %}<tr>"
        "<td style=\"color: {{ {'critical': '#b00', 'major': '#d60', 'minor': '#a80'}"
        ".get(a.severity, '#444') }}\"><b>{{ a.severity | upper }}</b></td>"
        "<td>{{ a.host }}</td>"
        "<td>{% if a.link %}<a href=\"{{ a.link }}\">{{ a.name }}</a>{% else %}{{ a.name }}"
        "{% endif %}{% if a.new %} <i>(new)</i>{% endif %}</td>"
        "<td>{{ a.message }}</td><td>{{ a.first_seen | datetime }}</td>"
        "<td>{{ a.count }}</td></tr>{% endfor %}</table>{% endif %}"
        "{% if resolved %}<h3>Resolved ({{ resolved | length }})</h3><ul>"
        "{% for a in resolved %}<li>{{ a.host }} - "
        "{% if a.link %}<a href=\"{{ a.link }}\">{{ a.name }}</a>{% else %}{{ a.name }}{% endif %}"
        ": cleared at {{ a.cleared_at | datetime }}"
        " after {{ (a.cleared_at - a.first_seen) | duration }}</li>{% endfor %}</ul>{% endif %}"
        "<p style=\"color: #888; font-size: 12px\">Centaure, route {{ route }}; "
        "idempotency key {{ idempotency_key }}</p></body></html>"
    ),
    "webhook": "{{ payload | tojson }}",
}


class TemplateError(ValueError):
    """A template that does not compile or does not render (the message says where)."""


def _datetime(ts: Any) -> str:
    if ts is None or ts == "":
        return ""
    return datetime.fromtimestamp(float(ts), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: Any) -> str:
    try:
        s = int(round(float(seconds)))
    except (TypeError, ValueError):
        return ""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            parts.append(f"{s // size}{unit}")
            s %= size
    if s or not parts:
        parts.append(f"{s}s")
    return " ".join(parts[:2])


def _environment(html: bool) -> SandboxedEnvironment:
    env = SandboxedEnvironment(autoescape=html, undefined=jinja2.ChainableUndefined,
                               keep_trailing_newline=True)
    env.filters["datetime"] = _datetime
    env.filters["duration"] = _duration
    return env


_PLAIN = _environment(False)
_HTML = _environment(True)


def _env(key: str) -> SandboxedEnvironment:
    return _HTML if key == "html" else _PLAIN


def check(key: str, text: str) -> None:
    """Raise ValueError when template ``key`` (subject, text, html, webhook) does not compile."""
    try:
        _env(key).from_string(text)
    except jinja2.TemplateSyntaxError as e:
        raise ValueError(f"template syntax error line {e.lineno}: {e.message}") from None


def default_payload(ctx: Mapping[str, Any]) -> dict[str, Any]:
    """The default webhook body: a version, the keys, the group, its alarms."""
    def item(a: Mapping[str, Any]) -> dict[str, Any]:
        return {k: a.get(k) for k in ("ref", "host", "name", "severity", "state", "message",
                                       "first_seen", "last_seen", "cleared_at", "count",
                                       "origin", "acked_by", "flapping", "link",
                                       "idempotency_key", "new", "inventory")}
    return {
        "version": 1,
        "idempotency_key": ctx["idempotency_key"],
        "route": ctx["route"],
        "group": ctx["group"],
        "repeat": ctx["repeat"],
        "status": "firing" if ctx["alarms"] else "resolved",
        "alarms": [item(a) for a in ctx["alarms"]],
        "resolved": [item(a) for a in ctx["resolved"]],
    }


def device_context(inventory: Mapping[str, Any], extra: Sequence[str] = ()) -> dict[str, Any]:
    """The ``inventory`` of an alarm in the context: :data:`DEVICE_FIELDS` and ``extra`` only."""
    return {k: inventory[k] for k in dict.fromkeys((*DEVICE_FIELDS, *extra)) if k in inventory}


def context(*, route: str, group: Mapping[str, str], alarms: list[dict], resolved: list[dict],
            repeat: int, idempotency_key: str, now: float) -> dict[str, Any]:
    """The context every template receives (see the module's docstring)."""
    ctx: dict[str, Any] = {"route": route, "group": dict(group), "alarms": alarms,
                           "resolved": resolved, "repeat": repeat,
                           "idempotency_key": idempotency_key, "now": now}
    ctx["payload"] = default_payload(ctx)
    return ctx


class Templates:
    """The templates of one route: the shipped defaults overridden by ``overrides``."""

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        texts = dict(DEFAULTS)
        texts.update(overrides or {})
        try:
            self._compiled = {k: _env(k).from_string(v) for k, v in texts.items()}
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(f"template syntax error line {e.lineno}: {e.message}") from None

    def render(self, key: str, ctx: Mapping[str, Any]) -> str:
        """Render template ``key``; :class:`TemplateError` when it fails."""
        try:
            return self._compiled[key].render(ctx)
        except jinja2.TemplateError as e:  # includes SecurityError from the sandbox
            raise TemplateError(f"template {key!r}: {e}") from None

    def email(self, ctx: Mapping[str, Any]) -> dict[str, str]:
        """``subject`` (one line), ``text`` and ``html`` of an email."""
        subject = " ".join(self.render("subject", ctx).split())
        return {"subject": subject[:250], "text": self.render("text", ctx),
                "html": self.render("html", ctx)}

    def webhook(self, ctx: Mapping[str, Any]) -> bytes:
        """The webhook's JSON body; :class:`TemplateError` unless it renders valid JSON."""
        text = self.render("webhook", ctx)
        try:
            json.loads(text)
        except ValueError as e:
            raise TemplateError(f"template 'webhook' does not render JSON: {e}") from None
        return text.encode("utf-8")
