"""Voicemail-to-email: the text of the mail a mailbox owner receives.

Template variables (Python `str.format` names, in `email_subject` and `email_template`):

- `{caller}`: the caller's number in E.164 (or what the network gave, e.g. `anonymous`)
- `{caller_name}`: the display name from the SIP headers, or an empty string
- `{number}`: the dialled number (the mailbox)
- `{time}`: when the call started, ISO 8601 in UTC (`2024-05-01T09:30:00+00:00`)
- `{duration}`: the recording's length in seconds, one decimal (`12.3`)
- `{digits}`: DTMF menu digits pressed before the beep (may be empty)
- `{link}`: the conversation in the agents' inbox

An unknown name in a template is left as written rather than failing the notification.
"""

from __future__ import annotations

from typing import Any

DEFAULT_TEMPLATE = """You have a new voicemail.

From: {caller} {caller_name}
To: {number}
Time: {time}
Length: {duration} seconds
Menu choice: {digits}

The recording is attached as an MP3. Open the conversation: {link}
"""


class _Keep(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render(template: str, values: dict[str, Any]) -> str:
    return template.format_map(_Keep(values))
