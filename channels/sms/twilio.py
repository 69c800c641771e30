"""The Twilio-compatible HTTP transport: signed webhooks in, the REST Messages form out.

Routes (mounted by the web app under `/channels/<instance>/`): `POST inbound` (a text
from a customer: answered with empty TwiML only after the commit) and `POST status`
(a delivery state for one of our messages). Inbound media (`MediaUrlN`) is fetched
into attachment parts (`twilio_media.py`). Both check X-Twilio-Signature against the
URL the provider called (`public_url` when we sit behind a proxy) and answer 403,
storing nothing, when it does not match.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp
from aiohttp import web

from channels.base import Capabilities, ChannelAdapter, InboundSink, Limits
from channels.sms.inbound import sender_number, sms_inbound
from channels.sms.settings import TwilioSettings
from channels.sms.twilio_media import fetch_media
from channels.sms.twilio_sig import is_valid
from umsg.errors import ConfigError, PermanentError, TransientError
from umsg.model import DeliveryResult, DeliveryStatus, IdentityKind, Outbound
from umsg.services import ChannelServices

log = logging.getLogger(__name__)

HEADER = "X-Twilio-Signature"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
STATUS_MAP = {"sent": "sent", "delivered": "delivered", "read": "read",
              "undelivered": "failed", "failed": "failed"}


class TwilioChannel(ChannelAdapter[TwilioSettings]):
    name: ClassVar[str] = "twilio"
    capabilities: ClassVar[Capabilities] = Capabilities(delivery_receipts=True, realtime=True)
    limits: ClassVar[Limits] = Limits(max_text_chars=1600, max_segments=10)
    Settings: ClassVar[type[TwilioSettings]] = TwilioSettings
    url_schemes: ClassVar[tuple[str, ...]] = ("twilio",)
    identity_kind: ClassVar[IdentityKind | None] = IdentityKind.PHONE
    legacy_channel_name: ClassVar[str | None] = "sms"

    def __init__(self, instance_name: str, settings: TwilioSettings) -> None:
        super().__init__(instance_name, settings)
        self.services: ChannelServices | None = None
        self._sink: InboundSink | None = None
        self._http: aiohttp.ClientSession | None = None

    @classmethod
    def url_fields(cls, url: str) -> dict[str, Any]:
        """`twilio://SID:TOKEN@api.host?from_number=...`: account, token and API host (https)."""
        parts = urlsplit(url)
        if parts.scheme != "twilio":
            raise ConfigError([("url", "expected a twilio:// URL")])
        out: dict[str, Any] = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if parts.username:
            out["account_sid"] = unquote(parts.username)
        if parts.password is not None:
            out["auth_token"] = unquote(parts.password)
        if parts.hostname:
            out.setdefault("base_url", f"https://{parts.netloc.rsplit('@', 1)[-1]}")
        return out

    def bind(self, services: ChannelServices) -> None:
        self.services = services

    async def start(self, sink: InboundSink) -> None:
        self._sink = sink

    def web_routes(self) -> list[web.RouteDef]:
        return [web.post("/inbound", self._inbound), web.post("/status", self._status)]

    # -- webhooks ----------------------------------------------------------------------------

    def _signed_url(self, request: web.Request) -> str:
        base = self.settings.public_url
        if base is None and self.services is not None and self.services.public_url:
            base = f"{self.services.public_url.rstrip('/')}/channels/{self.instance_name}"
        if base is None:
            return str(request.url)
        route = request.path.rsplit("/", 1)[-1]
        query = f"?{request.query_string}" if request.query_string else ""
        return f"{base.rstrip('/')}/{route}{query}"

    async def _verified(self, request: web.Request) -> dict[str, str]:
        form = await request.post()
        pairs = [(k, str(v)) for k, v in form.items()]
        token = self.settings.auth_token.get_secret_value()
        if not is_valid(token, self._signed_url(request), pairs, request.headers.get(HEADER)):
            log.warning("twilio %s: bad signature on %s from %s", self.instance_name, request.path, request.remote)
            raise web.HTTPForbidden(text="bad signature")
        return {k: v for k, v in pairs}

    async def _inbound(self, request: web.Request) -> web.Response:
        params = await self._verified(request)
        if self._sink is None:
            raise web.HTTPServiceUnavailable(text="channel not started")
        sid = params.get("MessageSid") or params.get("SmsSid") or ""
        try:
            if not sid:
                raise PermanentError("no MessageSid")
            sender = sender_number(params.get("From", ""), self.settings)
            media = await fetch_media(self._client(), params, self.settings, self._auth())
            if media.errors:
                log.warning("twilio %s: inbound %s stored without some media: %s", self.instance_name, sid,
                            "; ".join(media.errors))
            inbound = sms_inbound(
                channel=self.channel, settings=self.settings, sender=sender,
                recipient=params.get("To", ""), text=params.get("Body", ""), dedupe_key=f"twilio:{sid}",
                raw=(await request.read()), raw_media_type="application/x-www-form-urlencoded", provider_id=sid,
                meta={"num_segments": params.get("NumSegments"), "num_media": params.get("NumMedia")},
                parts=media.parts, flags={"media_errors": list(media.errors)} if media.errors else None)
            await self._sink(inbound)
        except PermanentError as exc:
            log.error("twilio %s: refused inbound %s: %s", self.instance_name, sid, exc)
            raise web.HTTPBadRequest(text=str(exc)) from exc
        except TransientError as exc:
            raise web.HTTPServiceUnavailable(text="try again") from exc
        return web.Response(text=EMPTY_TWIML, content_type="text/xml")

    async def _status(self, request: web.Request) -> web.Response:
        params = await self._verified(request)
        state = STATUS_MAP.get(params.get("MessageStatus", "").lower())
        sid = params.get("MessageSid") or params.get("SmsSid") or ""
        if state is not None and sid and self.services is not None:
            detail = params.get("MessageStatus", "") + (f" {params['ErrorCode']}" if params.get("ErrorCode") else "")
            try:
                await self.services.reports.record(channel=self.channel, status=state, provider_ids=[sid],
                                                   detail=detail, extra={"stat": params.get("MessageStatus")})
            except TransientError as exc:
                raise web.HTTPServiceUnavailable(text="try again") from exc
        return web.Response(status=204)

    # -- outbound ----------------------------------------------------------------------------

    async def send(self, outbound: Outbound) -> DeliveryResult:
        s = self.settings
        form = {"To": sender_number(outbound.recipient, s), "Body": outbound.text}
        if s.messaging_service_sid:
            form["MessagingServiceSid"] = s.messaging_service_sid
        else:
            form["From"] = outbound.sender or s.from_number
        callback = self._callback_url()
        if callback and s.status_callback:
            form["StatusCallback"] = callback
        url = f"{s.base_url.rstrip('/')}/2010-04-01/Accounts/{s.account_sid}/Messages.json"
        headers = self._auth()
        last = ""
        for attempt in range(s.retries + 1):
            if attempt:
                await asyncio.sleep(s.retry_backoff_seconds * 2 ** (attempt - 1))  # backoff, not synchronisation
            try:
                async with self._client().post(url, data=form, headers=headers,
                                               timeout=aiohttp.ClientTimeout(total=s.timeout_seconds)) as resp:
                    body: Any = await resp.json(content_type=None) if resp.content_length != 0 else {}
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if 200 <= status < 300 and isinstance(body, dict) and body.get("sid"):
                sid = str(body["sid"])
                if self.services is not None:
                    await self.services.reports.bind(outbound.message_id, self.channel, [sid])
                return DeliveryResult(DeliveryStatus.ACCEPTED, provider_id=sid, detail=f"HTTP {status}")
            message = body.get("message", "") if isinstance(body, dict) else ""
            last = f"HTTP {status}: {message}".rstrip(": ")
            if status != 429 and status < 500:
                return DeliveryResult(DeliveryStatus.PERMANENT_FAILURE, detail=last)
        return DeliveryResult(DeliveryStatus.TRANSIENT_FAILURE, detail=last)

    def _auth(self) -> dict[str, str]:
        """HTTP basic auth with the account's credentials (REST calls and media fetches)."""
        pair = f"{self.settings.account_sid}:{self.settings.auth_token.get_secret_value()}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}

    def _callback_url(self) -> str | None:
        if self.settings.public_url:
            return f"{self.settings.public_url.rstrip('/')}/status"
        if self.services is not None and self.services.public_url:
            return f"{self.services.public_url.rstrip('/')}/channels/{self.instance_name}/status"
        return None

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        self._sink = None
