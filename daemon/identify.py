"""`photosafe identify`: what the station would make of a scan, for checking scanners and bands.

Estates teams point a scanner at a wristband, badge or card (or photograph one) and need to know
whether the station will accept it, and if not, why. This module decodes an image with zxing-cpp
the way the camera path does (plain text, the AIM symbology identifier in front) and classifies
the text with `photosafe.protocol.identity.classify`, the station's own classifier.

It prints as little patient data as will do: for a patient, the scheme, how the identifier was
read, its last three characters (masked) and whether a name and a date of birth were present,
never the name, the date or the whole number. A refusal carries the classifier's reason, which
never contains the scanned text.

Rules: `--config station.toml` reads the station's `[identity]` section only (the keys and the
broker are not needed to classify a scan, and an estates laptop does not have them). Without it,
the documented test rules apply: GS1 company prefix 9506000 (GS1's example range, the one the
sandbox site uses, never a real NHS wristband) and the default staff pattern; the output says so.
"""

from __future__ import annotations

import json
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zxingcpp
from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from photosafe.daemon.config import IdentitySettings
from photosafe.protocol import cards
from photosafe.protocol.errors import ConfigRejected
from photosafe.protocol.identity import (
    GS,
    Command,
    IdentityRules,
    Patient,
    Rejected,
    Scanned,
    Staff,
    classify,
)

TEST_NHS_GS1_PREFIX = "9506000"
TEST_RULES_NOTE = (
    f"test rules (no --config): NHS GS1 company prefix {TEST_NHS_GS1_PREFIX} (GS1 example range, "
    "never a real wristband) and the default staff pattern; pass --config to use this "
    "station's rules"
)
# Ways to type the GS1 group separator on a command line, as `photosafe run --simulate` accepts.
GS_ESCAPES = ("\\x1d", "\\x1D", "<GS>")
SHOWN_CHARS = 3


class IdentifyError(Exception):
    """The rules or the image cannot be used (exit code 2, not a refused scan)."""


@dataclass(frozen=True)
class Rules:
    rules: IdentityRules
    note: str  # where the rules came from, printed with every answer


def load_rules(config: Path | None) -> Rules:
    """The station's identity rules from its config file, or the documented test rules."""
    if config is None:
        return Rules(IdentityRules(nhs_gs1_company_prefix=TEST_NHS_GS1_PREFIX), TEST_RULES_NOTE)
    try:
        with config.open("rb") as handle:
            section = tomllib.load(handle).get("identity")
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise IdentifyError(f"{config}: {exc}") from None
    if not isinstance(section, dict):
        raise IdentifyError(f"{config}: no [identity] section")
    try:
        settings = IdentitySettings.model_validate(section)
        rules = IdentityRules(
            nhs_gs1_company_prefix=settings.nhs_gs1_company_prefix,
            staff_pattern=settings.staff_pattern,
            mrn_pattern=settings.mrn_pattern,
            mrn_authority=settings.mrn_authority,
            gs_substitute=settings.gs_substitute,
        )
    except ValidationError as exc:
        where = "; ".join(
            f"identity.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
        )
        raise IdentifyError(f"{config}: {where}") from None
    except ConfigRejected as exc:
        raise IdentifyError(f"{config}: identity: {exc}") from None
    return Rules(rules, f"the [identity] rules of {config}")


def unescape(text: str) -> str:
    """A scan typed on a command line: `\\x1d` or `<GS>` stand for the GS1 separator."""
    for escape in GS_ESCAPES:
        text = text.replace(escape, GS)
    return text


def mask(identifier: str) -> str:
    """All but the last three characters hidden: enough to tell two bands apart, no more."""
    shown = identifier[-SHOWN_CHARS:] if len(identifier) > SHOWN_CHARS else ""
    return "*" * (len(identifier) - len(shown)) + shown


def describe(scanned: Scanned) -> dict[str, Any]:
    """The JSON-ready answer for one classified scan, with no more patient data than needed."""
    match scanned:
        case Patient():
            return {
                "kind": "patient",
                "valid": True,
                "reason": None,
                "scheme": scanned.scheme.value,
                "source": scanned.source,
                "identifier": mask(scanned.identifier),
                "name_present": scanned.name is not None,
                "birth_date_present": scanned.birth_date is not None,
            }
        case Staff(staff_id):
            return {"kind": "staff", "valid": True, "reason": None, "staff_id": staff_id}
        case Command(card):
            return {
                "kind": "command",
                "valid": True,
                "reason": None,
                "card": cards.card_label(card),
            }
        case Rejected(looked_like, reason):
            return {
                "kind": "rejected",
                "valid": False,
                "reason": reason,
                "looked_like": looked_like,
            }


def identify_text(text: str, rules: Rules) -> dict[str, Any]:
    """What the station makes of one scanner reading (AIM symbology identifier included)."""
    return {**describe(classify(unescape(text), rules.rules)), "rules": rules.note}


def identify_image(path: Path, rules: Rules) -> dict[str, Any]:
    """Every barcode zxing-cpp finds in a picture, each classified as the station would."""
    try:
        with Image.open(path) as image:
            grey = image.convert("L")
    except (OSError, UnidentifiedImageError) as exc:
        raise IdentifyError(f"{path}: not an image this tool can read ({exc})") from None
    found = zxingcpp.read_barcodes(grey, text_mode=zxingcpp.TextMode.Plain)
    barcodes = [
        {
            "format": barcode.format.name,
            "symbology": barcode.symbology_identifier,
            **describe(classify(barcode.symbology_identifier + barcode.text, rules.rules)),
        }
        for barcode in found
    ]
    return {
        "barcodes": barcodes,
        "valid": bool(barcodes) and all(b["valid"] for b in barcodes),
        "reason": None if barcodes else "no barcode found in the image",
        "rules": rules.note,
    }


def run(text: str | None, image: Path | None, config: Path | None) -> int:
    """The `identify` command: prints the JSON answer; 0 recognised, 1 refused, 2 unusable input."""
    if (text is None) == (image is None):
        print(
            "photosafe identify: give the scanned TEXT or --image FILE, not both", file=sys.stderr
        )
        return 2
    try:
        rules = load_rules(config)
        if image is not None:
            answer = identify_image(image, rules)
        else:
            assert text is not None
            answer = identify_text(text, rules)
    except IdentifyError as exc:
        print(f"photosafe identify: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(answer, indent=2, ensure_ascii=False))
    return 0 if answer["valid"] else 1
