"""Opt-out and opt-in keywords: a customer's STOP (or 退订) is a fact about their number.

Recorded on the identity the message came from (`Identity.opted_out`); the outbox
then refuses to queue anything to that number until the customer opts back in.
"""

from __future__ import annotations

import unicodedata

from sqlalchemy import update

from channels.sms.settings import SmsCommon
from storage.db import SessionFactory
from storage.models import Identity


def keyword_of(text: str | None) -> str:
    """The message reduced to a keyword: trimmed, case-folded, trailing punctuation dropped."""
    if not text:
        return ""
    word = unicodedata.normalize("NFKC", text).strip()
    while word and unicodedata.category(word[-1]).startswith("P"):
        word = word[:-1].rstrip()
    return word.casefold()


def opt_change(text: str | None, settings: SmsCommon) -> bool | None:
    """True for an opt-out keyword, False for an opt-in one, None for anything else."""
    word = keyword_of(text)
    if not word:
        return None
    if word in {keyword_of(k) for k in settings.opt_out_keywords}:
        return True
    if word in {keyword_of(k) for k in settings.opt_in_keywords}:
        return False
    return None


async def record_opt(sessions: SessionFactory, *, contact_id: int, number: str, opted_out: bool) -> int:
    """Set the opt-out flag of the contact's identity for `number`; returns the rows changed."""
    async with sessions() as s:
        result = await s.execute(
            update(Identity)
            .where(Identity.contact_id == contact_id, Identity.value == number)
            .values(opted_out=opted_out)
            .execution_options(synchronize_session=False)
        )
        await s.commit()
    return int(getattr(result, "rowcount", 0) or 0)
