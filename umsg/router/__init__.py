"""The router: which agent gets which waiting queue item, decided by one writer.

- `settings`: typed configuration (channel costs and caps, per-queue strategy,
  priority head start, relaxation, offer timeout, reason codes).
- `engine`: the pure, in-memory decision core (lazy heaps; O(log n) per pick).
- `store`: the database side (snapshots, offers as leases, compare-and-swap).
- `leader`: who holds the router role (PostgreSQL advisory lock).
- `service`: the background task tying them together, plus the commands the API calls.
- `admin`: the web API's reads of offers and its writes of agents' queue memberships.

This package's `__init__` imports nothing so that `umsg.config` can import
`umsg.router.settings` without a cycle.
"""
