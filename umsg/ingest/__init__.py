"""The ingest pipeline: the one function every channel adapter calls with an `Inbound`.

prepare (outside the transaction: validate, durable blobs, conversions) →
group-committed steps (dedupe → contact → thread → store → route/enqueue →
events) → return after commit. The entry point is `umsg.ingest.ingestor.Ingestor`.

The package's `__init__` imports nothing, so that importing one of its modules does
not pull in the whole pipeline (and with it the outbound path).
"""
