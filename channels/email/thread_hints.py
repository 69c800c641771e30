"""Threading keys of email, in the layers the core's Thread step expects.

Strong keys (`refs`): the Message-IDs in References and In-Reply-To, nearest
last. `own`: this message's Message-ID. The conversation token (accepted by
the core only from the same contact) comes from, in order: our own
Message-ID quoted back to us (`<umsg.MSG.TOKEN@our-domain>`), a
`reply+TOKEN@` recipient, a `[#TOKEN]` tag in the subject.
"""

from __future__ import annotations

import re

from umsg.model import ThreadHints

_TOKEN = r"[A-Za-z0-9]{6,32}"
_SUBJECT_TAG = re.compile(rf"\[#({_TOKEN})\]")
_REPLY_ADDR = re.compile(rf"^[^@+]+\+({_TOKEN})@", re.IGNORECASE)
_OWN_ID = re.compile(rf"^<?umsg\.(\d+)\.({_TOKEN})@([^>]+)>?$", re.IGNORECASE)


def bracketed(mid: str) -> str:
    return mid if mid.startswith("<") else f"<{mid}>"


def outbound_message_id(message_id: int, token: str | None, domain: str) -> str:
    """Our Message-ID for outgoing message `message_id`: stable, so a retried send repeats it."""
    return f"<umsg.{message_id}.{token or 'x'}@{domain}>"


def parse_own_id(mid: str, domain: str) -> tuple[int, str] | None:
    """(outbound message id, conversation token) when `mid` is one of ours."""
    m = _OWN_ID.match(mid.strip())
    if m is None or m.group(3).lower() != domain.lower():
        return None
    return int(m.group(1)), m.group(2)


def subject_tag(token: str) -> str:
    return f"[#{token}]"


def tag_subject(subject: str | None, token: str | None) -> str:
    """The subject with the conversation tag appended once."""
    subject = subject or ""
    if not token or subject_tag(token) in subject:
        return subject
    return f"{subject} {subject_tag(token)}".strip()


def reply_address(token: str, domain: str, local: str = "reply") -> str:
    return f"{local}+{token}@{domain}"


def token_from_recipients(recipients: tuple[str, ...], domain: str | None) -> str | None:
    for r in recipients:
        m = _REPLY_ADDR.match(r)
        if m and (domain is None or r.lower().endswith("@" + domain.lower())):
            return m.group(1)
    return None


def build_hints(
    *,
    message_id: str | None,
    in_reply_to: list[str],
    references: list[str],
    recipients: tuple[str, ...],
    subject: str | None,
    own_domain: str | None,
    reported: str | None = None,
) -> ThreadHints:
    refs = [bracketed(r) for r in references]
    for r in [*in_reply_to, *([reported] if reported else [])]:  # the nearest reference goes last
        b = bracketed(r)
        if b in refs:
            refs.remove(b)
        refs.append(b)
    token: str | None = None
    if own_domain:
        for r in reversed(refs):
            own = parse_own_id(r, own_domain)
            if own is not None:
                token = own[1]
                break
    token = token or token_from_recipients(recipients, own_domain)
    if token is None and subject:
        m = _SUBJECT_TAG.search(subject)
        token = m.group(1) if m else None
    own_keys = (bracketed(message_id),) if message_id else ()
    return ThreadHints(own=own_keys, refs=tuple(refs[-50:]), conversation_token=token)
