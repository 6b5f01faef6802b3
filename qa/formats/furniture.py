"""Page furniture of a PDF's text: running heads and footers, page numbers and printer's marks, found by what
recurs across pages and by numbers that follow the page numbers."""
from __future__ import annotations

import functools
import re
from collections import Counter

_PAGE_NUMBER = re.compile(r"[-–—(\[]*\s*(?:page\s+)?(?:\d+|[ivxlcdm]+)(?:\s*(?:/|of)\s*\d+)?\s*[-–—)\]]*", re.I)
_DIGITS = re.compile(r"\d+")
_NUMERIC_WORD = re.compile(r"\S*\d\S*|(?<!\S)[ivxlc]{1,6}(?!\S)")


def _stamp(line: str) -> bool:
    """Three or more words with digits: a printer's or a file's stamp ("14773_01.qxd 2/10/04 3:51 PM Page 17")."""
    return sum(1 for word in line.split() if _DIGITS.search(word)) >= 3


@functools.lru_cache(maxsize=65536)
def _shape(line: str) -> str:
    # Any word with a digit in it is one placeholder: "14773_03_307-330_r7dy.qxd" and "…_r9jm.qxd" match, and so
    # do "Page 17" and "Page ix".
    return " ".join(_NUMERIC_WORD.sub("#", line.lower()).split())


def drop_furniture(pages: list[str]) -> list[str]:
    """Running heads and footers, page numbers and printer's marks, peeled off the top and bottom of each page:
    lines that carry the page's own number (at the document's usual offset), lines whose shape (numbers aside)
    stands at the edge of many pages, bare page numbers and rules; very short lines found on many pages, and any
    line found word for word on two pages of three."""
    filled = sum(1 for p in pages if p.strip())
    if filled < 3:
        return pages
    most = max(3, filled // 3)
    # The same line on two pages of three, wherever it stands: a drawing set's title block ("SHEET NO.", "VERSION
    # 0.01", its date) is laid out mid-page. Content seldom repeats word for word on most pages.
    nearly_all = max(4, -(-2 * filled // 3))
    exact = Counter(line for page in pages for line in {ln.strip() for ln in page.split("\n")} if line)
    split = [[ln for ln in page.split("\n") if not (len(ln.strip()) <= 6 and exact[ln.strip()] >= most)]
             for page in pages]
    edge_shapes: Counter[str] = Counter()
    edge_lines: Counter[str] = Counter()
    offsets: list[set[int]] = []  # per page: physical page minus each number on its first or last line
    for number, lines in enumerate(split, 1):
        content = [ln for ln in lines if ln.strip()]
        edge = content[:3] + content[-3:]
        edge_shapes.update({_shape(ln) for ln in edge})
        edge_lines.update({ln.strip() for ln in edge})
        # Page numbers stand on the first or last line: numbers further in (section numbers of a heading near
        # the top) would make offsets up.
        outer = content[:1] + content[-1:]
        offsets.append({number - int(n) for ln in outer for n in _DIGITS.findall(ln) if len(n) <= 4})

    usual: list[set[int]] = []  # per page: the offsets most nearby pages' edge numbers have (two where parts meet)
    for number in range(1, len(split) + 1):
        near = Counter(d for seen in offsets[max(0, number - 11) : number - 1] + offsets[number : number + 10]
                       for d in seen)
        top = max(near.values(), default=0)
        usual.append({d for d, count in near.items() if count >= max(3, 0.6 * top)})

    def at_usual_offset(line: str, number: int) -> bool:
        return any(number - int(n) in usual[number - 1] for n in _DIGITS.findall(line) if len(n) <= 4)

    # A running head that the content stream puts mid-page (beside a figure): a shape whose number is the
    # page's on (nearly) every page it is on; "Definition 26" matches its page only by chance.
    numbered_total, numbered_hits = Counter(), Counter()
    for number, lines in enumerate(split, 1):
        for line in (ln.strip() for ln in lines):
            if line and len(line) <= 120 and _DIGITS.search(line):
                shape = _shape(line)
                numbered_total[shape] += 1
                numbered_hits[shape] += at_usual_offset(line, number)

    def furniture(line: str, number: int, outermost: bool) -> bool:
        if len(line) > 120:
            return False
        # Rules, bare page numbers, and one-word printer's marks at the edge ("17Co", "S32").
        if not any(c.isalnum() for c in line) or _PAGE_NUMBER.fullmatch(line) or _shape(line) == "#":
            return True
        if edge_shapes[_shape(line)] >= most:
            # On the edge of many pages: furniture if it is the same text each time, or its numbers are the
            # page's ("Page 17"); a numbered heading ("Definition 26") is not.
            if (not _DIGITS.search(line) or edge_lines[line] >= most or _stamp(line)
                    or at_usual_offset(line, number)):
                return True
        return outermost and at_usual_offset(line, number)

    def everywhere(line: str, number: int) -> bool:
        # A line at the edge of many pages is furniture wherever it stands (a title page's "4TH PASS PAGES"),
        # numbers aside only if this very line stood at the edge of a few pages ("1ST PASS PAGES").
        if not line or len(line) > 120:
            return False
        if exact[line] >= nearly_all and len(line) <= 80:
            return True
        shape = _shape(line)
        if (numbered_total[shape] >= most and numbered_hits[shape] >= 0.8 * numbered_total[shape]
                and at_usual_offset(line, number)):
            return True
        if edge_shapes[shape] < most:
            return False
        # A numbered heading ("Definition 26") is not furniture; a printer's stamp full of numbers is.
        return not _DIGITS.search(line) or _stamp(line) or edge_lines[line] >= 3

    result = []
    for number, lines in enumerate(split, 1):
        keep = [True] * len(lines)
        for order in (range(len(lines)), range(len(lines) - 1, -1, -1)):  # peel from the top, then the bottom
            # One line a side may go for carrying the page number: a running head, not the "Definition 26"
            # under it.
            numbered = False
            for i in order:
                line = lines[i].strip()
                if not line:
                    keep[i] = False
                    continue
                if furniture(line, number, False):
                    keep[i] = False
                elif not numbered and furniture(line, number, True):
                    keep[i], numbered = False, True
                else:
                    break
        result.append("\n".join(ln for ln, k in zip(lines, keep) if k and not everywhere(ln.strip(), number)).strip())
    return result
