"""Delivery receipts: which of our messages a receipt is about and what it says.

SMSCs name the message by the `receipted_message_id` TLV or by `id:` in the receipt
text (`id:IIII sub:001 dlvrd:001 submit date:... done date:... stat:DELIVRD err:000`),
and many give the id in decimal where submit_sm_resp gave hex, or the other way
round. `id_forms` gives the spellings stored with a submitted message; a receipt's id
is matched exactly first, then by numeric value (`#<decimal>`) in either base.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from channels.sms.pdu import TLV_MESSAGE_STATE, TLV_NETWORK_ERROR_CODE, TLV_RECEIPTED_MESSAGE_ID, ShortMessage
from channels.sms.text import decode_text

# SMPP message_state (TLV 0x0427) and receipt `stat:` words, as our delivery states.
STATE_WORDS = {
    "DELIVRD": "delivered", "DELIVERED": "delivered",
    "EXPIRED": "failed", "DELETED": "failed", "UNDELIV": "failed", "UNDELIVERABLE": "failed",
    "REJECTD": "failed", "REJECTED": "failed",
    "ACCEPTD": "sent", "ACCEPTED": "sent", "ENROUTE": "sent", "UNKNOWN": "sent", "BUFFRED": "sent",
}
MESSAGE_STATES = {1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV", 6: "ACCEPTD",
                  7: "UNKNOWN", 8: "REJECTD"}

_FIELD = re.compile(r"(id|sub|dlvrd|submit date|done date|stat|err|text)\s*:\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Receipt:
    message_id: str
    stat: str  # the SMSC's word: DELIVRD, EXPIRED, UNDELIV ...
    status: str  # ours: delivered | failed | sent
    error: str = ""
    done_date: str = ""


def parse_fields(text: str) -> dict[str, str]:
    """The `key:value` fields of a receipt text (values may contain spaces, e.g. dates)."""
    matches = list(_FIELD.finditer(text))
    out: dict[str, str] = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        out[m.group(1).lower()] = text[m.end():end].strip()
    return out


def parse_receipt(sm: ShortMessage) -> Receipt | None:
    """The receipt a deliver_sm carries, or None when it names no message."""
    fields = parse_fields(decode_text(sm.short_message, sm.data_coding) if sm.short_message else "")
    message_id = sm.tlv_str(TLV_RECEIPTED_MESSAGE_ID) or fields.get("id", "")
    if not message_id:
        return None
    state = sm.tlv_int(TLV_MESSAGE_STATE)
    stat = fields.get("stat", "").upper() or MESSAGE_STATES.get(state or 0, "UNKNOWN")
    error = fields.get("err", "")
    if not error and TLV_NETWORK_ERROR_CODE in sm.tlvs:
        error = sm.tlvs[TLV_NETWORK_ERROR_CODE].hex()
    return Receipt(message_id.strip(), stat, STATE_WORDS.get(stat, "sent"), error, fields.get("done date", ""))


def numeric_forms(message_id: str) -> list[str]:
    """`#<value>` for each base (hex, decimal) in which `message_id` is a number."""
    forms = []
    text = message_id.strip()
    for base in (16, 10):
        try:
            forms.append(f"#{int(text, base)}")
        except ValueError:
            continue
    return list(dict.fromkeys(forms))


def id_forms(message_id: str) -> list[str]:
    """Every spelling to store for an SMSC message id: as given, then its numeric values."""
    return [message_id, *numeric_forms(message_id)]
