"""Loading the AMQP 0-9-1 specification that txamqp builds its methods from.

txamqp does not ship a spec; Debian's ``amqp-specs`` ships RabbitMQ's extended
one (confirm.select, basic.nack, exchange.bind). That file still lacks
``connection.blocked`` (60) and ``connection.unblocked`` (61), which RabbitMQ
sends to clients advertising the ``connection.blocked`` capability: an
unknown method would make txamqp drop the connection, so they are added here
before the spec is parsed.
"""

from __future__ import annotations

import functools
import os

from txamqp import spec as txspec

DEFAULT_SPEC = "/usr/share/amqp/specs/0-9-1-rabbit/amqp0-9-1.stripped.extended.xml"

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
def load_spec(path: str = DEFAULT_SPEC):
    """Return the parsed spec at ``path``, with connection.blocked/unblocked."""
    if not os.path.exists(path):
        raise SpecError(
            f"AMQP spec file {path!r} not found: install Debian's amqp-specs "
            "package or set [bus] spec to RabbitMQ's 0-9-1 extended spec"
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
