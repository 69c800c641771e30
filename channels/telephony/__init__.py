"""The shared telephony stack: SIP (UDP/TCP) user agent, SDP offer/answer, RTP with a jitter
buffer, G.711, RFC 4733 DTMF, and the `Call` API that voicemail and fax applications use.

Modules: `sipmsg` (parse/serialise), `transport` (listeners), `transactions` (timers),
`dialog`, `uas` (the server), `uac` (outgoing calls, same `Call` API; `digest` answers 401/407),
`call` (the application API: read it first), `sdp`, `rtp`,
`g711`, `dtmf`, `cng` (a fallback fax-tone detector). Fax adds `spandsp` and `udptl`.
"""
