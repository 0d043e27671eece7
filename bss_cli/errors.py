"""Error types. Library code raises these; the CLI prints ``error: <message>`` and exits 1."""

from __future__ import annotations

MAX_ROWS_LISTED = 5


class BSSError(Exception):
    """Bad input or a failed precondition that the user can fix. Never a bug."""


class ManifestError(BSSError):
    """A dataset manifest that cannot be used as it is."""

    def __init__(self, path: object, problems: list[str]):
        self.path = str(path)
        self.problems = list(problems)
        head = f"{self.path}: {len(problems)} problem(s) in the manifest"
        shown = problems[:25]
        more = len(problems) - len(shown)
        lines = [head] + [f"  - {p}" for p in shown]
        if more:
            lines.append(f"  ... and {more} more")
        super().__init__("\n".join(lines))


class PredictionsError(BSSError):
    """A predictions file (from bss or another trainer) that does not fit its schema."""


class ArtifactError(BSSError):
    """A Parquet artifact that is missing, unreadable or of the wrong kind or version."""


class ConfigError(BSSError):
    """A flag or setting with a value that cannot be used."""


def rows_text(rows) -> str:
    """'row 3' or 'rows 2, 7, ... and 12 more' for messages."""
    rows = list(rows)
    shown = ", ".join(str(r) for r in rows[:MAX_ROWS_LISTED])
    if len(rows) > MAX_ROWS_LISTED:
        shown += f" and {len(rows) - MAX_ROWS_LISTED} more"
    return ("row " if len(rows) == 1 else "rows ") + shown
