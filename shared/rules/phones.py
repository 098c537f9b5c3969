"""Phone numbers: validation, masking, keyed pseudonyms, and where a reply may go.

A sender's raw number never leaves this module in logs or tables other than the ones
CONTRACT.md allows; everywhere else it is a pseudonym or a masked form.

Where a reply may go is judged by libphonenumber (`phonenumbers`), not by hand-written
prefixes: a reply to a premium-rate or foreign number costs money the campaign never meant
to spend, and a raid can send from such numbers on purpose.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from functools import cache

import phonenumbers
from phonenumbers import PhoneNumberType, shortnumberinfo, timezone

_E164_DIGITS = re.compile(r"^[1-9][0-9]{5,14}$")
MASK_CHAR = "\u2022"


def is_phone_number(value: str) -> bool:
    """True for E.164 digits without '+' (as Vonage sends `msisdn` and `to`)."""
    return bool(_E164_DIGITS.match(value))


def pseudonym(number: str, secret_key: str) -> str:
    """Keyed, stable pseudonym of a number (HMAC-SHA256, hex): joinable, not reversible."""
    return hmac.new(secret_key.encode(), number.encode(), hashlib.sha256).hexdigest()


def mask(number: str) -> str:
    """`33612345621` -> `336••••••21`: enough to tell numbers apart, not to call one."""
    if len(number) <= 5:
        return MASK_CHAR * len(number)
    return number[:3] + MASK_CHAR * (len(number) - 5) + number[-2:]


# Never answered, whatever the campaign allows: each costs the sender of the reply money.
_NEVER = {PhoneNumberType.PREMIUM_RATE: "premium rate", PhoneNumberType.SHARED_COST:
          "shared cost", PhoneNumberType.TOLL_FREE: "toll free"}
# FIXED_LINE_OR_MOBILE: where the numbering plan cannot tell (US, CA, ...), the number may
# be a mobile; refusing it would make such countries unusable, and an SMS to a landline
# costs one failed segment at most. Everything else (fixed line, VoIP, pager, personal,
# UAN, voicemail, unknown) is refused.
_REPLYABLE = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}


def parse_reply_countries(raw: str) -> tuple[str, ...]:
    """"fr, BE" -> ("FR", "BE"); ValueError naming a code libphonenumber does not know."""
    codes = tuple(dict.fromkeys(code.strip().upper() for code in raw.split(",")
                                if code.strip()))
    unknown = [code for code in codes if code not in phonenumbers.SUPPORTED_REGIONS]
    if unknown:
        raise ValueError(f"reply_countries: unknown ISO 3166 code(s) {', '.join(unknown)}")
    return codes


def _parse(number: str) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse("+" + number)
    except phonenumbers.NumberParseException:
        return None


def _is_short_code(number: str, region: str) -> bool:
    """A short code of `region` (e.g. 36111 in France): never a person, often premium."""
    if not number.isdigit() or len(number) > 6:
        return False
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return False
    return bool(shortnumberinfo.is_possible_short_number_for_region(parsed, region))


def campaign_country(campaign_number: str) -> str:
    """The campaign number's ISO 3166 country (by its country code if the number itself
    is not valid, e.g. a test number); "ZZ" if unknown."""
    parsed = _parse(campaign_number)
    if parsed is None:
        return "ZZ"
    region = phonenumbers.region_code_for_number(parsed)
    return region or phonenumbers.region_code_for_country_code(parsed.country_code or 0)


def destination_verdict(number: str, campaign_number: str,
                        reply_countries: str = "") -> str | None:
    """None if a reply may go to `number` (E.164 digits), else why not. Allowed: mobiles of
    `reply_countries` ("FR,BE"; "" = the campaign number's country)."""
    allowed = set(parse_reply_countries(reply_countries) or
                  (campaign_country(campaign_number),))
    if any(_is_short_code(number, region) for region in allowed):
        return "destination not allowed: short code"
    parsed = _parse(number) if is_phone_number(number) else None
    if parsed is None or not phonenumbers.is_valid_number(parsed):
        return "destination not allowed: invalid number"
    kind = phonenumbers.number_type(parsed)
    if kind in _NEVER:
        return f"destination not allowed: {_NEVER[kind]}"
    country = phonenumbers.region_code_for_number(parsed)
    if country not in allowed:
        return f"destination not allowed: country {country}"
    if kind not in _REPLYABLE:
        return "destination not allowed: not a mobile"
    return None


@cache
def default_time_zone(campaign_number: str) -> str:
    """The IANA zone of the campaign number (libphonenumber's data), for its daily caps;
    "UTC" when the number is unknown or spans several zones (one must be picked)."""
    parsed = _parse(campaign_number)
    if parsed is None:
        return "UTC"
    zones = timezone.time_zones_for_number(parsed)
    if len(zones) != 1 or zones[0] == timezone.UNKNOWN_TIMEZONE:
        # An invalid test number: the zone of its country code, if it has exactly one.
        region = campaign_country(campaign_number)
        example = phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE)
        zones = timezone.time_zones_for_number(example) if example else ()
    return zones[0] if len(zones) == 1 and zones[0] != timezone.UNKNOWN_TIMEZONE else "UTC"
