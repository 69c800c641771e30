"""The web API's handlers, one module per resource: each parses, authorises and serialises;
the queries and writes live in the services they call (umsg.conversations, umsg.agents, ...)."""
