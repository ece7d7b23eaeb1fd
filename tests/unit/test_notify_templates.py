"""Templates: shipped defaults read well, user overrides, sandbox, webhook JSON."""

from __future__ import annotations

import json

import pytest

from connector_alerter.templates import TemplateError, Templates, context

T0 = 1_795_000_000.0


def ctx(**kw):
    a = {"ref": 7, "host": "r1", "name": "linkDown", "severity": "major", "state": "raised",
         "message": "link 3 <down>", "first_seen": T0, "last_seen": T0, "cleared_at": None,
         "count": 2, "origin": "trap", "acked_by": None, "flapping": False,
         "inventory": {"device_type": "router", "model": "ISR4331", "address": "10.0.0.1"},
         "link": "https://noc.example/alarms/7", "idempotency_key": "7:raised:1795000000.0",
         "new": True}
    r = dict(a, ref=8, name="fanFail", state="cleared", cleared_at=T0 + 3720, new=True)
    args = {"route": "core", "group": {"host": "r1"}, "alarms": [a], "resolved": [r],
            "repeat": 0, "idempotency_key": "g:abc", "now": T0 + 3720}
    args.update(kw)
    return context(**args)


def test_default_email_subject_text_html():
    mail = Templates().email(ctx())
    assert mail["subject"] == "[Centaure] 1 active, 1 resolved - r1: linkDown and more"
    assert "[MAJOR] r1 - linkDown (new)" in mail["text"]
    assert "device: router ISR4331 (10.0.0.1)" in mail["text"]
    assert "fanFail: cleared at" in mail["text"] and "after 1h 2m" in mail["text"]
    assert "https://noc.example/alarms/7" in mail["text"]
    # HTML is escaped; the link is a link.
    assert "link 3 &lt;down&gt;" in mail["html"]
    assert '<a href="https://noc.example/alarms/7">linkDown</a>' in mail["html"]


def test_reminder_and_resolved_only_subjects():
    assert "(reminder)" in Templates().email(ctx(repeat=2, resolved=[]))["subject"]
    only = Templates().email(ctx(alarms=[]))["subject"]
    assert only == "[Centaure] 1 resolved - r1: fanFail"


def test_user_templates_and_inventory_fields():
    t = Templates({"subject": "{{ alarms[0].inventory.model }} on {{ group.host }}",
                   "webhook": '{"text": {{ (alarms[0].host ~ " " ~ alarms[0].name) | tojson }},'
                              ' "key": {{ idempotency_key | tojson }}}'})
    assert t.email(ctx())["subject"] == "ISR4331 on r1"
    assert json.loads(t.webhook(ctx())) == {"text": "r1 linkDown", "key": "g:abc"}


def test_default_webhook_body_carries_keys():
    body = json.loads(Templates().webhook(ctx()))
    assert body["idempotency_key"] == "g:abc" and body["status"] == "firing"
    assert body["alarms"][0]["idempotency_key"] == "7:raised:1795000000.0"
    assert body["resolved"][0]["name"] == "fanFail"


def test_sandbox_refuses_python_internals():
    t = Templates({"subject": "{{ ''.__class__.__mro__[1].__subclasses__() }}"})
    with pytest.raises(TemplateError):
        t.email(ctx())


def test_webhook_template_must_render_json():
    with pytest.raises(TemplateError, match="does not render JSON"):
        Templates({"webhook": "not json {{ route }}"}).webhook(ctx())
