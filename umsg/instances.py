"""The configured channel instances as the core sees them: name, adapter type, identity kind.

"Channel" means a configured instance (`[channels.support]`, `type = "email"`): messages,
conversations and queue items carry its name, and the dispatcher hands an outgoing message to
the adapter configured under exactly that name. Each adapter declares the kind of identity it
answers on (`channels.base.ChannelAdapter.identity_kind`: email address, phone number, fax
number, chat visitor id, or none: "answer whoever wrote"). The core never imports `channels`,
so the composition root (`umsg.app.serve`, `umsg.cli`) collects the declarations into a
`ChannelInstances` and hands it to `Core.open`.

A core given no instances (an embedded core, most tests) knows no configured names; there,
and only there, the built-in adapter type names stand for themselves (`email` answers on email
addresses, `sms` on phone numbers, ...), as every adapter named its messages before channels
were named by instance.

An instance also says whom it works for, so the outbound authority (umsg/outbound/authority.py)
can refuse a reply of one project through another project's relay: `projects`, the slugs of the
projects whose messages it carries (None: not declared, as for an instance built by hand in a
test, which then serves every project), and `senders`, the addresses (`help@acme.example`) or
whole domains (`@acme.example`) it may send as (empty: not declared; the adapter picks its own).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from umsg.errors import PermanentError
from umsg.model import IdentityKind

# Only for a core that was given no configured instances (see the module docstring).
TYPE_KINDS: dict[str, IdentityKind | None] = {
    "email": IdentityKind.EMAIL,
    "sms": IdentityKind.PHONE,
    "fax": IdentityKind.FAX,
    "webchat": IdentityKind.CHAT,
}


@dataclass(frozen=True)
class Instance:
    """One configured channel instance."""

    name: str
    type: str
    identity_kind: IdentityKind | None
    enabled: bool = True
    projects: frozenset[str] | None = None
    senders: tuple[str, ...] = ()

    def serves(self, project: str) -> bool:
        """Whether messages of project `project` (a slug) may leave through this instance."""
        return self.projects is None or project in self.projects

    def sends_as(self, address: str) -> bool | None:
        """Whether `address` is one of this instance's own; None when it declares no senders."""
        if not self.senders:
            return None
        value = address.strip().strip("<>").strip().lower()
        for own in self.senders:
            own = own.lower()
            if own.startswith("@"):
                if "@" in value and value.rsplit("@", 1)[1] == own[1:]:
                    return True
            elif value == own or _without_detail(value) == own:
                return True
        return False


def _without_detail(address: str) -> str:
    """`reply@host` for `reply+token@host` (RFC 5233 subaddress): our own threading addresses."""
    local, at, host = address.rpartition("@")
    return f"{local.split('+', 1)[0]}@{host}" if at else address


class ChannelInstances:
    """Every configured channel instance by name; immutable once built."""

    def __init__(self, instances: Iterable[Instance] = ()) -> None:
        self._by_name = {i.name: i for i in instances}

    def __bool__(self) -> bool:
        return bool(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __repr__(self) -> str:
        return f"ChannelInstances({list(self._by_name.values())!r})"

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def all(self) -> list[Instance]:
        return [self._by_name[n] for n in self.names()]

    def get(self, name: str) -> Instance | None:
        return self._by_name.get(name)

    def kind(self, channel: str) -> IdentityKind | None:
        """The identity kind a reply on `channel` goes to; None: answer whoever wrote last."""
        found = self._by_name.get(channel)
        if found is not None:
            return found.identity_kind
        return None if self._by_name else TYPE_KINDS.get(channel)

    def answering(self, kind: IdentityKind, *, enabled_only: bool = True) -> list[str]:
        """The instances that answer on identities of `kind`, by name."""
        return sorted(i.name for i in self._by_name.values()
                      if i.identity_kind == kind and (i.enabled or not enabled_only))

    def of_type(self, type_name: str) -> list[str]:
        return sorted(i.name for i in self._by_name.values() if i.type == type_name)

    def one_answering(self, kind: IdentityKind, what: str) -> str:
        """The one enabled instance answering on `kind` (for `what`, named in the error).

        Without configured instances, the type name of that kind (`email` for email). Raises
        PermanentError when none or several are configured: the caller must name one.
        """
        if not self._by_name:
            return next((t for t, k in TYPE_KINDS.items() if k == kind), kind.value)
        found = self.answering(kind)
        if len(found) == 1:
            return found[0]
        if not found:
            raise PermanentError(f"no channel answering on {kind.value} is configured for {what}")
        raise PermanentError(f"several channels answer on {kind.value} ({', '.join(found)}): "
                             f"{what} must name one")

    def suggest(self, name: str) -> str:
        """A "did you mean" for a name that is no configured instance ('' when nothing fits)."""
        of_type = self.of_type(name)
        if of_type:
            listed = " or ".join(repr(n) for n in of_type)
            return f"'{name}' is a channel type, not an instance; did you mean {listed}?"
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        return f"did you mean {' or '.join(repr(n) for n in close)}?" if close else ""
