"""Make process-controlled text safe for a terminal."""

from __future__ import annotations


def escape(text: str) -> str:
    r"""Escape control characters, terminal escapes and other unprintables.

    comm and command lines are chosen by whoever runs the process; printed
    raw they could move the cursor, rewrite earlier lines or hide text.

    >>> escape("evil\x1b[2Jname\n")
    'evil\\x1b[2Jname\\n'
    >>> escape("gr\u00fc\u00dfe")
    'grüße'
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)
