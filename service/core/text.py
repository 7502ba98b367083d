"""Text preparation, CP949 byte counting and cutting (contract §5.2, §5.6).

Pure functions over strings; nothing here knows about Kafka, events or the clock.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

import regex

# §5.2 step 2. None removes the character.
LOOKALIKES: dict[str, str | None] = {
    "\u00a0": " ",
    **{chr(cp): " " for cp in range(0x2002, 0x200B)},
    "\u202f": " ",
    **{chr(cp): "-" for cp in range(0x2010, 0x2015)},
    "\u2212": "-",
    "\u20a9": "\uffe6",  # ₩ → ￦
    "\u2022": "\u00b7",  # • → ·
    "\u301c": "\uff5e",  # 〜 → ～
    "\u200b": None,
    "\u2060": None,
    "\ufeff": None,
    "\u00ad": None,
}
_LOOKALIKE_TABLE = str.maketrans(LOOKALIKES)

# NFC turns three characters that CP949 holds into ones it does not (Å ANGSTROM SIGN becomes
# U+00C5; two compatibility hanja become unified ones outside KS X 1001). Mapping them back after
# normalising keeps them deliverable instead of turning them into '?'. Not in the contract's list:
# see docs/decisions.md.
CP949_AFTER_NFC: dict[str, str] = {
    "\u00c5": "\u212b",
    "\u90ce": "\uf92c",
    "\u96b8": "\uf9b8",
}
_AFTER_NFC_TABLE = str.maketrans(CP949_AFTER_NFC)

# Variation selectors and joiners (§5.2 step 3).
_IGNORABLE = regex.compile("[\ufe00-\ufe0f\u200c\u200d]")
_LOOKALIKE_CHARS = regex.compile(
    "[" + regex.escape("".join(LOOKALIKES) + "".join(CP949_AFTER_NFC)) + "]"
)


class Charset(StrEnum):
    """What the SMS service can carry (FALLBACK_CHARSET, §5.2 step 5).

    `cp949`: all of CP949 (UHC), every Hangul syllable. `euc-kr`: only KS X 1001 (EUC-KR
    완성형), so the 8,822 syllables outside it (`똠`, `햏`, `뷁`, ...) cannot be carried.
    """

    CP949 = "cp949"
    EUC_KR = "euc-kr"


# CP949 bytes that are all KS X 1001: ASCII, or two bytes each in 0xA1-0xFE. Checked on the
# CP949 encoding because Python's euc_kr codec silently spells extended syllables as 8 bytes.
_KS_X_1001 = re.compile(rb"(?:[\x00-\x7f]|[\xa1-\xfe][\xa1-\xfe])*")


def in_ks_x_1001(text: str) -> bool:
    """Whether every character of `text` is ASCII or in KS X 1001 (EUC-KR can carry it)."""
    try:
        raw = text.encode("cp949")
    except UnicodeEncodeError:
        return False
    return _KS_X_1001.fullmatch(raw) is not None


class Unencodable(StrEnum):
    """What happens to a grapheme cluster that CP949 cannot carry (FALLBACK_UNENCODABLE)."""

    REPLACE = "replace"
    DROP = "drop"
    REJECT = "reject"


@dataclass(slots=True)
class PreparedText:
    """Text as recipients get it, and the clusters that could not be carried.

    With the `reject` policy `unencodable` non-empty means the text must not be sent; `text` then
    shows it as `replace` would, for previews.
    """

    text: str
    unencodable: tuple[str, ...] = ()
    size: int = -1  # CP949 bytes of `text`, when already known

    @property
    def bytes(self) -> int:
        return self.size if self.size >= 0 else byte_length(self.text)


def _encodes(text: str, charset: Charset = Charset.CP949) -> bool:
    if charset is Charset.EUC_KR:
        return in_ks_x_1001(text)
    try:
        text.encode("cp949")
    except UnicodeEncodeError:
        return False
    return True


def normalise(text: str) -> str:
    """§5.2 steps 1-2: NFC, newlines, look-alikes, invisible characters."""
    if text.isascii():
        # ASCII is already NFC and holds no look-alike; only carriage returns can change.
        return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text
    text = unicodedata.normalize("NFC", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _LOOKALIKE_CHARS.search(text):
        text = text.translate(_LOOKALIKE_TABLE)
        # Removing an invisible character can bring a base and a mark together again.
        if not unicodedata.is_normalized("NFC", text):
            text = unicodedata.normalize("NFC", text)
        text = text.translate(_AFTER_NFC_TABLE)
    return text


# A run of ASCII and Hangul syllables (all in CP949, none joining its neighbour) ends where the
# next character would join its last one; anything else is taken one grapheme cluster at a time.
# Segmenting only what needs it keeps emoji-bearing text fast; tests compare it with plain \X.
_PIECES = regex.compile(
    r"([\x00-\x7f\uac00-\ud7a3]+"
    r"(?![\p{Grapheme_Cluster_Break=Extend}\p{Grapheme_Cluster_Break=SpacingMark}"
    r"\p{Grapheme_Cluster_Break=ZWJ}\p{Grapheme_Cluster_Break=V}\p{Grapheme_Cluster_Break=T}]))"
    r"|(\X)"
)


def carry(text: str, policy: Unencodable, charset: Charset = Charset.CP949) -> PreparedText:
    """§5.2 step 3: per grapheme cluster, drop selectors/joiners, then keep, replace or drop."""
    if not _IGNORABLE.search(text) and _encodes(text, charset):
        return PreparedText(text)
    out: list[str] = []
    unencodable: list[str] = []

    def refuse(cluster: str) -> None:
        unencodable.append(cluster)
        if policy is not Unencodable.DROP:
            out.append("?")

    for run, cluster in _PIECES.findall(text):
        if run:
            if charset is Charset.CP949 or _encodes(run, charset):
                out.append(run)
                continue
            # EUC-KR lacks some syllables of the run; each syllable is a cluster of its own.
            for ch in run:
                if _encodes(ch, charset):
                    out.append(ch)
                else:
                    refuse(ch)
            continue
        kept = _IGNORABLE.sub("", cluster)
        if len(kept) > 1:
            kept = unicodedata.normalize("NFC", kept).translate(_AFTER_NFC_TABLE)
        if _encodes(kept, charset):
            out.append(kept)
        else:
            refuse(cluster)
    return PreparedText("".join(out), tuple(unencodable))


def prepare(text: str, policy: Unencodable, charset: Charset = Charset.CP949) -> PreparedText:
    """Apply every rule of §5.2 to a body or a title: `carry(normalise(text))`, made fast."""
    if text.isascii():
        text = normalise(text)
        return PreparedText(text, (), len(text))
    try:
        raw = text.encode("cp949")
    except UnicodeEncodeError:
        return carry(normalise(text), policy, charset)
    # Text that CP949 encodes holds no selector, joiner or look-alike but the soft hyphen, so
    # only NFC, carriage returns, that hyphen and (EUC-KR) extended syllables can change it.
    if (
        "\r" in text
        or "\u00ad" in text
        or not unicodedata.is_normalized("NFC", text)
        or (charset is Charset.EUC_KR and _KS_X_1001.fullmatch(raw) is None)
    ):
        return carry(normalise(text), policy, charset)
    return PreparedText(text, (), len(raw))


def byte_length(text: str) -> int:
    """CP949 byte length. Never `euc_kr`: it writes 8 bytes for syllables outside KS X 1001."""
    return len(text.encode("cp949"))


def cut(text: str, max_bytes: int) -> str:
    """Longest prefix of prepared `text` within `max_bytes`, trailing whitespace removed.

    Text within the limit is returned unchanged. After `prepare` every grapheme cluster is a
    single code point (no CP949 character joins a neighbour; tests pin this), so a code point
    boundary is a character boundary.
    """
    encoded = text.encode("cp949")
    if len(encoded) <= max_bytes:
        return text
    # A lead byte left alone at the end is an incomplete character; 'ignore' drops just it.
    return encoded[: max(max_bytes, 0)].decode("cp949", errors="ignore").rstrip()
