"""The core route table: first match wins and a catch-all default always exists."""

from __future__ import annotations

from umsg.model import Address, IdentityKind, Inbound
from umsg.routes.build import build_table
from umsg.routes.settings import RouteSettings


def msg(channel: str = "email", to: str = "support@acme.test", sender: str = "a@b.test") -> Inbound:
    return Inbound(channel=channel, sender=Address(IdentityKind.EMAIL, sender), recipients=(to,),
                   dedupe_key="k", raw=b"")


def test_empty_table_routes_everything_to_default() -> None:
    assert build_table([]).match(msg()).route == "default"


def test_first_matching_route_wins_and_explain_says_why_others_did_not() -> None:
    table = build_table([
        RouteSettings(name="sms", channel="sms", queue="texts"),
        RouteSettings(name="sales", to="sales@*", queue="sales", priority=2),
        RouteSettings(name="sales-too", to="sales@acme.test", queue="other"),
    ])
    d = table.match(msg(to="Sales@Acme.test"))
    assert (d.route, d.queue, d.priority) == ("sales", "sales", 2)
    explained = table.explain(msg(to="sales@acme.test"))
    assert explained[0] == {"route": "sms", "matched": False, "reason": "channel is 'email', route wants 'sms'"}
    assert explained[1]["matched"] and len(explained) == 2
    assert table.match(msg(to="help@acme.test")).route == "default"


def test_configured_catch_all_replaces_builtin_default() -> None:
    table = build_table([RouteSettings(name="everything", queue="general")])
    assert [r.name for r in table.routes] == ["everything"]
