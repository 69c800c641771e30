"""Transcripts by email, only to an address the visitor proved.

A visitor's email is whatever they typed, so mailing a transcript to it would make the chat a
relay from the company's address. Instead the first request for an address mails it one
fixed text with a confirmation link (nothing the visitor wrote), signed with the chat's
secret and expiring after `limits.confirm_link_hours`. Opening the link shows a page with a
button; pressing it (a POST, so mail scanners that fetch links trigger nothing) mails the
transcript of that conversation as it is then and marks the address proven for the contact,
so their later transcripts go straight out. Every mail (link or transcript) counts against
the transcript rate limits; each link sends at most one transcript.

Routes: `GET transcript?t=TOKEN` (the page), `POST transcript` (form field `t`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from channels.webchat.runtime import ChatRuntime
from umsg.errors import PermanentError

_PAGE_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
                 "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                 "Cache-Control": "no-store", "X-Frame-Options": "DENY"}
_MAX_TOKEN = 1000


@dataclass(frozen=True)
class Confirm:
    """What a confirmation link proves: this email may get this conversation's transcript."""

    conversation_id: int
    contact_id: int
    email: str
    expires: int  # unix seconds
    signature: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _sign(secret: str, scope: str, payload: str) -> str:
    return _b64(hmac.new(secret.encode(), f"{scope}\ntranscript\n{payload}".encode(), hashlib.sha256).digest())


def make_token(secret: str, scope: str, conversation_id: int, contact_id: int, email: str, expires: int) -> str:
    payload = f"{conversation_id}.{contact_id}.{expires}.{_b64(email.encode())}"
    return f"{payload}.{_sign(secret, scope, payload)}"


def read_token(secret: str, scope: str, token: object, now: float) -> Confirm | None:
    """The confirmation a token proves, or None when forged, malformed or expired."""
    if not isinstance(token, str) or len(token) > _MAX_TOKEN:
        return None
    payload, _, sig = token.rpartition(".")
    if not sig.isascii():  # compare_digest refuses non-ASCII str: a forged token, not an error
        return None
    if not hmac.compare_digest(_sign(secret, scope, payload), sig):
        return None
    try:
        conv, contact, expires, email_b64 = payload.split(".")
        email = base64.urlsafe_b64decode(email_b64 + "=" * (-len(email_b64) % 4)).decode()
        found = Confirm(int(conv), int(contact), email, int(expires), sig)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return found if found.expires >= now else None


def proven_key(contact_id: int, email: str) -> str:
    return f"proven:{contact_id}:{hashlib.sha256(email.strip().lower().encode()).hexdigest()}"


async def is_proven(rt: ChatRuntime, contact_id: int, email: str) -> bool:
    return await rt.services.state.get(rt.scope, proven_key(contact_id, email)) is not None


def link_base(rt: ChatRuntime) -> str | None:
    """Where confirmation links point: the configured public URL, never the request's Host
    header (a forged Host would put an attacker's link into our mail)."""
    base = rt.services.public_url.rstrip("/")
    return f"{base}/channels/{quote(rt.scope)}/transcript" if base else None


async def send_transcript(rt: ChatRuntime, conversation_id: int, email: str) -> None:
    """Queue the transcript mail (PermanentError when the outbox refuses it)."""
    text = await rt.store.transcript(conversation_id)
    await rt.services.outbox.reply(project_id=await rt.store.project_id(), conversation_id=conversation_id,
                                   channel=rt.email_channel, to=email,
                                   subject=f"{rt.settings.title}: your transcript", text=text,
                                   automatic=True, flags={"transcript": True})


async def send_confirmation(rt: ChatRuntime, conversation_id: int, contact_id: int, email: str) -> None:
    """Mail the confirmation link (fixed text: nothing of the visitor's but the address)."""
    base = link_base(rt)
    if base is None:
        raise PermanentError("transcripts need the server's public URL (http.public_url)")
    hours = rt.settings.limits.confirm_link_hours
    expires = int(time.time() + hours * 3600)
    token = make_token(rt.settings.secret.get_secret_value(), rt.scope, conversation_id, contact_id, email, expires)
    text = ("Someone asked on our web chat for the transcript of a conversation to be sent to this address.\n\n"
            f"To receive it, open this link (valid for {hours:g} hours) and press the button:\n"
            f"{base}?t={token}\n\nIf that was not you, ignore this mail: nothing more will be sent.")
    await rt.services.outbox.reply(project_id=await rt.store.project_id(), conversation_id=conversation_id,
                                   channel=rt.email_channel, to=email,
                                   subject=f"{rt.settings.title}: confirm your address", text=text,
                                   automatic=True, flags={"transcript_confirm": True})


def _page(title: str, body: str, status: int = 200) -> web.Response:
    doc = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
           "<meta name=viewport content='width=device-width'>"
           "<style>body{font:16px system-ui,sans-serif;max-width:32em;margin:3em auto;padding:0 1em}"
           "button{font:inherit;padding:.5em 1.2em}</style></head>"
           f"<body><h1>{html.escape(title)}</h1>{body}</body></html>")
    return web.Response(text=doc, content_type="text/html", status=status, headers=_PAGE_HEADERS)


def _invalid() -> web.Response:
    return _page("Link not valid", "<p>This link is not valid or has expired. Ask for the transcript again "
                 "in the chat.</p>", status=400)


def _confirm(rt: ChatRuntime, token: object) -> Confirm | None:
    return read_token(rt.settings.secret.get_secret_value(), rt.scope, token, time.time())


async def confirm_page(rt: ChatRuntime, request: web.Request) -> web.StreamResponse:
    token = request.query.get("t")
    found = _confirm(rt, token)
    if found is None or token is None:
        return _invalid()
    return _page("Your chat transcript",
                 f"<p>Send the transcript of your chat to <b>{html.escape(found.email)}</b>?</p>"
                 "<form method=post><input type=hidden name=t value=\"" + html.escape(token, quote=True) + "\">"
                 "<button type=submit>Send the transcript</button></form>")


async def confirm_post(rt: ChatRuntime, request: web.Request) -> web.StreamResponse:
    if request.content_length is not None and request.content_length > 4 * _MAX_TOKEN:
        return _invalid()
    form: Any = await request.post()
    found = _confirm(rt, form.get("t"))
    if found is None:
        return _invalid()
    state = rt.services.state
    # One transcript per link: a second press (or a replayed POST) sends nothing.
    first = await state.add(rt.scope, f"confirmed:{found.signature}",
                            {"conversation_id": found.conversation_id, "at": int(time.time())})
    if not first:
        return _page("Already sent", f"<p>The transcript was already sent to <b>{html.escape(found.email)}</b>.</p>")
    try:
        await rt.store.remember_email(found.contact_id, found.email, None)
        await send_transcript(rt, found.conversation_id, found.email)
    except PermanentError:
        return _page("Not sent", "<p>The transcript could not be sent to this address.</p>", status=422)
    except Exception:
        # Not queued (the store is away): the link stays usable for another try.
        await state.delete(rt.scope, f"confirmed:{found.signature}")
        raise
    await state.add(rt.scope, proven_key(found.contact_id, found.email), {"email": found.email.lower()})
    return _page("Transcript on its way",
                 f"<p>The transcript of your chat is on its way to <b>{html.escape(found.email)}</b>.</p>")
