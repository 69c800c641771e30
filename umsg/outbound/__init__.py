"""Outgoing messages: queued durably, dispatched to the channel instance that owns them, reported on.

`outbox` queues a reply or notification (a message row and a `deliver` job, one transaction);
`dispatcher` claims due jobs under a lease (`claim`), loads what the adapter needs (`load`),
calls the adapter's `send` and group-commits the results (`record`), moving the messages'
states in batches (`status_changes`). Peers' later reports (SMS receipts, fax results, email
DSNs) go through `reports`; every one of these obeys the one status rule (`status`).

The package's `__init__` imports nothing, so that importing one module does not pull in the rest.
"""
