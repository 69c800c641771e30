"""The libspandsp binding: prototypes, completion codes, G.711 and the CNG detector."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest

from channels.telephony.spandsp import G711, T30_ERR_CALLDROPPED, SpanDsp, pcm_array
from channels.telephony.tones import CngDetector
from umsg.errors import TransientError

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "fax"


@pytest.fixture(scope="module")
def dsp() -> SpanDsp:
    return SpanDsp.load()


def tone(freq: float, seconds: float, amplitude: int = 8000) -> bytes:
    return b"".join(struct.pack("<h", int(amplitude * math.sin(2 * math.pi * freq * i / 8000)))
                    for i in range(int(8000 * seconds)))


def test_completion_codes_read_as_reasons(dsp: SpanDsp) -> None:
    assert dsp.completion_reason(0) == "OK"
    assert dsp.completion_reason(11) == "Far end cannot receive at the resolution of the image"
    assert dsp.completion_reason(T30_ERR_CALLDROPPED) == "The call dropped prematurely"
    assert dsp.completion_reason(10_000)  # unknown codes still give text, never a crash


def test_a_missing_library_is_a_transient_error() -> None:
    with pytest.raises(TransientError, match="libspandsp"):
        SpanDsp.load("/nonexistent/libspandsp.so.2")


@pytest.mark.parametrize("alaw", [False, True])
def test_g711_round_trip_is_close(dsp: SpanDsp, alaw: bool) -> None:
    pcm = tone(1000, 0.1)
    codec = G711(dsp, alaw=alaw)
    coded = codec.encode(pcm)
    assert len(coded) == len(pcm) // 2
    back = codec.decode(coded)
    codec.close()
    codec.close()
    pairs = zip(struct.iter_unpack("<h", pcm), struct.iter_unpack("<h", back), strict=True)
    assert max(abs(a[0] - b[0]) for a, b in pairs) < 300  # companding error at this level, not noise


def test_pcm_array_drops_an_odd_byte(dsp: SpanDsp) -> None:
    assert len(pcm_array(b"\x01\x00\x02")) == 1


def test_cng_detected_within_half_a_second(dsp: SpanDsp) -> None:
    detector = CngDetector(dsp)
    pcm = tone(1100, 0.5) + bytes(16000)
    for i in range(0, len(pcm), 320):
        detector.feed(pcm[i:i + 320])
    assert detector.detected and detector.detected_at_sample is not None
    assert detector.detected_at_sample <= 4000
    detector.close()


@pytest.mark.parametrize("pcm", [tone(440, 3), tone(1800, 3), bytes(48000)], ids=["440Hz", "1800Hz", "silence"])
def test_other_sounds_are_not_cng(dsp: SpanDsp, pcm: bytes) -> None:
    detector = CngDetector(dsp)
    for i in range(0, len(pcm), 320):
        assert not detector.feed(pcm[i:i + 320])
    detector.close()


def test_cng_heard_on_the_recorded_fax_call(dsp: SpanDsp) -> None:
    audio = (CORPUS / "caller_side.ulaw").read_bytes()
    codec, detector = G711(dsp), CngDetector(dsp)
    for i in range(0, 8000 * 4, 160):
        if detector.feed(codec.decode(audio[i:i + 160])):
            break
    assert detector.detected and (detector.detected_at_sample or 0) < 8000
    detector.close()
    codec.close()
