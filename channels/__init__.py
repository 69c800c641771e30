"""Channel adapters: one package per channel plus the contract they share.

`channels.base` defines what an adapter is (`ChannelAdapter`, `Capabilities`,
`Limits`, `InboundSink`); `channels.registry` finds adapter classes by their
configured `type` name and builds configured instances. A channel is such an
instance: its name (`[channels.NAME]`) is stamped on what it ingests, and the
identity kind its adapter declares is what replies on it go to. Channels translate
protocols only; every business rule lives in the core.
"""

from channels.base import AdapterSettings, Capabilities, ChannelAdapter, InboundSink, Limits, mask_secrets

__all__ = ["AdapterSettings", "Capabilities", "ChannelAdapter", "InboundSink", "Limits", "mask_secrets"]
