"""umsg: the core of the unified messaging gateway.

Normalised model, ingest pipeline, universal queue, outbound path, web
service and command line. Channel protocols live in `channels/`, media
conversions in `converters/`, persistence in `storage/`.
"""

__version__ = "0.1.0"
