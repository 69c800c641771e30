"""Fax-to-email: the text of the mail a fax number's owner receives (the PDF is attached).

Template variables (Python `str.format` names, in `email_subject` and `email_template`):

- `{sender}`: the caller's number in E.164 (or what the network gave)
- `{station}`: the sending machine's station id (TSI), may be empty
- `{number}`: the dialled fax number
- `{time}`: when the call started, ISO 8601 in UTC
- `{pages}`: pages received; `{result}`: "complete", "partial" or "failed"
- `{reason}`: SpanDSP's reason text (`OK`, `The call dropped prematurely`...)
- `{rate}`: the bit rate (`14400`); `{ecm}`: `yes`/`no`; `{resolution}`: `204x196`
- `{transport}`: `t38` or `audio`; `{link}`: the conversation in the agents' inbox

An unknown name is left as written rather than failing the notification.
"""

from __future__ import annotations

from typing import Any

DEFAULT_TEMPLATE = """You have received a fax.

From: {sender} {station}
To: {number}
Time: {time}
Pages: {pages} ({result}: {reason})
Transfer: {rate} bit/s, ECM {ecm}, {resolution} dpi, over {transport}

The fax is attached as a PDF. Open the conversation: {link}
"""


class _Keep(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render(template: str, values: dict[str, Any]) -> str:
    return template.format_map(_Keep(values))
