"""What the core offers a channel adapter beyond the ingest sink.

`ChannelServices` is handed to every adapter (`ChannelAdapter.bind`) before `start`. Adapters
use it for durable channel state (`state`), reading stored messages (`messages`) and
media (`blobs`), the route table (`routes`: which dialled number a channel answers),
queueing automatic mail (`outbox.notify`), delivery reports (`reports`), leased jobs of
its own (`jobs`: work that outlives `send`, shared by every gateway on the store), links back to
the inbox (`public_url`) and the configured channel instances (`channels`). It is the whole
of what a channel may touch: channels never import the ingest pipeline, the router or the
web app.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from storage.blobs import BlobStore
from umsg.channel_jobs import ChannelJobs
from umsg.channel_state import ChannelStateStore, StoredMessages
from umsg.chat_support import ChatSupport
from umsg.events.log import EventLog
from umsg.instances import ChannelInstances
from umsg.outbound.outbox import Outbox
from umsg.outbound.reports import DeliveryReports
from umsg.routes.book import RouteBook


@dataclass(frozen=True)
class ChannelServices:
    blobs: BlobStore
    routes: RouteBook
    events: EventLog
    outbox: Outbox
    reports: DeliveryReports
    # Durable, leased work of a channel's own kind (umsg/channel_jobs.py): fax send jobs.
    jobs: ChannelJobs
    # Durable channel state (umsg/channel_state.py): keyed JSON facts per instance (IMAP
    # checkpoints, SMS long-message parts), each write committed on return.
    state: ChannelStateStore
    # Stored messages read back (project, flags, parts): what a notification attaches.
    messages: StoredMessages
    # What a live chat reads and writes besides ingest (umsg/chat_support.py): a visitor's
    # history and files, ratings, typing, transcripts, whether an agent is available.
    chat: ChatSupport
    # Base URL of the web app as users reach it ("" when not configured): for links in mail.
    public_url: str
    # The project messages go to when a channel does not name one.
    default_project: str
    # Every configured channel instance (name, type, identity kind): which one answers on email.
    channels: ChannelInstances = field(default_factory=ChannelInstances)

    def conversation_link(self, conversation_id: int) -> str:
        """A link to a conversation in the agents' inbox (relative when no public URL is set)."""
        return f"{self.public_url.rstrip('/')}/inbox/#/conversations/{conversation_id}"
