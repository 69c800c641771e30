"""Channel routes: which queue (or action) an inbound item goes to.

A project's route table is ordered, Jasmin-shaped: each route is a set of
filters that must all match plus one target, the first matching route wins,
and the table always ends in a default route that matches everything.

    [[routes]]                       # in the TOML file; PUT /api/v1/routes takes the same as JSON
    name = "vip"
    project = "acme"                 # default: the settings' project
    contact = ["vip = true", "value >= 1000"]
    queue = "vip"
    priority = 10
    sla_minutes = 30
    skills = { billing = 3 }         # skill -> minimum proficiency 1..5
    preferred_agent = { rule = "last_agent", expiry_minutes = 1440 }

    [[routes]]
    name = "closed"
    hours = { tz = "Europe/Berlin", mon = "08:00-18:00", fri = "08:00-16:00",
              holidays = ["2026-12-25"], open = false }
    action = "auto_reply"            # or "drop", "forward" (forward_to = "..."), "enqueue"
    template = "Dear {contact_name}, we answer case {conversation_id} tomorrow."
    queue = "general"                # auto_reply/forward also enqueue when a queue is given

Filter kinds: `channel`, `to`, `sender`, `time`, `hours`, `contact`,
`language`, `menu`, `keywords` (see `filters`, `patterns`, `clock`). A table
that routes no further than an earlier catch-all, or whose route an earlier
one always wins over, is refused naming both routes (the rule: `shadow`).
A table whose last route has filters gets the built-in `default` route.

Modules, lowest first: `patterns` (address/number/text patterns), `clock`
(time windows and business-hours calendars), `filters` (the filter kinds and
the sample item they judge), `targets`, `settings` (the typed `[[routes]]` tables,
validated by those parsers), `shadow` (refusing routes that can
never match), `table` (the ordered table, matching and explaining), `build`
(configuration → frozen routes, with keyed problems), `book` (per-project
tables from TOML and the store, reloaded without a restart), `actions` (what
the ingest does with a decision: auto-reply, forward, preferred agent),
`probe` (a sample item from loose fields, for `umsg routes test` and the API) and
`admin` (reading, saving and testing a project's table for the web API).

The package imports nothing of `umsg.config`: the configuration imports `settings` and
`build` from here (to hold the routes and refuse a table that cannot work), never the
other way. This package's `__init__` imports nothing, to keep that one-way.
"""
