"""An `Outbound` reply as a MIME message, with the headers that make it thread."""

from __future__ import annotations

import re
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formataddr, formatdate

from channels.email.settings import EmailSettings
from channels.email.thread_hints import outbound_message_id, reply_address, tag_subject
from umsg.model import Outbound

_EMAIL_REF = re.compile(r"^<[^<>\s@]+@[^<>\s@]+>$")
# RFC 5322 asks for the whole chain; mail clients truncate, and so do we, keeping the first.
_MAX_REFERENCES = 20


def sender_address(outbound: Outbound, settings: EmailSettings) -> str:
    if outbound.sender and "@" in outbound.sender:
        return outbound.sender
    for owned in settings.owned:
        if not owned.startswith("@"):
            return owned
    return f"support@{settings.domain}"


def compose(outbound: Outbound, settings: EmailSettings, display_name: str | None = None) -> EmailMessage:
    """The message to send; its Message-ID is stable for `outbound.message_id`."""
    token = outbound.thread.conversation_token
    msg = EmailMessage(policy=SMTP_POLICY)
    sender = sender_address(outbound, settings)
    msg["From"] = formataddr((display_name, sender)) if display_name else sender
    msg["To"] = outbound.recipient
    msg["Subject"] = tag_subject(outbound.subject, token)
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = outbound_message_id(outbound.message_id, token, settings.domain)
    refs = [r for r in outbound.thread.refs if _EMAIL_REF.match(r)]
    if refs:
        if len(refs) > _MAX_REFERENCES:
            refs = refs[:1] + refs[-(_MAX_REFERENCES - 1):]
        msg["In-Reply-To"] = refs[-1]
        msg["References"] = " ".join(refs)
    if token:
        msg["Reply-To"] = reply_address(token, settings.domain)
    if outbound.automatic:
        # RFC 3834: marks it as not to be answered automatically; Exchange reads the second.
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(outbound.text or "")
    if outbound.html:
        msg.add_alternative(outbound.html, subtype="html")
    for part in outbound.parts:
        maintype, _, subtype = part.media_type.partition("/")
        msg.add_attachment(part.data, maintype=maintype or "application", subtype=subtype or "octet-stream",
                           filename=part.filename or "attachment")
    return msg
