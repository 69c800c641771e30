"""The email channel: inbound SMTP, IMAP mailboxes, replies through a relay, and mail import.

Capabilities: inbound and outbound, subject, HTML (sanitised for display:
no script or event handlers, remote images blocked and listed in
`meta["remote_images"]`, inline `cid:` images pointing at their parts as
`cid-part/<content-id>`), attachments (TNEF `winmail.dat` unpacked),
threading, delivery reports (RFC 3464 DSNs mark the outbound message failed
and the address failing).

Inbound SMTP (aiosmtpd, on the running loop): accepts only the channel's
addresses (`550 5.1.1` otherwise), answers `250` only after the ingest
commit, `451 4.3.0` on any internal failure, `552` over SIZE, `421` over
`max_sessions`; optional STARTTLS (`tls_cert`/`tls_key`) and AUTH
(`auth_users`). IMAP (aioimaplib): poll + IDLE with UIDVALIDITY/UID
checkpoints in the channel state (`ChannelServices.state`), `\\Seen` (or a move to
`imap_move_to`) only after commit, poisoned messages set aside; needs `bind(services)`.
Outbound (aiosmtplib): Message-ID `<umsg.ID.TOKEN@domain>`, In-Reply-To,
References, `Reply-To: reply+TOKEN@domain`, `[#TOKEN]` subject tag,
`Auto-Submitted: auto-replied` on automatic mail; 4xx/connection problems
are transient, 5xx permanent with the server's words.

Parsing: charset alias table then strict decoding then detection (flagged
in `meta["charset_guessed"]`), raw always kept, automatic/bulk mail flagged
`meta["auto_submitted"]`.

Settings: `domain` (required), `addresses`, `listen`, `relay`, `imap`, limits
(`max_message_bytes`, `max_sessions`, `max_recipients`), TLS/AUTH, IMAP timing,
`project`. Messages carry the instance's name (`[channels.NAME]`) as their channel; a reply
on it goes to the contact's email address, out through this instance's relay.

Connection strings:
    email://0.0.0.0:2525?domain=acme.example&addresses=support@acme.example,@help.acme.example
    relay = "smtp://user:pass@relay.example:587"   (STARTTLS when offered; smtps:// for 465)
    imap  = "imaps://user:pass@imap.example:993/INBOX"   (imap:// for plain on loopback)
"""

from channels.email.adapter import EmailChannel
from channels.email.parse import Envelope, to_inbound
from channels.email.settings import EmailSettings

__all__ = ["EmailChannel", "EmailSettings", "Envelope", "to_inbound"]
