"""Text bound for the user's terminal. Prompts, answers, token strings, model names and paths can
hold control characters (from a file, a tokenizer, a directory name): printed raw, ``\\x1b]0;...``
retitles the terminal, ``\\x1b]8;;URL`` plants a hyperlink, ``\\r`` overwrites the line. Everything
mechlab prints goes through `visible` (the CLI's one-line errors, its messages, rich tables through
`markup_safe`), which shows each such character escaped instead: ``\\x1b``, ``\\u202e``."""

import re

# C0 controls but tab and newline, DEL, C1 controls; and the Unicode bidirectional overrides and
# isolates, which reorder what is shown ("Trojan Source")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

LONG_WORD = 120  # an echoed input longer than this is shortened in one-line messages


def _escaped(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: str) -> str:
    """`text` with every control character shown escaped; tab and newline are kept."""
    return CONTROL.sub(_escaped, str(text))


def markup_safe(text: str) -> str:
    """`visible(text)` with rich's markup escaped too: for table cells, titles and captions."""
    from rich.markup import escape

    return escape(visible(text))


def one_line(text: str) -> str:
    """A message as one visible line: whitespace runs (newlines included) become one space, and a
    run of over LONG_WORD characters without spaces (a pasted input) is shortened in the middle."""
    words = []
    for word in visible(text).split():
        if len(word) > LONG_WORD:
            head, tail = word[: LONG_WORD // 2], word[-LONG_WORD // 4 :]
            left_out = len(word) - len(head) - len(tail)
            word = f"{head}...({left_out:,} more characters)...{tail}"
        words.append(word)
    return " ".join(words)
