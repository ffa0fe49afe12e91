"""The printed command cards a headless station is driven by, as an A4 PDF for the ward.

Every card the station understands is on the sheet: consent (explicit with its scopes,
parental, best-interests), the six implied-consent categories (theatre stations only), the actions
(capture, intimate, approve, discard, cancel, done) and body sites with laterality. Each code is a
QR code drawn by zxing-cpp's writer, the text from `photosafe.protocol.cards.card_text`, and
under it the card's label from `cards.card_label` (body sites also get their anatomical term).

Pages are 300 dpi bilevel images (Pillow stores them losslessly, CCITT G4, in the PDF), laid out
on a fixed grid so that `layout()` says exactly which card is printed where: the test rasterises
the PDF and decodes each cell on its own.

The body-site list below is a STARTER, not a clinical decision: eight structures common in
wound care, tissue viability and dermatology photography, each code's Verhoeff check digit
checked by `cards.snomed_concept_problem` at import. The trust's clinical coding team must review
it (terms, codes, which sites need laterality) before a sheet is printed for clinical use, and
wards extend it with `--body-site CODE:TERM[:sides]`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import zxingcpp
from PIL import Image, ImageDraw, ImageFont

from photosafe.protocol import cards
from photosafe.protocol.consent import ImpliedCategory, Purpose, Relationship

DPI = 300
PAGE = (2480, 3508)  # A4 at 300 dpi
MARGIN = 150  # 12.7 mm
HEADER = 260  # title and instruction lines
COLUMNS, ROWS = 3, 5
MODULE_PX = 10  # one QR module is 0.85 mm: easy for any handheld scanner
MAX_TERM = 40

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True)
class BodySite:
    """A SNOMED CT body structure to print, with left and right cards when it has sides."""

    code: str
    term: str
    sided: bool

    def __post_init__(self) -> None:
        problem = cards.snomed_concept_problem(self.code)
        if problem is not None:
            raise ValueError(f"body site {self.term!r}: {problem}")
        if not 0 < len(self.term) <= MAX_TERM or not self.term.isprintable():
            raise ValueError(f"a body-site term is 1 to {MAX_TERM} printable characters")


# Starter list (see the module docstring): to be reviewed by the trust's clinical coding team.
DEFAULT_BODY_SITES: tuple[BodySite, ...] = (
    BodySite("89545001", "Face", sided=False),
    BodySite("41695006", "Scalp", sided=False),
    BodySite("77568009", "Back of trunk", sided=False),
    BodySite("14975008", "Forearm", sided=True),
    BodySite("85562004", "Hand", sided=True),
    BodySite("30021000", "Lower leg", sided=True),
    BodySite("56459004", "Foot", sided=True),
    BodySite("76853006", "Heel", sided=True),
)


def parse_body_site(text: str) -> BodySite:
    """`CODE:TERM` (one card, no laterality) or `CODE:TERM:sides` (left and right cards)."""
    found = re.fullmatch(r"([0-9]+):([^:]+?)(:sides)?", text.strip())
    if found is None:
        raise ValueError("a body site reads CODE:TERM or CODE:TERM:sides, e.g. 14975008:Forearm")
    code, term, sides = found.groups()
    return BodySite(code, term.strip(), sided=sides is not None)


# --- What is on the sheet ----------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    card: cards.Card
    heading: str | None  # a body site's term and side, printed above the label

    @property
    def text(self) -> str:
        return cards.card_text(self.card)

    @property
    def label(self) -> str:
        return cards.card_label(self.card)


@dataclass(frozen=True)
class Section:
    title: str
    instruction: str
    entries: tuple[Entry, ...]


CARE, TEACHING, PUBLICATION = Purpose.CARE, Purpose.TEACHING, Purpose.PUBLICATION
# The scopes worth a card: care always, teaching and publication added in that order.
_SCOPES: tuple[tuple[tuple[Purpose, ...], bool], ...] = (
    ((CARE,), False),
    ((CARE, TEACHING), False),
    ((CARE, TEACHING), True),
    ((CARE, TEACHING, PUBLICATION), False),
    ((CARE, TEACHING, PUBLICATION), True),
)
_PARENTAL_SCOPES = _SCOPES[:3]


def sections(body_sites: Iterable[BodySite] = DEFAULT_BODY_SITES) -> list[Section]:
    """Every card of the sheet, grouped as printed: one section starts a new page."""

    def plain(*items: cards.Card) -> tuple[Entry, ...]:
        return tuple(Entry(item, None) for item in items)

    sites: dict[cards.Card, Entry] = {}  # a site given twice is printed once
    for site in body_sites:
        sides: tuple[cards.Laterality, ...] = ("left", "right") if site.sided else ("none",)
        for side in sides:
            heading = f"{site.term}, {side}" if site.sided else site.term
            card = cards.BodySiteCard(site.code, side)
            sites.setdefault(card, Entry(card, heading))
    return [
        Section(
            "Consent",
            "Scan one after the patient's wristband: the patient's own consent and its scope, "
            "or a best-interests decision (then scan the decision-maker's badge).",
            plain(
                *(cards.ExplicitConsentCard(p, deid) for p, deid in _SCOPES),
                cards.BestInterestsCard(),
            ),
        ),
        Section(
            "Consent for a child",
            "Scan one after the child's wristband when a person with parental responsibility "
            "consents for a child who cannot consent.",
            plain(
                *(
                    cards.ParentalConsentCard(p, deid, who)
                    for who in Relationship
                    for p, deid in _PARENTAL_SCOPES
                )
            ),
        ),
        Section(
            "Implied consent: theatre stations only",
            "Internal images covered by consent to the procedure. A ward station refuses these; "
            "a theatre station accepts only the categories it is set up for.",
            plain(*(cards.ImpliedConsentCard(category) for category in ImpliedCategory)),
        ),
        Section(
            "Actions",
            "Capture takes the picture. Intimate images need a chaperone's badge and the "
            "patient's approval on the display. Cancel or Done clears the patient.",
            plain(
                cards.CaptureCard(),
                cards.IntimateCard(),
                cards.ApproveCard(),
                cards.DiscardCard(),
                cards.CancelCard(),
                cards.DoneCard(),
            ),
        ),
        Section(
            "Body sites",
            "Optional, after consent: the body site photographed (SNOMED CT), with its side. "
            "Starter list: check it with your clinical coding team.",
            tuple(sites.values()),
        ),
    ]


# --- Where it goes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One card's place on a page, in 300 dpi pixels: (left, top, right, bottom)."""

    page: int
    box: tuple[int, int, int, int]
    entry: Entry


@dataclass(frozen=True)
class Page:
    title: str
    instruction: str
    cells: tuple[Cell, ...]


def layout(parts: Sequence[Section]) -> list[Page]:
    """The pages: each section on its own page(s), COLUMNS x ROWS cards a page."""
    per_page = COLUMNS * ROWS
    width = (PAGE[0] - 2 * MARGIN) // COLUMNS
    height = (PAGE[1] - 2 * MARGIN - HEADER) // ROWS
    pages: list[Page] = []
    for section in parts:
        chunks = [
            section.entries[i : i + per_page] for i in range(0, len(section.entries), per_page)
        ]
        for number, chunk in enumerate(chunks, start=1):
            title = (
                section.title if len(chunks) == 1 else f"{section.title} ({number}/{len(chunks)})"
            )
            index = len(pages)
            cells = []
            for slot, entry in enumerate(chunk):
                left = MARGIN + (slot % COLUMNS) * width
                top = MARGIN + HEADER + (slot // COLUMNS) * height
                cells.append(Cell(index, (left, top, left + width, top + height), entry))
            pages.append(Page(title, section.instruction, tuple(cells)))
    return pages


# --- Drawing -----------------------------------------------------------------------------------


@cache
def _font(size: int, bold: bool = False) -> Font:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(name, size)  # Pillow searches the system's font folders
    except OSError:
        return ImageFont.load_default(size)


def symbol(text: str) -> Image.Image:
    """The card's QR code, quiet zone included, MODULE_PX pixels a module."""
    barcode = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
    return Image.fromarray(zxingcpp.write_barcode_to_image(barcode, scale=MODULE_PX)).convert("L")


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Font, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split(" "):
        trial = f"{lines[-1]} {word}" if lines else word
        if lines and draw.textlength(trial, font=font) <= width:
            lines[-1] = trial
        else:
            lines.append(word)
    return lines


def _cut_lines(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int]) -> None:
    """A dashed outline to cut the card out along."""
    left, top, right, bottom = box
    for x in range(left, right, 40):
        for y in (top, bottom):
            draw.line((x, y, min(x + 20, right), y), fill=0, width=2)
    for y in range(top, bottom, 40):
        for x in (left, right):
            draw.line((x, y, x, min(y + 20, bottom)), fill=0, width=2)


def _draw_cell(page: Image.Image, cell: Cell) -> None:
    draw = ImageDraw.Draw(page)
    left, top, right, bottom = cell.box
    pad = 24
    _cut_lines(draw, cell.box)
    code = symbol(cell.entry.text)
    page.paste(code, ((left + right - code.width) // 2, top + pad))
    y = top + pad + code.height + 6
    text_width = right - left - 2 * pad
    if cell.entry.heading:
        bold = _font(44, bold=True)
        for line in _wrap(draw, cell.entry.heading, bold, text_width):
            draw.text(((left + right) // 2, y), line, fill=0, font=bold, anchor="ma")
            y += 54
    small = _font(30)
    for line in _wrap(draw, cell.entry.label, small, text_width):
        if y + 36 > bottom - pad:
            raise ValueError(f"label too long for its cell: {cell.entry.label!r}")
        draw.text(((left + right) // 2, y), line, fill=0, font=small, anchor="ma")
        y += 36


def render(page: Page, number: int, of: int) -> Image.Image:
    """One page as a bilevel 300 dpi image."""
    image = Image.new("L", PAGE, 255)
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN, MARGIN), f"PhotoSafe cards: {page.title}", fill=0, font=_font(72, True))
    width = PAGE[0] - 2 * MARGIN
    y = MARGIN + 110
    for line in _wrap(draw, page.instruction, _font(38), width):
        draw.text((MARGIN, y), line, fill=0, font=_font(38))
        y += 50
    footer = f"Print at 100% (no scaling). Page {number} of {of}."
    draw.text((MARGIN, PAGE[1] - MARGIN + 40), footer, fill=0, font=_font(30))
    for cell in page.cells:
        _draw_cell(image, cell)
    return image.point(lambda v: 255 if v >= 128 else 0).convert("1")


def write_pdf(out: Path, body_sites: Iterable[BodySite] = DEFAULT_BODY_SITES) -> list[Page]:
    """Renders the whole sheet to `out` as a multi-page A4 PDF; returns its layout."""
    pages = layout(sections(body_sites))
    images = [render(page, i, len(pages)) for i, page in enumerate(pages, start=1)]
    images[0].save(
        out,
        format="PDF",
        resolution=DPI,
        save_all=True,
        append_images=images[1:],
        title="PhotoSafe command cards",
    )
    return pages
