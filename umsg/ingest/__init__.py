"""The ingest pipeline: the one function every channel adapter calls with an `Inbound`.

prepare (outside the transaction: validate, durable blobs, conversions) →
group-committed steps (dedupe → contact → thread → store → route/enqueue →
events) → return after commit.
"""

from umsg.ingest.ingestor import Ingestor

__all__ = ["Ingestor"]
