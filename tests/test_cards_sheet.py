"""The printed command-card sheet decodes back to the cards it is labelled as.

`photosafe-provision cards` writes the PDF; poppler's pdftoppm rasterises it at 150 dpi (half the
resolution it was drawn at, as a cheap office scanner would see a print), and zxing-cpp's reader
decodes each card's cell on its own and each whole page. Every code must classify, as a station
would classify it, to exactly the card whose label the sheet prints in that cell, and every card
of the sheet must be found.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image

from photosafe.protocol import cards
from photosafe.protocol.consent import ImpliedCategory, Relationship
from photosafe.protocol.identity import Command, IdentityRules, classify
from photosafe.provisioning import cards_sheet
from photosafe.provisioning.cli import main

RULES = IdentityRules(nhs_gs1_company_prefix="9506000")
RASTER_DPI = 150
EXTRA = "40983000:Upper arm:sides"  # upper arm structure, added on the command line


@pytest.fixture(scope="module")
def sheet(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[cards_sheet.Page], list[Path]]:
    folder = tmp_path_factory.mktemp("sheet")
    out = folder / "cards.pdf"
    assert main(["cards", "--out", str(out), "--body-site", EXTRA]) == 0
    assert out.read_bytes().startswith(b"%PDF")
    subprocess.run(
        ["pdftoppm", "-r", str(RASTER_DPI), "-png", str(out), str(folder / "page")], check=True
    )
    sites = [*cards_sheet.DEFAULT_BODY_SITES, cards_sheet.parse_body_site(EXTRA)]
    pages = cards_sheet.layout(cards_sheet.sections(sites))
    return pages, sorted(folder.glob("page-*.png"))


def decode(image: Image.Image) -> list[zxingcpp.Barcode]:
    return zxingcpp.read_barcodes(image, text_mode=zxingcpp.TextMode.Plain)


def card_of(barcode: zxingcpp.Barcode) -> cards.Card:
    """What a station makes of the scan: classify the AIM identifier and text, as it does."""
    scanned = classify(barcode.symbology_identifier + barcode.text, RULES)
    assert isinstance(scanned, Command), scanned
    assert scanned.card == cards.parse_card(barcode.text)
    return scanned.card


def test_the_pdf_has_one_a4_page_per_laid_out_page(
    sheet: tuple[list[cards_sheet.Page], list[Path]],
) -> None:
    pages, images = sheet
    assert len(images) == len(pages) >= 5
    for path in images:
        with Image.open(path) as image:
            width_mm, height_mm = (25.4 * px / RASTER_DPI for px in image.size)
        assert (round(width_mm), round(height_mm)) == (210, 297)


def test_each_cell_decodes_to_the_card_it_is_labelled_as(
    sheet: tuple[list[cards_sheet.Page], list[Path]],
) -> None:
    pages, images = sheet
    scale = RASTER_DPI / cards_sheet.DPI
    checked = 0
    for page, path in zip(pages, images, strict=True):
        with Image.open(path) as raster:
            grey = raster.convert("L")
        for cell in page.cells:
            left, top, right, bottom = (round(v * scale) for v in cell.box)
            crop = grey.crop((left, top, right, bottom))
            found = decode(crop)
            assert len(found) == 1, f"{page.title}: {cell.entry.label}"
            assert found[0].format == zxingcpp.BarcodeFormat.QRCode
            assert card_of(found[0]) == cell.entry.card, cell.entry.label
            assert cards.card_label(cell.entry.card) == cell.entry.label
            checked += 1
    assert checked == sum(len(page.cells) for page in pages)


def test_every_card_of_the_sheet_is_found_on_its_page(
    sheet: tuple[list[cards_sheet.Page], list[Path]],
) -> None:
    pages, images = sheet
    for page, path in zip(pages, images, strict=True):
        with Image.open(path) as raster:
            found = [card_of(barcode) for barcode in decode(raster.convert("L"))]
        expected = [cell.entry.card for cell in page.cells]
        assert sorted(map(cards.card_text, found)) == sorted(map(cards.card_text, expected))


def test_the_sheet_holds_every_kind_of_card() -> None:
    printed = [entry.card for section in cards_sheet.sections() for entry in section.entries]
    assert len(printed) == len(set(printed)), "a card is printed twice"
    kinds = {type(card) for card in printed}
    assert kinds == {
        cards.ExplicitConsentCard,
        cards.ParentalConsentCard,
        cards.BestInterestsCard,
        cards.ImpliedConsentCard,
        cards.BodySiteCard,
        cards.IntimateCard,
        cards.ApproveCard,
        cards.DiscardCard,
        cards.CaptureCard,
        cards.CancelCard,
        cards.DoneCard,
    }
    implied = {card.category for card in printed if isinstance(card, cards.ImpliedConsentCard)}
    assert implied == set(ImpliedCategory)
    parental = {card.decided_by for card in printed if isinstance(card, cards.ParentalConsentCard)}
    assert parental == set(Relationship)
    explicit = [card for card in printed if isinstance(card, cards.ExplicitConsentCard)]
    assert {card.deidentified_use for card in explicit} == {True, False}
    assert {len(card.purposes) for card in explicit} == {1, 2, 3}


@pytest.mark.parametrize("site", cards_sheet.DEFAULT_BODY_SITES, ids=lambda s: s.term)
def test_default_body_sites_are_snomed_concepts_with_their_sides(
    site: cards_sheet.BodySite,
) -> None:
    assert cards.snomed_concept_problem(site.code) is None
    printed = {
        entry.card
        for section in cards_sheet.sections([site])
        for entry in section.entries
        if isinstance(entry.card, cards.BodySiteCard)
    }
    sides: set[cards.Laterality] = {"left", "right"} if site.sided else {"none"}
    assert printed == {cards.BodySiteCard(site.code, side) for side in sides}


def test_a_body_site_given_twice_is_printed_once() -> None:
    sites = [*cards_sheet.DEFAULT_BODY_SITES, cards_sheet.parse_body_site("85562004:Hand:sides")]
    printed = [entry.card for section in cards_sheet.sections(sites) for entry in section.entries]
    assert len(printed) == len(set(printed))


@pytest.mark.parametrize(
    "text",
    [
        "69536006:Head",
        "14975008",
        "14975008:",
        "abc:Head",
        "14975008:Forearm:both",
        f"1:{'x' * 50}",
    ],
)
def test_a_bad_body_site_is_refused_on_the_command_line(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["cards", "--out", str(tmp_path / "x.pdf"), "--body-site", text])
    assert exit_info.value.code == 2
    assert "--body-site" in capsys.readouterr().err
    assert not (tmp_path / "x.pdf").exists()
