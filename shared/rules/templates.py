"""Reply templates that cost one segment: what a text costs and how to make it cheaper.

The 2017 service halved its bill by fitting its reply into one segment: one typographic
apostrophe (’) turns a 160-character GSM-7 SMS into 70-character UCS-2 segments.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from shared.rules.segments import Encoding, encode

# GSM-7 stand-ins for characters that force UCS-2 (French typography first).
SUBSTITUTIONS = {
    "\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "«": '"', "»": '"',
    "\u2026": "...", "\u2013": "-", "\u2014": "-", "\u00a0": " ", "\u202f": " ",
    "œ": "oe", "Œ": "OE", "æ": "ae", "ç": "c", "ê": "e", "ë": "e", "â": "a", "î": "i",
    "ï": "i", "ô": "o", "û": "u", "ÿ": "y", "À": "A", "Â": "A", "È": "E",
    "Ê": "E", "Ë": "E", "Î": "I", "Ï": "I", "Ô": "O", "Û": "U", "Ù": "U",
}


@dataclass(frozen=True)
class TemplateReport:
    text: str
    encoding: Encoding
    cost: Decimal
    suggestion: str | None
    suggestion_encoding: Encoding | None

    @property
    def fits_one_segment(self) -> bool:
        return self.encoding.segments == 1


def gsm7_suggestion(text: str) -> str:
    """`text` with every substitutable character replaced by its GSM-7 stand-in."""
    return "".join(SUBSTITUTIONS.get(char, char) for char in text)


def check_template(text: str, price_per_segment: Decimal) -> TemplateReport:
    encoding = encode(text)
    suggestion = suggestion_encoding = None
    if encoding.non_gsm_characters:
        candidate = gsm7_suggestion(text)
        if candidate != text:
            suggestion, suggestion_encoding = candidate, encode(candidate)
    return TemplateReport(text, encoding, encoding.segments * price_per_segment, suggestion,
                          suggestion_encoding)


def describe(report: TemplateReport) -> list[str]:
    """The report as lines for the CLI."""
    encoding = report.encoding
    lines = [f"encoding: {encoding.name} ({encoding.units} units)",
             f"segments: {encoding.segments}", f"cost: {report.cost} EUR per reply"]
    if encoding.segments > encoding.naive_segments:
        lines.append(f"split: {encoding.segments} parts, not {encoding.naive_segments}: "
                     f"a {'GSM-7 escape' if encoding.vonage_type == 'text' else 'surrogate'}"
                     " pair cannot straddle two parts")
    if encoding.non_gsm_characters:
        shown = " ".join(repr(char) for char in encoding.non_gsm_characters)
        lines.append(f"forcing UCS-2: {shown}")
    if report.suggestion is not None and report.suggestion_encoding is not None:
        lines.append(f"suggestion ({report.suggestion_encoding.name}, "
                     f"{report.suggestion_encoding.segments} segment(s)): {report.suggestion}")
    return lines
