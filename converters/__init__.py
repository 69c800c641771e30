"""Media converters: small functions from one media type to another.

Each converter declares the media types it takes and the one it gives, and
only turns bytes into bytes; the ingest pipeline decides when to run it and
stores the result as a derived part linked to its source.
"""
