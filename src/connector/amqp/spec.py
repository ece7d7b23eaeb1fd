"""Loading the AMQP 0-9-1 specification that txamqp builds its methods from.

txamqp does not ship a spec, so Centaure carries RabbitMQ's extended one
(confirm.select, basic.nack, exchange.bind; BSD licence, the file Debian's
``amqp-specs`` package installs) as package data: :data:`DEFAULT_SPEC`.
``[bus] spec`` may point to another file. That file still lacks
``connection.blocked`` (60) and ``connection.unblocked`` (61), which RabbitMQ
sends to clients advertising the ``connection.blocked`` capability: an
unknown method would make txamqp drop the connection, so they are added here
before the spec is parsed.
"""

from __future__ import annotations

import functools
import os

from txamqp import spec as txspec

#: The spec shipped inside the package.
DEFAULT_SPEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "amqp0-9-1.extended.xml")

_BLOCKED_METHODS = """
    <method name="blocked" index="60">
      <chassis name="server" implement="MAY"/>
      <chassis name="client" implement="MAY"/>
      <field name="reason" domain="shortstr"/>
    </method>
    <method name="unblocked" index="61">
      <chassis name="server" implement="MAY"/>
      <chassis name="client" implement="MAY"/>
    </method>
"""


class SpecError(Exception):
    """The AMQP spec file is missing or unusable."""


@functools.lru_cache(maxsize=4)
def load_spec(path: str | None = None):
    """Return the parsed spec at ``path`` (None: the shipped one), with connection.blocked/unblocked."""
    path = path or DEFAULT_SPEC
    if not os.path.exists(path):
        raise SpecError(
            f"AMQP spec file {path!r} not found: set [bus] spec to RabbitMQ's 0-9-1 "
            "extended spec, or leave it empty for the one Centaure ships"
        )
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if 'name="blocked"' not in text:
        start = text.find('<class name="connection"')
        end = text.find("</class>", start)
        if start < 0 or end < 0:
            raise SpecError(f"{path!r} has no connection class: not an AMQP 0-9-1 spec")
        text = text[:end] + _BLOCKED_METHODS + text[end:]
    return txspec.load_string(text, specfilename=path)
