"""The voicemail channel: callers reach a mailbox over SIP and leave a message.

Capabilities: inbound only (agents answer by SMS or email to the caller's number); each call
becomes an item with the recording as a WAV part (`wav-to-mp3` derives the MP3), the caller's
number in E.164 and name from the SIP headers, DTMF menu digits in `meta["dtmf"]`; calls shorter
than `min_seconds` become missed-call items. The mailbox owner gets the MP3 by email
(`notify.py` documents the template). Fax machines are handed to the fax channel
(`VoicemailChannel.set_fax_apps`).

SIP: UDP and TCP on `host:port`, see channels/telephony/uas.py for what is answered how.

Settings: `host`, `port`, `tcp`, `max_calls`, `public_address`, `default_region`,
`mailboxes` (number → greeting, owner_email, max/min/silence seconds, beep, project,
email_subject, email_template), `project`, `notify_channel` (the email instance that mails
owners; default: the one configured), `fax_channel` (the fax instance fax machines are handed
to), `silence_threshold`. Items carry the instance's name (`[channels.NAME]`) as their channel.

Connection string: voicemail://0.0.0.0:5060?max_calls=20 (mailboxes in the TOML table).
"""

from channels.voicemail.adapter import VoicemailChannel
from channels.voicemail.settings import MailboxSettings, VoicemailSettings

__all__ = ["MailboxSettings", "VoicemailChannel", "VoicemailSettings"]
