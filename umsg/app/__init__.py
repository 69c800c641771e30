"""The application's wiring: `serve` (the
composition root, with the CLI the only code that imports `channels`) starts the channel
instances, the dispatcher and the web app; `gc_tuning` and `failpoints` serve `umsg serve`.
The package's `__init__` imports nothing.
"""
