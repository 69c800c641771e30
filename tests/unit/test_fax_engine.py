"""Fax sessions over SpanDSP: back to back in memory (audio and T.38), loss, recordings, drops."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from channels.fax.engine import Direction, FaxSession, Transport
from channels.fax.loopback import receive_recording, run_pair
from channels.telephony.spandsp import T30_ERR_CALLDROPPED, SpanDsp
from channels.telephony.udptl import UdptlDecoder, UdptlEncoder, UdptlError

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "fax"
ITU1 = CORPUS / "itu1.tif"
ITUTESTS = CORPUS / "itutests.tif"


@pytest.fixture(scope="module")
def dsp() -> SpanDsp:
    return SpanDsp.load()


def tiff_pages(path: Path) -> int:
    with Image.open(path) as img:
        return int(getattr(img, "n_frames", 1))


def same_images(a: Path, b: Path) -> bool:
    """libtiff's own comparison of the image data, ignoring tag differences (the oracle)."""
    return subprocess.run(["tiffcmp", "-t", str(a), str(b)], capture_output=True, check=False).returncode == 0


def test_tiffcmp_oracle_tells_different_documents_apart() -> None:
    assert same_images(ITU1, ITU1)
    assert not same_images(ITU1, ITUTESTS)


@pytest.mark.parametrize("transport", [Transport.AUDIO, Transport.T38])
def test_twelve_itu_pages_pass_back_to_back_identical(dsp: SpanDsp, transport: Transport, tmp_path: Path) -> None:
    rx = tmp_path / "rx.tif"
    result = run_pair(dsp, transport, ITUTESTS, rx)
    assert result.sent.ok and result.received.ok, (result.sent.reason, result.received.reason)
    assert result.sent.pages == result.received.pages == 12
    assert result.received.ecm and result.received.bit_rate == 14400
    assert (result.received.x_dpi, result.received.y_dpi) == (204, 196)
    assert result.received.remote_id == "+1 555 0100" and result.sent.remote_id == "+1 555 0199"
    assert tiff_pages(rx) == 12 and same_images(ITUTESTS, rx)
    with Image.open(rx) as img:  # stored as G4
        assert img.info["compression"] == "group4"


def test_t38_with_redundancy_survives_ten_percent_loss(dsp: SpanDsp, tmp_path: Path) -> None:
    rx = tmp_path / "rx.tif"
    result = run_pair(dsp, Transport.T38, ITU1, rx, loss=0.10, seed=11)
    assert result.datagrams_lost > 20  # the link really dropped packets
    assert result.received.ok and result.received.pages == 1
    assert result.received.bad_rows == 0
    assert same_images(ITU1, rx)


def test_recorded_caller_audio_decodes_to_itu1(dsp: SpanDsp, tmp_path: Path) -> None:
    rx = tmp_path / "rx.tif"
    outcome = receive_recording(dsp, (CORPUS / "caller_side.ulaw").read_bytes(), rx)
    assert outcome.ok and outcome.pages == 1 and outcome.reason == "OK"
    assert same_images(ITU1, rx)


@pytest.mark.parametrize("transport", [Transport.AUDIO, Transport.T38])
def test_call_dropped_mid_document_keeps_received_pages_as_partial(
    dsp: SpanDsp, transport: Transport, tmp_path: Path
) -> None:
    rx = tmp_path / "rx.tif"
    # Pages take ~27 s each on the simulated line: stop during the fourth page.
    result = run_pair(dsp, transport, ITUTESTS, rx, stop_after_seconds=100)
    got = result.received
    assert not got.ok and got.partial
    assert got.completion_code == T30_ERR_CALLDROPPED and "dropped" in got.reason
    assert 1 <= got.pages < 12
    assert tiff_pages(rx) == got.pages
    # The pages that arrived are the first pages of the document, intact.
    sent_first = tmp_path / "first.tif"
    pages = ",".join(str(i) for i in range(got.pages))
    subprocess.run(["tiffcp", f"{ITUTESTS},{pages}", str(sent_first)], check=True)
    assert same_images(sent_first, rx)


def test_garbage_udptl_and_ifp_never_raise_out_of_the_receiver(dsp: SpanDsp, tmp_path: Path) -> None:
    sent: list[bytes] = []
    receiver = FaxSession(dsp, transport=Transport.T38, direction=Direction.RECEIVE, path=tmp_path / "rx.tif",
                          send_ifp=lambda ifp, _n: sent.append(ifp))
    decoder = UdptlDecoder()
    encoder = UdptlEncoder()
    rng = random.Random(5)
    malformed = 0
    for i in range(3000):
        receiver.tick()
        # Random datagrams, and well-framed UDPTL carrying random IFP bytes.
        datagram = rng.randbytes(rng.randint(0, 60)) if i % 2 else encoder.encode(rng.randbytes(rng.randint(1, 60)))
        try:
            for seq, ifp in decoder.feed(datagram):
                receiver.rx_ifp(seq, ifp)
        except UdptlError:
            malformed += 1
    receiver.rx_ifp(0, b"")
    outcome = receiver.close()
    assert malformed > 100
    assert sent  # it kept talking (CED/DIS) through the noise
    assert not outcome.ok and outcome.pages == 0 and not outcome.partial
    assert receiver.close() == outcome  # closing twice is harmless


def test_audio_session_survives_odd_and_empty_frames(dsp: SpanDsp, tmp_path: Path) -> None:
    receiver = FaxSession(dsp, transport=Transport.AUDIO, direction=Direction.RECEIVE, path=tmp_path / "rx.tif")
    rng = random.Random(9)
    for n in (0, 1, 3, 321, 5000):
        receiver.rx_audio(rng.randbytes(n))
        assert len(receiver.tx_audio()) == 320
    outcome = receiver.close()
    assert outcome.pages == 0 and outcome.direction == "receive"
    assert receiver.tx_audio() == bytes(320)  # closed sessions send silence


def test_sending_a_missing_file_is_a_permanent_error(dsp: SpanDsp, tmp_path: Path) -> None:
    from umsg.errors import PermanentError

    with pytest.raises(PermanentError, match="does not exist"):
        FaxSession(dsp, transport=Transport.AUDIO, direction=Direction.SEND, path=tmp_path / "none.tif")
