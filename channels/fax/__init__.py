"""The fax channel: T.30 over G.711 and T.38 via SpanDSP, fax-to-PDF and fax-to-email.

Capabilities: inbound and outbound (PDF, images, fax TIFFs, text; see `compose.py`). Each
received fax becomes an item: the TIFF (G4) is the raw original and the `document` part; the
`fax-to-pdf` and `fax-thumbnail` converters derive the PDF and the page-1 thumbnail; transfer
details (pages, rate, ECM, resolution, bad rows, remote station id, result) are in
`meta["fax"]`. Calls start on G.711 and switch to T.38 when the peer offers it (INVITE or
re-INVITE) or when the number asks (`request_t38`); a 488 keeps G.711. Pages that arrived
before a call dropped are kept, the item marked partial. The number's owner gets the PDF by
email (`notify.py` documents the template). Fax machines that reach a voicemail number are
handed over (`FaxChannel.app_for` is the voicemail channel's `set_fax_apps` hook).
Email-to-fax is a channel route that forwards mail for `fax+<number>@` to `{recipient_detail}` on
this channel (README "Channels"; `umsg.routes.actions`).

Sending: `send` renders to TIFF-F, stores a durable job (the core's leased job table,
`ChannelServices.jobs`) and answers ACCEPTED; the call goes out through the `send.trunk`
(T.38 first, G.711 on 488), busy/no answer retried on `send.retry_seconds`, and the result
(pages, rate, SpanDSP's reason) reaches the message as a delivery report. Every gateway on
one store calls from the same jobs; the lease gives each to one gateway at a time, and the
job of a gateway that died mid-call goes to another once its lease (a minute) runs out.

Pieces: `engine.py` (one SpanDSP session), `loopback.py` (two sessions back to back in
memory), `media.py` (one call's fax media, either direction), `receive.py`, `transmit.py`
(one outgoing call), `outgoing.py` (durable send jobs), `compose.py`, `adapter.py`,
`settings.py`, `notify.py`;
`channels/telephony/spandsp.py`, `udptl.py` and `tones.py` are the shared DSP layer.

Settings: `host`, `port`, `tcp`, `max_calls`, `public_address`, `default_region`, `numbers`
(number → owner_email, project, ident, request_t38, t38, ringing, email_subject,
email_template), `send` (trunk, username, password, ident, caller, t38, resolution, paper,
cover_page, ring_seconds, retry_seconds, max_attempts, max_concurrent),
`project`, `notify_channel` (the email instance that mails owners; default: the one
configured), `ecm`, `hangup_after_seconds`, `max_call_seconds`. Items carry the instance's
name (`[channels.NAME]`) as their channel; a reply on it goes to the contact's fax number.

Connection string: fax://0.0.0.0:5060?max_calls=30 (numbers in the TOML table).
"""

from channels.fax.adapter import FaxChannel
from channels.fax.settings import FaxNumberSettings, FaxSettings

__all__ = ["FaxChannel", "FaxNumberSettings", "FaxSettings"]
