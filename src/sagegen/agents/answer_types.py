"""What type a short answer reads as — number, date or entity — by plain, deterministic rules.

The generator is asked for an answer of one type (docs/design.md §1.1) and small models often ignore
it ("Helen Keller" for a number). :func:`classify` reads the answer text alone:

- **date**: an ISO or slashed date (``1999-03-01``, ``4/7/1776``), a month or weekday name
  (``March 1999``, ``July 4, 1776``, ``4th of July``, ``May``), a decade (``the 1990s``, ``'90s``),
  a century or millennium (``the 19th century``), a year with an era (``44 BC``, ``AD 79``,
  ``c. 1500``) or a range of years (``1939–1945``);
- **number**: a numeral, optionally signed, with thousands separators, decimals, a currency sign, a
  percent sign, a leading qualifier (``about``, ``over``...), a scale word (``million``) and a few
  words of unit (``3.5 km``, ``1,200 people``, ``$5 million``), or a number written in words
  (``forty``, ``three hundred``), or an ordinal (``5th``, ``third``);
- **entity**: anything else with a letter in it (a name, a place, a title: ``New Orleans``,
  ``Apollo 11``, ``Louis XIV``).

A bare whole number of three or four digits up to 2100 (``1999``, ``476``) reads as a year *or* a
count: it is compatible with both, so it takes the requested type when that is one of them, else
``number``. Such a bare year asked as an entity (the novel ``1984``) is reported as a number: a
false alarm we accept, since the label only marks a pair, it never drops one.

What a mismatch does (see ``sagegen.agents.generator``): the candidate keeps its text and records
``answer_type_found`` (in the ledger's round and in the dataset row, ``QAPair.answer_type_found``);
in a feedback round the reviser is told, through ``feedback_answer_type.j2``, that its answer is
not of the requested type. ``None`` means not checked (runs before this check, imported pairs).
"""

from __future__ import annotations

import re

from sagegen.records import AnswerType

_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december"
    "|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
)
_WEEKDAYS = "monday|tuesday|wednesday|thursday|friday|saturday|sunday"
_ORDINAL_WORDS = (
    "first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|thirteenth"
    "|fourteenth|fifteenth|sixteenth|seventeenth|eighteenth|nineteenth|twentieth|twenty-first"
)
_NUMBER_WORDS = (
    "zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen"
    "|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety"
    "|hundred|thousand|million|billion|trillion|dozen|half|a|and"
)
_QUALIFIER = (
    r"(?:(?:about|approximately|approx\.?|around|roughly|nearly|almost|over|under|more than|"
    r"less than|at least|at most|some|circa|ca\.|c\.|~|>|<)\s*)?"
)
_NUMERAL = r"[-+−]?(?:\d{1,3}(?:[,\u202f ]\d{3})+|\d+)(?:\.\d+)?"

#: Whole-answer date forms: ISO, slashed, a decade, a century, a year with its era, a range of years.
_DATE_FORMS = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        r"^\d{4}-\d{1,2}(?:-\d{1,2})?(?:T[\d:]+Z?)?$",
        r"^\d{1,2}[/.]\d{1,2}[/.]\d{2,4}$|^\d{4}/\d{1,2}/\d{1,2}$",
        r"^(?:the\s+|early\s+|late\s+|mid[- ])*(?:\d{3}0|'?\d0)'?s$",
        rf"^(?:the\s+|early\s+|late\s+|mid[- ])*(?:\d{{1,2}}(?:st|nd|rd|th)|{_ORDINAL_WORDS})"
        r"[- ](?:century|centuries|millennium)(?:\s+(?:bc|bce|ad|ce))?$",
        r"^(?:c\.\s*|circa\s+|ca\.\s*)?(?:(?:ad|ce)\s+\d{1,4}|\d{1,4}\s*(?:bc|bce|ad|ce|b\.c\.?|a\.d\.?))$",
        r"^(?:c\.|circa|ca\.)\s*\d{3,4}$",
        r"^\d{3,4}\s*(?:-|–|—|to)\s*\d{2,4}$",
    )
)
_MONTH = re.compile(rf"\b(?:{_MONTHS})\b\.?", re.IGNORECASE)
_WEEKDAY = re.compile(rf"\b(?:{_WEEKDAYS})\b", re.IGNORECASE)
_BARE_YEAR = re.compile(r"^\d{3,4}$")
_NUMBER = re.compile(
    rf"^{_QUALIFIER}(?:[$€£¥₹]\s*)?{_NUMERAL}(?:\s*(?:%|percent|per cent))?"
    r"(?:\s*(?:thousand|million|billion|trillion|bn)\b)?",
    re.IGNORECASE,
)
#: A word of unit after a number: lower case ("km", "people", "years") or a short symbol ("MW", "°C",
#: "Hz"); a capitalised word makes a name ("1984 Summer Olympics", "747 Jumbo").
_UNIT = re.compile(r"^(?:[a-z°²³µ/\-.$€£¥%]+|[A-Z]{1,3}|°[A-Z]|[A-Z][a-z])$")
_FRACTION = re.compile(r"^\d+\s*/\s*\d+$")
_ORDINAL = re.compile(rf"^(?:the\s+)?(?:\d+(?:st|nd|rd|th)|{_ORDINAL_WORDS})$", re.IGNORECASE)
#: Numbers in words; a leading "a" only before a scale word ("a dozen", not "a tree").
_WORDS_NUMBER = re.compile(
    rf"^{_QUALIFIER}(?!and\b)(?:a\s+(?=(?:dozen|hundred|thousand|million|billion)\b))?(?!a\b)"
    rf"(?:(?:{_NUMBER_WORDS})\b[\s-]*)+",
    re.IGNORECASE,
)


def classify(answer: str, requested: AnswerType | None = None) -> AnswerType | None:
    """The type ``answer`` reads as; ``None`` for an empty answer. Where the text fits several types
    (a bare year is a date or a number), ``requested`` wins if it is one of them."""
    text = answer.strip().strip("\"'“”*").strip().rstrip(".;:!").strip()
    if not text:
        return None
    kinds = _kinds(text)
    if requested in kinds:
        return requested
    return kinds[0]


def mismatch(answer: str, requested: AnswerType) -> AnswerType | None:
    """The type ``answer`` reads as when that is not ``requested``; ``None`` when it fits (or is empty)."""
    found = classify(answer, requested)
    return found if found is not None and found != requested else None


def _kinds(text: str) -> tuple[AnswerType, ...]:
    """The types ``text`` fits, the most likely first."""
    if _BARE_YEAR.match(text) and int(text) <= 2100:
        return ("number", "date")
    if any(form.match(text) for form in _DATE_FORMS):
        return ("date",)
    if (
        _FRACTION.match(text)
        or _ORDINAL.match(text)
        or (_is_count(text, _NUMBER) and not _MONTH.search(text))
    ):
        return ("number",)
    if _MONTH.search(text) or _WEEKDAY.search(text):
        # A month or weekday name makes a date only beside a day, a year or alone ("4 July 1776",
        # "March", "Monday"): "Theresa May" and "the Tuesday Club" stay entities.
        rest = _MONTH.sub(" ", _WEEKDAY.sub(" ", text))
        if all(
            w.isdigit() or re.fullmatch(r"\d+(?:st|nd|rd|th)|of|the|,|ad|bc|bce|ce", w, re.IGNORECASE)
            for w in rest.replace(",", " , ").split()
        ):
            return ("date",)
    if _is_count(text, _WORDS_NUMBER):
        return ("number",)
    return ("entity",)


def _is_count(text: str, head: re.Pattern[str]) -> bool:
    """``text`` is a number (``head`` at its start) followed by at most three words of unit."""
    m = head.match(text)
    if m is None:
        return False
    rest = text[m.end() :].split()
    return len(rest) <= 3 and all(_UNIT.match(w) for w in rest)
