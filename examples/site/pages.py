"""The site's content: edit it while `greenloop dev` runs and watch the browser."""

TITLE: str = "Hello from greenloop"
GREETING: str = "This page was built from a green tree."
VISITS: int = 3


def items() -> list[str]:
    """The list shown on the page."""
    return [f"item {n}" for n in range(1, VISITS + 1)]
