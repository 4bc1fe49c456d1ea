"""A tiny static-site generator: renders pages.py into OUT/index.html."""

import html
import sys
from pathlib import Path

import pages


def render() -> str:
    """The whole page as HTML."""
    items = "".join(f"<li>{html.escape(item)}</li>" for item in pages.items())
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(pages.TITLE)}</title></head>\n<body>\n"
        f"<h1 id='title'>{html.escape(pages.TITLE)}</h1>\n"
        f"<p id='greeting'>{html.escape(pages.GREETING)}</p>\n<ul>{items}</ul>\n"
        "</body></html>\n"
    )


def main() -> None:
    """Write the site into the folder named on the command line."""
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "dist")
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.html").write_text(render())


if __name__ == "__main__":
    main()
