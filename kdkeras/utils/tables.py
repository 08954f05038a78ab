"""The one table formatter: rows as a Markdown table or aligned plain text."""

__all__ = ["format_cell", "format_table"]


def format_cell(value):
    """A table cell: `-` for `None`, floats to 4 significant digits, ints with commas."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_table(rows, columns=None, *, markdown=True, title=None):
    """Formats rows as a table.

    Args:
        rows: a list of dicts (keyed by column) or of sequences (one value
            per column). Strings are printed as they are; other values go
            through `format_cell`.
        columns: the header. Defaults to the keys of the first dict row.
        markdown: a Markdown table (`| a | b |`) or, when `False`, plain
            text with aligned columns. Defaults to `True`.
        title: a line printed above the table. Defaults to none.

    Returns:
        The table as one string, without a trailing newline.
    """
    rows = list(rows)
    if columns is None:
        if not rows or not isinstance(rows[0], dict):
            raise ValueError(
                "Expected `columns` when the rows are not dicts. "
                f"Received: columns=None, rows={rows[:1]!r}"
            )
        columns = list(rows[0])
    columns = [str(c) for c in columns]
    cells = [
        [format_cell(v) for v in ([row.get(c) for c in columns] if isinstance(row, dict) else row)]
        for row in rows
    ]
    out = [title] if title else []
    if markdown:
        out.append("| " + " | ".join(columns) + " |")
        out.append("|" + "---|" * len(columns))
        out += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(out)
    widths = [max(len(v) for v in column) for column in zip(columns, *cells)]

    def line(values):
        return "  ".join(v.ljust(w) for v, w in zip(values, widths))

    out.append(line(columns))
    out.append(line(["-" * w for w in widths]))
    out += [line(row) for row in cells]
    return "\n".join(out)
