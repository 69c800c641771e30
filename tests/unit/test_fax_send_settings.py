"""Fax sending without a call: settings validation and masking, the trunk URI, and which parts
of an outgoing message become pages (text on its own page, or on the cover when there is one)."""

from __future__ import annotations

import pytest

from channels.base import ChannelAdapter
from channels.fax import FaxChannel, FaxSettings
from channels.fax.compose import documents, wants_cover
from channels.fax.settings import FaxSendSettings
from channels.fax.transmit import target_for
from umsg.errors import ConfigError
from umsg.model import Outbound, OutboundPart


def outbound(text: str = "See attached.", meta: dict[str, object] | None = None) -> Outbound:
    return Outbound(message_id=1, channel="fax", sender="+15550100", recipient="+15550200", text=text,
                    parts=(OutboundPart("application/pdf", b"%PDF-1.4", "a.pdf"),), meta=dict(meta or {}))


def test_trunk_needs_a_number_placeholder_and_its_password_is_masked() -> None:
    with pytest.raises(ConfigError, match="number"):
        FaxChannel.validate_settings({"send": {"trunk": "sip:trunk.example"}})
    settings = FaxSettings.model_validate({"send": {"trunk": "sip:{number}@t.example", "username": "u",
                                                    "password": "hunter2"}})
    adapter: ChannelAdapter[FaxSettings] = FaxChannel("fax", settings)
    assert "hunter2" not in repr(adapter) and "hunter2" not in str(adapter.describe())
    assert adapter.capabilities.outbound


def test_target_keeps_the_plus_and_drops_punctuation() -> None:
    send = FaxSendSettings(trunk="sip:{number}@10.0.0.1:5080;transport=tcp")
    assert target_for(send, "+49 30 1234-56") == "sip:+4930123456@10.0.0.1:5080;transport=tcp"


@pytest.mark.parametrize(("configured", "meta", "flags", "cover", "kinds"), [
    (False, {}, {}, False, ["text/plain", "application/pdf"]),
    (True, {}, {}, True, ["application/pdf"]),
    (False, {"fax_cover": True}, {}, True, ["application/pdf"]),
    (False, {}, {"fax_cover": True}, True, ["application/pdf"]),
    (True, {"fax_cover": False}, {}, False, ["text/plain", "application/pdf"]),
])
def test_text_goes_on_the_cover_or_on_its_own_page(
    configured: bool, meta: dict[str, object], flags: dict[str, object], cover: bool, kinds: list[str]
) -> None:
    send = FaxSendSettings(trunk="sip:{number}@t", cover_page=configured)
    out = outbound(meta=meta)
    assert wants_cover(send, out, flags) is cover
    assert [d.media_type for d in documents(out, cover=cover)] == kinds
    assert [d.media_type for d in documents(outbound(text="  "), cover=False)] == ["application/pdf"]
