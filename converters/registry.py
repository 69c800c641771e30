"""Which converters run for which media types, chosen by name in the configuration."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from converters.base import Converter
from converters.fax_render import FaxRender
from converters.fax_thumb import FaxThumbnail
from converters.html_text import HtmlToText
from converters.tiff_pdf import TiffToPdf
from converters.wav_mp3 import WavToMp3
from umsg.errors import ConfigError

# Built-ins by name; later issues add fax-to-pdf, voicemail-to-mp3 and friends here.
BUILTINS: dict[str, type[Converter]] = {
    HtmlToText.name: HtmlToText,
    TiffToPdf.name: TiffToPdf,
    FaxThumbnail.name: FaxThumbnail,
    FaxRender.name: FaxRender,
    WavToMp3.name: WavToMp3,
}


class ConverterRegistry:
    """The enabled converters, looked up by the media type of a part."""

    def __init__(self, converters: Iterable[Converter] = ()) -> None:
        self._by_name: dict[str, Converter] = {}
        for c in converters:
            self.add(c)

    def add(self, converter: Converter) -> None:
        if converter.name in self._by_name:
            raise ConfigError([("converters", f"converter '{converter.name}' is listed twice")])
        self._by_name[converter.name] = converter

    def for_media_type(self, media_type: str) -> list[Converter]:
        base = media_type.split(";", 1)[0].strip().lower()
        return [c for c in self._by_name.values() if base in c.accepts]

    @property
    def names(self) -> list[str]:
        return list(self._by_name)


def default_converters(names: Iterable[str]) -> ConverterRegistry:
    """Build the registry from configured names; an unknown name says what it might have meant."""
    reg = ConverterRegistry()
    for i, name in enumerate(names):
        cls = BUILTINS.get(name)
        if cls is None:
            guess = difflib.get_close_matches(name, list(BUILTINS), n=1)
            hint = f" (did you mean '{guess[0]}'?)" if guess else f"; known: {', '.join(sorted(BUILTINS))}"
            raise ConfigError([(f"converters.{i}", f"unknown converter '{name}'{hint}")])
        reg.add(cls())
    return reg
