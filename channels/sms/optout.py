"""Opt-out and opt-in keywords: a customer's STOP (or 退订) is a fact about their number.

The keyword becomes an `OptOut` effect of the text (`channels.sms.inbound`), which the
ingest records on the identity the message came from, in the text's own transaction; the
outbox then refuses to queue anything to that number until the customer opts back in.
"""

from __future__ import annotations

import unicodedata

from channels.sms.settings import SmsCommon


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
