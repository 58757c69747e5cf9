"""`--label OLD=NEW` of the plot scripts beside this file."""


def parse_renames(items: list[str]) -> dict[str, str]:
    """The plot scripts' `--label OLD=NEW` options as {OLD: NEW}; SystemExit names a bad one."""
    bad = [item for item in items if "=" not in item]
    if bad:
        raise SystemExit(f"--label: expected OLD=NEW, got {bad[0]!r}")
    return dict(item.split("=", 1) for item in items)
