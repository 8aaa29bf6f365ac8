"""The console's screenshots in the docs: each referenced image exists, each one is made.

tests/test_console_screenshots.py makes docs/console/NAME.png for each NAME of its
SHOTS (from the demo, with CONSOLE_SCREENSHOTS=docs/console); README.md and
docs/console.md show them. No stale image is left, none is missing.
"""

from __future__ import annotations

import re
from pathlib import Path

from testkit import REPO_ROOT
from tests.test_console_screenshots import SHOTS

SCREENSHOTS = REPO_ROOT / "docs" / "console"
PAGES = (REPO_ROOT / "README.md", REPO_ROOT / "docs" / "console.md")


def images(page: Path) -> set[Path]:
    """The local images a Markdown page shows, resolved against its folder."""
    found = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", page.read_text())
    return {(page.parent / target).resolve() for target in found if "://" not in target}


def test_every_image_the_docs_show_exists() -> None:
    for page in PAGES:
        missing = sorted(str(p) for p in images(page) if not p.is_file())
        assert missing == [], f"{page.name} shows images that do not exist: {missing}"


def test_the_screenshots_are_those_the_browser_test_makes_and_the_docs_show() -> None:
    made = {(SCREENSHOTS / f"{name}.png").resolve() for name in SHOTS}
    present = {p.resolve() for p in SCREENSHOTS.glob("*.png")}
    assert present == made, {"stale": present - made, "missing": made - present}
    for page in PAGES:
        shown = {p for p in images(page) if p.parent == SCREENSHOTS.resolve()}
        assert shown == made, f"{page.name}: not shown {made - shown}, unknown {shown - made}"
