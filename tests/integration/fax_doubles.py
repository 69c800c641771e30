"""Test doubles of the fax line shared by the tests of fax send jobs (not of the telephony)."""

from __future__ import annotations

from channels.fax.engine import FaxOutcome
from channels.fax.transmit import Transmission


def ok_transmission(number: str) -> Transmission:
    """A one-page fax to `number` that went through over T.38."""
    outcome = FaxOutcome(ok=True, completion_code=0, reason="OK", pages=1, bit_rate=14400, ecm=True, x_dpi=204,
                         y_dpi=196, width=1728, length=2292, bad_rows=0, longest_bad_row_run=0, remote_id=number,
                         transport="t38", direction="tx", partial=False)
    return Transmission(outcome, "invite", False, f"call-{number}")
