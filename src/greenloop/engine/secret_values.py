"""The host's side of secrets: their values for a run, and masking them in what steps print."""

from __future__ import annotations

from collections.abc import Mapping

from greenloop.protocol import CommandStep, Pipeline, SetupError

MASK = "***"


def missing(pipeline: Pipeline, values: Mapping[str, str]) -> None:
    """Raise ``SetupError`` naming every secret the pipeline's steps read that has no value."""
    wanted: dict[str, list[str]] = {}
    for step in pipeline.steps:
        for use in step.secrets:
            wanted.setdefault(use.name, []).append(step.key)
    for service in pipeline.services:
        for use in service.secrets:
            wanted.setdefault(use.name, []).append(f"service {service.name}")
    absent = sorted(name for name in wanted if name not in values)
    if absent:
        named = "; ".join(f"{name} (read by {', '.join(wanted[name])})" for name in absent)
        raise SetupError(
            f"secret not given: {named}; export it, or pass --secret NAME=@FILE "
            "or --secret-env NAME=VARIABLE"
        )


def for_step(step: CommandStep, values: Mapping[str, str]) -> dict[str, str]:
    """``step``'s secrets read from the env, by the variable it reads each from."""
    return {use.env: values[use.name] for use in step.secrets if not use.as_file}


def files_for_step(step: CommandStep, values: Mapping[str, str]) -> dict[str, str]:
    """``step``'s secret files' values, by the variable that gets each file's path."""
    return {use.env: values[use.name] for use in step.secrets if use.as_file}


class Masker:
    """Replaces every secret value in a line with ``***`` (each line of a multi-line one)."""

    def __init__(self, values: Mapping[str, str]) -> None:
        pieces = {p for v in values.values() for p in v.splitlines() if p.strip()}
        # Longest first, so a value containing another is masked whole.
        self._pieces = sorted(pieces, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._pieces)

    def mask(self, text: str) -> str:
        """``text`` with every secret value replaced."""
        for piece in self._pieces:
            if piece in text:
                text = text.replace(piece, MASK)
        return text
