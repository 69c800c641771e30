"""Sending through the configured relay with aiosmtplib, and what its answers mean.

Transient: 4xx replies, refused connections, timeouts, a dropped session,
and credentials the relay rejects (an operator fixes those; the outbox
retries meanwhile). Permanent: any other 5xx reply, reported with the
server's own words so the agent sees why.
"""

from __future__ import annotations

from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import aiosmtplib

from umsg.model import DeliveryResult, DeliveryStatus


def _words(code: int, message: str) -> str:
    return f"{code} {' '.join(message.split())}".strip()


def _by_code(code: int, message: str) -> DeliveryResult:
    status = DeliveryStatus.PERMANENT_FAILURE if 500 <= code < 600 else DeliveryStatus.TRANSIENT_FAILURE
    return DeliveryResult(status, detail=_words(code, message))


async def send_via_relay(msg: EmailMessage, relay: str, *, sender: str, recipient: str,
                         timeout_seconds: float) -> DeliveryResult:
    """Hand `msg` to the relay for `recipient`; the result says accepted, retry or failed."""
    url = urlsplit(relay)
    implicit_tls = url.scheme == "smtps"
    client = aiosmtplib.SMTP(
        hostname=url.hostname,
        port=url.port or (465 if implicit_tls else 25),
        use_tls=implicit_tls,
        start_tls=None,  # STARTTLS whenever the relay offers it
        timeout=timeout_seconds,
    )
    try:
        await client.connect()
        if url.username:
            await client.login(unquote(url.username), unquote(url.password or ""))
        errors, response = await client.send_message(msg, sender=sender, recipients=[recipient])
    except aiosmtplib.SMTPAuthenticationError as exc:
        return DeliveryResult(DeliveryStatus.TRANSIENT_FAILURE,
                              detail=f"relay refused our credentials: {_words(exc.code, exc.message)}")
    except aiosmtplib.SMTPRecipientsRefused as exc:
        first = exc.recipients[0] if exc.recipients else None
        return _by_code(first.code, first.message) if first else DeliveryResult(
            DeliveryStatus.PERMANENT_FAILURE, detail="recipient refused")
    except aiosmtplib.SMTPResponseException as exc:
        return _by_code(exc.code, exc.message)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return DeliveryResult(DeliveryStatus.TRANSIENT_FAILURE, detail=f"{type(exc).__name__}: {exc}")
    finally:
        if client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()
    if recipient in errors:
        refused = errors[recipient]
        return _by_code(refused.code, refused.message)
    return DeliveryResult(DeliveryStatus.ACCEPTED, provider_id=str(msg["Message-ID"]),
                          detail=" ".join(response.split()))
