"""The SMS channel: SMPP 3.4 (`sms`) and Twilio-compatible HTTP webhooks (`twilio`).

Capabilities: inbound and outbound text, delivery receipts; inbound media (MMS) on the
Twilio-compatible transport; no subject or HTML.

SMPP (our own wire codec, `pdu.py`): bind_transceiver with the channel's credentials,
`connections` binds per channel, each with a window of unacknowledged requests, an
optional rate limit, enquire_link both ways and reconnect with exponential backoff.
ESME_RTHROTTLED / ESME_RMSGQFUL slow the connection down and retry. MO texts in GSM
03.38 (with the extension table), IA5, Latin-1 and UCS-2 (UTF-16, emoji intact); long
messages reassembled from UDH (8- and 16-bit references), SAR TLVs or message_payload,
durably, with a timeout that stores what arrived flagged `incomplete`; deliver_sm_resp
only after the commit; SMSC retries recognised by their dedupe key. MT: GSM-7 when it
fits, UCS-2 otherwise, split without breaking an escape or a surrogate pair; each
part's SMSC message_id and index bound to the message (group-committed) before the next
part, so a retried send submits only the parts the SMSC has not accepted. Receipts matched by
`receipted_message_id` or the `id:` text, in hex or decimal; permanent failures mark
the number failing.

Twilio-compatible: `POST /channels/<instance>/inbound` and `/status`, signed with
X-Twilio-Signature (HMAC-SHA1 of the full URL plus sorted parameters; 403 otherwise);
outbound through the REST Messages form with retries. Inbound `MediaUrlN` items are fetched
with the account's credentials from `base_url` and stored as attachment parts; a failed
fetch stores the text with the reason under `media_errors` in the message's flags.

Both: senders normalised to E.164 (`default_region` for national numbers); opt-out
keywords (STOP, 退订 ... configurable) mark the number opted out, opt-in ones undo it.
Messages carry the instance's name (`[channels.NAME]`) as their channel; a reply on it goes
to the contact's phone number through this instance.

Connection strings:
    smpp://system_id:password@smsc.example:2775?connections=2&window=10&rate_limit=50
    twilio://ACCOUNT_SID:AUTH_TOKEN@api.twilio.com?from_number=%2B15005550006
"""

from channels.sms.adapter import SmsChannel
from channels.sms.settings import SmppSettings, TwilioSettings

__all__ = ["SmppSettings", "SmsChannel", "TwilioSettings"]
