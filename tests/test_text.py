"""§5.2 and §5.6: preparation, counting and cutting, rule by rule and as properties."""

from __future__ import annotations

import sys
import unicodedata

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.text import (
    CP949_AFTER_NFC,
    PreparedText,
    Unencodable,
    byte_length,
    carry,
    cut,
    normalise,
    prepare,
)

R, D, J = Unencodable.REPLACE, Unencodable.DROP, Unencodable.REJECT


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("똠햏뷁", 6),  # outside KS X 1001, still 2 bytes each in CP949
        ("가", 2),
        ("a", 1),
        ("", 0),
        ("인증번호 123456", 15),
        ("￦·～", 6),
    ],
)
def test_byte_length_is_cp949(raw: str, expected: int) -> None:
    assert byte_length(raw) == expected


def test_euc_kr_is_not_the_counter() -> None:
    # Python's euc_kr writes an 8-byte escape for 똠; counting with it would say 8, not 2.
    assert len("똠".encode("euc_kr")) == 8
    assert byte_length("똠") == 2
    assert byte_length("똠햏뷁" * 15) == 90


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # NFC: a decomposed 한 (conjoining jamo) becomes the syllable.
        ("\u1112\u1161\u11ab", "한"),
        ("e\u0301", "\u00e9"),
        # newlines
        ("a\r\nb", "a\nb"),
        ("a\rb", "a\nb"),
        ("a\r\n\r\nb\r", "a\n\nb\n"),
        # spaces
        ("a\u00a0b", "a b"),
        ("a\u2002b\u2003c\u2009d\u200ae\u202ff", "a b c d e f"),
        # dashes
        ("1\u20102\u20113\u20124\u20135\u20146\u22127", "1-2-3-4-5-6-7"),
        # symbols
        ("\u20a91000", "\uffe61000"),
        ("\u2022 item", "\u00b7 item"),
        ("10\u301c20", "10\uff5e20"),
        # invisibles
        ("a\u200bb\u2060c\ufeffd\u00ade", "abcde"),
        # removing an invisible brings a base and its mark together: still NFC
        ("e\u200b\u0301", "\u00e9"),
        # CP949 characters that NFC would take out of CP949 are mapped back
        ("\u212b", "\u212b"),
        ("\u00c5", "\u212b"),
        ("\uf92c", "\uf92c"),
    ],
)
def test_normalise(raw: str, expected: str) -> None:
    assert normalise(raw) == expected


@pytest.mark.parametrize(
    ("raw", "policy", "text", "unencodable"),
    [
        ("♥\ufe0f", R, "♥", ()),  # emoji presentation selector dropped, heart kept
        ("I ♥\ufe0f U", R, "I ♥ U", ()),
        ("ok 🎉", R, "ok ?", ("🎉",)),
        ("ok 🎉", D, "ok ", ("🎉",)),
        ("ok 🎉", J, "ok ?", ("🎉",)),
        # one '?' per user-perceived character, however many code points it has
        ("👨\u200d👩\u200d👧", R, "?", ("👨\u200d👩\u200d👧",)),
        ("👍🏽", R, "?", ("👍🏽",)),
        ("🇰🇷", R, "?", ("🇰🇷",)),
        ("🇰🇷🇯🇵", R, "??", ("🇰🇷", "🇯🇵")),
        ("a👍🏽b👨\u200d👩\u200d👧c", D, "abc", ("👍🏽", "👨\u200d👩\u200d👧")),
        # a lone selector or joiner is simply removed, not counted
        ("\ufe0fa", R, "a", ()),
        ("a\u200cb", R, "ab", ()),
        # keycap: digit + VS16 + combining enclosing keycap is one cluster CP949 cannot carry
        ("1\ufe0f\u20e3", R, "?", ("1\ufe0f\u20e3",)),
        ("줄1 🎉\n줄2 ok", R, "줄1 ?\n줄2 ok", ("🎉",)),
        ("똠햏뷁", R, "똠햏뷁", ()),
    ],
)
def test_carry_per_cluster(
    raw: str, policy: Unencodable, text: str, unencodable: tuple[str, ...]
) -> None:
    result = prepare(raw, policy)
    assert result.text == text
    assert result.unencodable == unencodable


def test_nfd_input_is_counted_after_composition() -> None:
    nfd = unicodedata.normalize("NFD", "안녕하세요")
    assert len(nfd) > 5
    prepared = prepare(nfd, R)
    assert prepared.text == "안녕하세요"
    assert byte_length(prepared.text) == 10


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("a" * 90, 90, "a" * 90),  # exactly at the limit: untouched
        ("a" * 91, 90, "a" * 90),  # one over: cut
        ("가" * 45, 90, "가" * 45),
        ("가" * 46, 90, "가" * 45),
        ("a" + "가" * 45, 90, "a" + "가" * 44),  # odd budget would split a syllable: 89 bytes
        ("가나다", 5, "가나"),
        ("가나다", 1, ""),
        ("abc   def", 5, "abc"),  # trailing spaces left at the cut are removed
        ("abc\n\ndef", 5, "abc"),
        ("abc\u3000\u3000def", 6, "abc"),  # ideographic space is whitespace too
        ("  abc  ", 100, "  abc  "),  # no cut, no stripping
        ("", 0, ""),
    ],
)
def test_cut(text: str, limit: int, expected: str) -> None:
    assert cut(text, limit) == expected
    assert byte_length(cut(text, limit)) <= limit


def test_every_cp949_character_is_its_own_cluster() -> None:
    """Why `cut` may cut at code points: no CP949 character joins a neighbour."""
    joiners = []
    for cp in range(sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        try:
            ch.encode("cp949")
        except UnicodeEncodeError:
            continue
        if ch == "\r":
            continue  # preparation turns every CR into LF
        for other in ("a", "가"):
            if (
                len(regex.findall(r"\X", other + ch)) != 2
                or len(regex.findall(r"\X", ch + other)) != 2
            ):
                joiners.append(ch)
    assert joiners == []


# ---- properties over arbitrary Unicode -------------------------------------------------------

texts = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"]),
    max_size=300,
)
policies = st.sampled_from([R, D, J])


@given(texts, policies)
@settings(max_examples=400, deadline=None)
def test_prepared_text_is_cp949_and_stable(raw: str, policy: Unencodable) -> None:
    once = prepare(raw, policy)
    once.text.encode("cp949")  # never raises
    assert "\r" not in once.text
    twice = prepare(once.text, policy)
    assert twice.text == once.text
    assert twice.unencodable == ()


@given(texts, policies)
@settings(max_examples=200, deadline=None)
def test_prepared_clusters_are_code_points(raw: str, policy: Unencodable) -> None:
    text = prepare(raw, policy).text
    assert regex.findall(r"\X", text) == list(text)


@given(texts, st.integers(min_value=0, max_value=400))
@settings(max_examples=400, deadline=None)
def test_cut_fits_and_is_a_prefix(raw: str, limit: int) -> None:
    text = prepare(raw, R).text
    result = cut(text, limit)
    assert byte_length(result) <= limit
    assert text.startswith(result)
    assert len(result) <= len(text)
    if byte_length(text) <= limit:
        assert result == text
    else:
        # the longest prefix that fits, then trailing whitespace removed
        used, end = 0, 0
        for ch in text:
            used += 1 if ord(ch) < 0x80 else 2
            if used > limit:
                break
            end += 1
        assert result == text[:end].rstrip()


def test_cut_is_the_longest_prefix() -> None:
    text = "가a나b다"
    for limit in range(12):
        expected = max(
            (text[:i] for i in range(len(text) + 1) if byte_length(text[:i]) <= limit), key=len
        ).rstrip()
        assert cut(text, limit) == expected


def test_carry_fast_path_returns_same_object_for_plain_text() -> None:
    plain = "주문이 접수되었습니다"
    assert carry(plain, R).text is plain


@given(texts, policies)
@settings(max_examples=400, deadline=None)
def test_prepare_fast_path_equals_the_steps(raw: str, policy: Unencodable) -> None:
    fast, steps = prepare(raw, policy), carry(normalise(raw), policy)
    assert (fast.text, fast.unencodable) == (steps.text, steps.unencodable)
    assert fast.bytes == steps.bytes == byte_length(fast.text)


@pytest.mark.parametrize("raw", ["a\r\nb", "가\u00adb", "\u212b", "\uf92c", "가\r", "\u1100\u1161"])
def test_prepare_fast_path_edges(raw: str) -> None:
    assert prepare(raw, R).text == carry(normalise(raw), R).text


def reference_carry(text: str, policy: Unencodable) -> PreparedText:
    """§5.2 step 3 word for word: every grapheme cluster on its own."""
    out, unencodable = [], []
    after_nfc: dict[str, str | int | None] = dict(CP949_AFTER_NFC)
    for cluster in regex.findall(r"\X", text):
        kept = regex.sub("[\ufe00-\ufe0f\u200c\u200d]", "", cluster)
        kept = unicodedata.normalize("NFC", kept).translate(str.maketrans(after_nfc))
        try:
            kept.encode("cp949")
        except UnicodeEncodeError:
            unencodable.append(cluster)
            kept = "" if policy is D else "?"
        out.append(kept)
    return PreparedText("".join(out), tuple(unencodable))


# Characters that make segmentation interesting: joiners, selectors, marks, jamo, flags,
# modifiers, pictographs CP949 holds (♥ ☎ ™) and ones it does not.
tricky = st.sampled_from(
    [
        *"a가힣 \n?♥☎™©®#1",
        "\u200d",
        "\u200c",
        "\ufe0f",
        "\ufe0e",
        "\u0301",
        "\u20e3",
        "\u1100",
        "\u1161",
        "\u11a8",
        "\u11c3",
        "\U0001f1f0",
        "\U0001f1f7",
        "\U0001f3fd",
        "\U0001f44d",
        "\U0001f468",
        "\U0001f389",
        "\u0600",
        "\u0915",
        "\u094d",
        "\u093f",
        "\u3131",
    ]
)
tricky_texts = st.lists(tricky, max_size=40).map("".join)


@given(st.one_of(tricky_texts, texts), policies)
@settings(max_examples=1000, deadline=None)
def test_carry_equals_per_cluster_reference(raw: str, policy: Unencodable) -> None:
    text = normalise(raw)
    result, expected = carry(text, policy), reference_carry(text, policy)
    assert (result.text, result.unencodable) == (expected.text, expected.unencodable)
