"""The web chat channel: an embeddable widget and the customer websocket behind it.

One tag on any page shows the widget (a bubble that opens a chat panel):
`<script src="https://umsg.example/channels/<instance>/widget.js" async></script>`.
The assets (`static/widget.js`, `static/widget.css`) ship inside the package: no CDN, no
build step, nothing fetched from elsewhere.

Routes (mounted under `/channels/<instance>/`, outside the API's token auth; the visitor
token authenticates): `GET widget.js`, `GET widget.css`, `GET ws` (the customer websocket,
protocol in README.md "Web chat protocol"), `POST upload` (a file as the raw body, size and
type limits), `GET file/<part id>?token=` (attachments of the visitor's own chats),
`GET|POST transcript` (the confirmation link of a transcript mail, transcripts.py).

Capabilities: inbound and outbound text, attachments (uploads in, agents' files out as
download links), threading (one visitor's lines continue one conversation), realtime.
Replies are pushed to the visitor's open sockets: `DELIVERED` when one took it, else
`ACCEPTED` (the history shows it on the next visit). Live notices (agent joined/left,
agent typing, conversation closed) follow the event log.

Offline (outside `hours`, or no agent "available" when `offline_when_no_agent`): the widget
offers "leave a message" with an email address; the email becomes an identity of the
contact and the conversation's channel becomes `email_channel`, so agents' replies default
to email. Optional transcript by email (`end` with `transcript: true`; only to an address the visitor
proved by a confirmation link, and only with `http.public_url` set) and rating (1–5 and a
comment; kept in ChannelState `rating:<conversation id>` and announced as a
`conversation.updated` event with `changes.rating`).

Settings: `secret` (signs visitor tokens; required), `allowed_origins`, `project`,
`max_text_chars`, `max_upload_bytes`, `upload_types`, `hours` (tz + weekday
hours + holidays), `offline_when_no_agent`, `prechat_form`, `transcript`, `rating`,
`email_channel` (default: the one configured email instance), `title`, `history_limit`,
`limits` (abuse limits per visitor and client address: lines, uploads, transcript mail,
sockets, idle timeout; limits.py; refusals in `umsg_webchat_refused_total`).
Messages carry the instance's name (`[channels.NAME]`, any name) as their channel; the
adapter answers on chat visitor ids, so a reply on it goes to the visitor's chat.

Connection string: `webchat://?secret=...&project=default` (query keys name settings).

Of the core it uses only `ChannelServices`: `chat` (umsg/chat_support.py: a visitor's history
and files, opening state, email, ratings, typing, transcripts; `store.py` turns its rows into
the widget's frames), `outbox` (transcripts), `blobs` (downloads) and `events` (live notices).
"""

from channels.webchat.adapter import WebchatChannel
from channels.webchat.settings import WebchatSettings

__all__ = ["WebchatChannel", "WebchatSettings"]
