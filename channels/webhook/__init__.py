"""The webhook channel: a generic API channel for systems we talk to over HTTP.

Like Chatwoot's "API channel": a customer-facing system of the operator's own
(a mobile app, a marketplace inbox, a bot) delivers customer messages through
the core REST API, and receives our replies as signed HTTP callbacks.

Capabilities: inbound (through the REST API, which calls `receive`), outbound
text with subject and HTML; no attachments, no delivery receipts.

Outbound: `POST callback_url` with a JSON body
`{message_id, conversation_id?, recipient, text, subject, html, automatic}`,
header `X-Umsg-Signature: sha256=<hex HMAC-SHA256 of the body with secret>`
and `Idempotency-Key: umsg-message-<message_id>` (a retried delivery repeats
it). 2xx accepts (the JSON `id` of the answer becomes the provider id);
429, 5xx, timeouts and connection errors are retried; other 4xx fail.

Settings: `callback_url`, `secret`, `timeout_seconds` (default 10),
`project` (default "default"). Inbound messages carry the instance's name
(`[channels.NAME]`) as their channel; a reply on it goes to whoever wrote last.

Connection string: `webhook+https://hooks.example.com/umsg?secret=S&timeout_seconds=5`
(`webhook://` means plain http; a bare `https://...` URL works too).
"""

from channels.webhook.adapter import WebhookChannel
from channels.webhook.inbound import InboundPayload
from channels.webhook.settings import WebhookSettings
from channels.webhook.signing import sign, verify

__all__ = ["InboundPayload", "WebhookChannel", "WebhookSettings", "sign", "verify"]
