"""A SIP dialog (RFC 3261 §12): the identifiers both ends agreed on and in-dialog requests.

The UAS side creates one from an INVITE (`Dialog.from_invite`); the UAC side from the 2xx to its
INVITE (`Dialog.from_response`). `request` builds BYE, re-INVITE and ACK with the right tags,
CSeq and Request-URI (the peer's Contact).
"""

from __future__ import annotations

from dataclasses import dataclass

from channels.telephony.sipmsg import SipMessage, new_branch, parse_name_addr


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  # our From value in requests we send (the INVITE's To, with our tag)
    remote_uri: str  # the peer's From value, as they wrote it
    remote_target: str
    local_contact: str
    local_cseq: int
    remote_cseq: int
    via_host: str
    via_proto: str = "UDP"

    @property
    def key(self) -> tuple[str, str, str]:
        return self.call_id, self.local_tag, self.remote_tag

    @classmethod
    def from_invite(cls, invite: SipMessage, local_tag: str, local_contact: str, via_host: str,
                    via_proto: str) -> Dialog:
        frm = parse_name_addr(invite.get("from") or "")
        contact = invite.get("contact")
        target = parse_name_addr(contact).uri if contact else frm.uri
        to_value = invite.get("to") or ""
        return cls(invite.call_id, local_tag, frm.tag or "", f"{to_value};tag={local_tag}",
                   invite.get("from") or "", target, local_contact, 1000, invite.cseq[0], via_host, via_proto)

    @classmethod
    def from_response(cls, invite: SipMessage, resp: SipMessage, local_contact: str, via_host: str,
                      via_proto: str) -> Dialog:
        frm = parse_name_addr(invite.get("from") or "")
        contact = resp.get("contact")
        target = parse_name_addr(contact).uri if contact else invite.uri
        to = parse_name_addr(resp.get("to") or "")
        return cls(invite.call_id, frm.tag or "", to.tag or "", invite.get("from") or "",
                   resp.get("to") or "", target, local_contact, invite.cseq[0], 0, via_host, via_proto)

    def request(self, method: str, body: bytes = b"", content_type: str | None = None, *,
                cseq: int | None = None, branch: str | None = None) -> SipMessage:
        """A request inside this dialog; a fresh CSeq unless given (ACK reuses the INVITE's)."""
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        msg = SipMessage(method=method, uri=self.remote_target)
        msg.add("Via", f"SIP/2.0/{self.via_proto} {self.via_host};rport;branch={branch or new_branch()}")
        msg.add("Max-Forwards", "70")
        msg.add("From", self.local_uri)
        msg.add("To", self.remote_uri)
        msg.add("Call-ID", self.call_id)
        msg.add("CSeq", f"{cseq} {method}")
        msg.add("Contact", self.local_contact)
        msg.add("User-Agent", "umsg")
        if body:
            msg.add("Content-Type", content_type or "application/sdp")
        msg.body = body
        return msg
