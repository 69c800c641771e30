"""The webhook adapter: hands posted messages to the sink and POSTs replies to the callback."""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

import aiohttp

from channels.base import Capabilities, ChannelAdapter, InboundSink, Limits
from channels.webhook.inbound import parse_payload, to_inbound
from channels.webhook.settings import WebhookSettings, webhook_url_fields
from channels.webhook.signing import HEADER, sign
from umsg.errors import TransientError
from umsg.model import DeliveryResult, DeliveryStatus, IngestResult, Outbound

log = logging.getLogger(__name__)

# Enough of an error body to say what the peer objected to, never a whole page.
_EXCERPT_CHARS = 300
_MAX_READ = 64 * 1024


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXCERPT_CHARS else flat[:_EXCERPT_CHARS] + "…"


def _provider_id(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(data, dict) and data.get("id") not in (None, ""):
        return str(data["id"])
    return None


class WebhookChannel(ChannelAdapter[WebhookSettings]):
    name: ClassVar[str] = "webhook"
    capabilities: ClassVar[Capabilities] = Capabilities(html=True, subject=True, threading=True)
    limits: ClassVar[Limits] = Limits(max_message_bytes=1024 * 1024)
    Settings: ClassVar[type[WebhookSettings]] = WebhookSettings
    # No fixed identity kind (the default): a reply goes to whoever wrote last.

    def __init__(self, instance_name: str, settings: WebhookSettings) -> None:
        super().__init__(instance_name, settings)
        self._sink: InboundSink | None = None
        self._http: aiohttp.ClientSession | None = None

    @classmethod
    def url_fields(cls, url: str) -> dict[str, Any]:
        return webhook_url_fields(url)

    async def start(self, sink: InboundSink) -> None:
        # Nothing listens here: the core's REST API receives and calls `receive`.
        self._sink = sink

    async def receive(self, body: bytes) -> IngestResult:
        """Ingest one posted message; returns after it committed (the API then answers 2xx)."""
        if self._sink is None:
            raise TransientError(f"channel {self.instance_name!r} is not started")
        payload = parse_payload(body)
        inbound = to_inbound(payload, channel=self.channel, project=self.settings.project, raw=body)
        return await self._sink(inbound)

    async def send(self, outbound: Outbound) -> DeliveryResult:
        body: dict[str, Any] = {"message_id": outbound.message_id}
        if outbound.meta.get("conversation_id") is not None:
            body["conversation_id"] = outbound.meta["conversation_id"]
        body.update(
            recipient=outbound.recipient,
            text=outbound.text,
            subject=outbound.subject,
            html=outbound.html,
            automatic=outbound.automatic,
        )
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            HEADER: sign(self.settings.secret.get_secret_value(), data),
            # The dispatcher retries after timeouts; the key lets the receiver drop repeats.
            "Idempotency-Key": f"umsg-message-{outbound.message_id}",
            "User-Agent": "umsg-webhook/1",
        }
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
        try:
            async with self._client().post(
                self.settings.callback_url, data=data, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                answer = await resp.content.read(_MAX_READ)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return DeliveryResult(
                DeliveryStatus.TRANSIENT_FAILURE, detail=f"{type(exc).__name__}: {exc}".strip()
            )
        return self._result(status, answer)

    @staticmethod
    def _result(status: int, answer: bytes) -> DeliveryResult:
        if 200 <= status < 300:
            return DeliveryResult(
                DeliveryStatus.ACCEPTED, provider_id=_provider_id(answer), detail=f"HTTP {status}"
            )
        detail = f"HTTP {status}: {_excerpt(answer.decode('utf-8', 'replace'))}".rstrip(": ")
        if status == 429 or status >= 500 or status == 408:
            return DeliveryResult(DeliveryStatus.TRANSIENT_FAILURE, detail=detail)
        # Other 4xx (and redirects, which we do not follow with a signed body) will not heal by retrying.
        return DeliveryResult(DeliveryStatus.PERMANENT_FAILURE, detail=detail)

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        return self._http

    async def aclose(self) -> None:
        self._sink = None
        if self._http is not None:
            await self._http.close()
            self._http = None
