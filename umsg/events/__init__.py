"""The event log: an outbox of what happened (`log.EventLog`, rows written in the transaction of
the change they report) and one reader per process handing new events to live subscribers
(`fanout`). The package's `__init__` imports nothing.
"""
