"""The documentation keeps up with the code: generated tables equal their command's output, links resolve."""

from __future__ import annotations

import re
from pathlib import Path

from superres.cli.doc_tables import BEGIN, END, SECTIONS, generated_blocks, markdown_section
from superres.zoo.pretrained import list_pretrained
from superres.zoo.records import RETIRED, SELF_ENSEMBLE

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_generated_table_in_the_docs_is_its_commands_output() -> None:
    stale, shown = [], set()
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        blocks = generated_blocks(text)
        name = page.relative_to(ROOT).as_posix()
        # Every begin marker has its end, and names a section the command knows.
        assert text.count(BEGIN) == text.count(END) == len(blocks), f"{name}: unpaired table markers"
        for section, block, _ in blocks:
            assert section in SECTIONS, f"{name}: no section {section!r} (superres models --markdown SECTION)"
            shown.add(section)
            if block != "\n".join(markdown_section(section)) + "\n":
                stale.append(f"{name}: superres models --markdown {section}")
    assert not stale, f"stale generated tables (python tools/regenerate_docs.py rewrites them): {stale}"
    assert shown == set(SECTIONS), f"sections no page shows: {sorted(set(SECTIONS) - shown)}"


def test_the_records_do_not_shadow_the_cards() -> None:
    # A retired model that ships again must leave RETIRED; a self-ensemble score names a model
    # that ships or was retired.
    shipped = {(entry.name, entry.scale) for entry in list_pretrained()}
    retired = {(card["name"], card["scale"]) for card in RETIRED["cards"]}
    assert not shipped & retired
    assert {(score["name"], score["scale"]) for score in SELF_ENSEMBLE["scores"]} <= shipped | retired


def test_the_tables_other_than_precision_need_no_torch() -> None:
    import subprocess
    import sys

    sections = [section for section in SECTIONS if section != "precision"]
    code = (
        "import sys, io, contextlib\n"
        "from superres.cli import main\n"
        f"for section in {sections!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert main(['models', '--markdown', section]) == 0\n"
        "assert 'torch' not in sys.modules, 'superres models --markdown imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_relative_links_in_the_readme_and_docs_resolve() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_the_readme_stays_a_page_for_users() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250
    first_upscale = next(i for i, line in enumerate(lines) if line.startswith("superres upscale"))
    assert first_upscale < 40


def test_the_readmes_default_denoise_strengths_are_the_cards() -> None:
    # The which-model table quotes what `--model real` alone means; a re-shipped `real` changes it.
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    quoted = re.search(r"`real` alone: ([\d.]+) at x4, ([\d.]+) at x2", text)
    assert quoted, "README: the which-model table no longer says what `real` alone means"
    cards = {entry.scale: entry.card for entry in list_pretrained() if entry.name == "real"}
    assert float(quoted[1]) == cards[4].get("default_denoise", 1)
    assert float(quoted[2]) == cards[2].get("default_denoise", 1)
