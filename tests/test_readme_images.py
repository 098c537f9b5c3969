"""Every image the README shows is committed, so that it renders on a fresh clone and on
the forge (an ignored or forgotten file is a broken image)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)[^)]*\)|<img[^>]+src=\"([^\"]+)\"")
SIGNATURES = {".png": b"\x89PNG\r\n\x1a\n", ".svg": b"<svg"}


def readme_images() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [first or second for first, second in IMAGE.findall(text)]


def test_the_readme_shows_images():
    assert "docs/demo-storm-octobre-2017.png" in readme_images()
    assert "docs/status-page.png" in readme_images()


def test_every_readme_image_is_a_committed_local_file():
    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True,
                                 text=True, check=True).stdout.splitlines())
    for path in readme_images():
        assert not path.startswith(("http://", "https://")), \
            f"{path}: commit the image instead of linking it"
        assert path in tracked, f"{path} is not in git (ignored or never added?)"
        content = (ROOT / path).read_bytes()
        assert content.startswith(SIGNATURES[Path(path).suffix]), f"{path} is not an image"
