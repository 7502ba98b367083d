"""`fallback-service preview`: how a text will be sent, decided by the service's own `decide`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import unicodedata
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from service.config import load_settings
from service.core.models import ChannelSettings, FailureEvent, MessageKind, Reason
from service.core.rules import Decision, Message, Policy, Registry, decide
from service.core.text import LOOKALIKES, Charset, Unencodable

# Stand-ins for what a preview does not ask about: the registry is off and quiet hours are
# ignored, so only the text and the advertising frame decide.
_RECIPIENT = "01000000000"
_SEND_NO = "0215990000"
_HINTS = {
    Reason.AD_FORMAT_INVALID: "the text must start with (광고) and end with 무료수신거부 and "
    "the 080 number",
    Reason.UNSUBSCRIBE_NUMBER_INVALID: "the opt-out number must be 080 and 7-8 more digits",
}


def add_parser(commands: Any) -> None:
    preview = commands.add_parser(
        "preview",
        help="show how a text will be sent: type, bytes, final text, what was changed",
        description=(
            "Show how a fallback text will be sent, using the limits and text policy of the "
            "FALLBACK_* environment (sender-number registry and quiet hours are not consulted). "
            "Exit status 0 when it would be sent, 1 when it would be rejected."
        ),
    )
    preview.add_argument("text", nargs="?", help="the body; read from standard input if omitted")
    preview.add_argument("--type", choices=["SMS", "LMS"], type=str.upper, help="force a type")
    preview.add_argument("--title", help="LMS title (resendTitle or the channel's title)")
    preview.add_argument("--plus-friend-id", help="the channel's search ID, a title fallback")
    preview.add_argument("--ad", action="store_true", help="an advertising fallback")
    preview.add_argument("--unsubscribe-no", help="080 opt-out number, required with --ad")
    preview.add_argument(
        "--framed",
        action="store_true",
        help="with --ad: the text already carries (광고) and the opt-out (a resendContent)",
    )
    preview.add_argument(
        "--international", action="store_true", help="recipient outside Korea (SMS only)"
    )
    preview.add_argument(
        "--unencodable",
        choices=[p.value for p in Unencodable],
        help="policy for characters the charset cannot carry (default: FALLBACK_UNENCODABLE)",
    )
    preview.add_argument(
        "--charset",
        choices=[c.value for c in Charset],
        type=str.lower,
        help="what the SMS service carries: cp949, or euc-kr (KS X 1001 only; "
        "default: FALLBACK_CHARSET)",
    )
    preview.add_argument(
        "--ad-name", help="with --ad: the sender's name after (광고) (the channel's adName)"
    )


def preview_decision(
    text: str,
    policy: Policy,
    *,
    kind: MessageKind | None = None,
    title: str | None = None,
    plus_friend_id: str | None = None,
    ad: bool = False,
    unsubscribe_no: str | None = None,
    framed: bool = False,
    international: bool = False,
    ad_name: str | None = None,
) -> Decision:
    """The decision the service would take for an event carrying `text` (§5).

    Raises pydantic's ValidationError when the service would dead-letter such an event.
    """
    event = FailureEvent.model_validate(
        {
            "requestId": "preview",
            "recipientSeq": 1,
            "senderKey": "preview",
            "plusFriendId": plus_friend_id,
            "recipientNo": _RECIPIENT,
            "countryCode": "1" if international else "82",
            "content": "" if framed else text,
            "isAd": ad,
            "resultCode": "preview",
            "resendParameter": {
                "resendType": kind.value if kind else None,
                "resendTitle": title,
                "resendContent": text if framed else None,
                "resendUnsubscribeNo": unsubscribe_no,
            },
        }
    )
    channel = ChannelSettings(enabled=True, sendNo=_SEND_NO, adName=ad_name)
    policy = dataclasses.replace(policy, registry=Registry.OFF, quiet_hours=None)
    # The clock only matters for quiet hours, which a preview ignores.
    return decide(event, channel, {}, already_requested=False, now=datetime.now(UTC), policy=policy)


def _codepoints(cluster: str) -> str:
    return " ".join(f"U+{ord(ch):04X}" for ch in cluster)


def _describe_char(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X} {name}".strip()


def report(message: Message, text: str, policy: Unencodable, limits_line: str) -> str:
    """What a preview prints for a message that would be sent."""
    lines = [f"type:       {message.kind.value}  ({limits_line})"]
    if message.title is not None:
        lines.append(f"title:      {message.title}  ({message.title_bytes} bytes)")
        if message.uncut_title is not None and message.title != message.uncut_title:
            lines.append(f"            cut from: {message.uncut_title}")
    lines.append(f"body bytes: {message.body_bytes}")
    lookalikes = Counter(ch for ch in unicodedata.normalize("NFC", text) if ch in LOOKALIKES)
    for ch, count in sorted(lookalikes.items()):
        target = LOOKALIKES[ch]
        shown = "removed" if target is None else f"-> {_describe_char(target)}"
        lines.append(f"normalised: {_describe_char(ch)} {shown} (x{count})")
    action = "dropped" if policy is Unencodable.DROP else "replaced by '?'"
    for cluster in message.replaced:
        lines.append(f"{action}: {cluster} ({_codepoints(cluster)})")
    if message.body != message.uncut_body:
        removed = len(message.uncut_body.encode("cp949")) - message.body_bytes
        lines.append(f"cut:        {removed} bytes removed from the body")
    lines.append("----- as recipients will get it -----")
    lines.append(message.body)
    lines.append("-------------------------------------")
    return "\n".join(lines)


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Print how `args.text` would be sent; 0 when it would be sent, 1 when rejected."""
    if args.ad and not args.unsubscribe_no:
        parser.error("--ad needs --unsubscribe-no")
    if args.framed and not args.ad:
        parser.error("--framed goes with --ad")
    if args.ad_name and not args.ad:
        parser.error("--ad-name goes with --ad")
    text = args.text
    if text is None:
        if sys.stdin.isatty():
            parser.error("preview needs TEXT or text on standard input")
        text = sys.stdin.read()
    settings = load_settings()
    unencodable = Unencodable(args.unencodable) if args.unencodable else settings.unencodable
    charset = Charset(args.charset) if args.charset else settings.charset
    policy = dataclasses.replace(settings.policy(), unencodable=unencodable, charset=charset)
    requested = MessageKind(args.type) if args.type else None
    try:
        decision = preview_decision(
            text,
            policy,
            kind=requested,
            title=args.title,
            plus_friend_id=args.plus_friend_id,
            ad=args.ad,
            unsubscribe_no=args.unsubscribe_no,
            framed=args.framed,
            international=args.international,
            ad_name=args.ad_name,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        print(f"REJECTED invalid_event: {problems}")
        return 1
    message = decision.message
    if message is None:
        reason = decision.outcome.reason
        assert reason is not None
        hint = _HINTS.get(reason)
        print(f"REJECTED {reason.value}" + (f": {hint}" if hint else ""))
        return 1
    limits = policy.limits
    limit = limits.sms_max_bytes if message.kind is MessageKind.SMS else limits.lms_max_bytes
    how = "forced" if requested else "chosen"
    limits_line = f"{how}; limit {limit} bytes, SMS up to {limits.sms_max_bytes}; {charset.value}"
    print(report(message, text, unencodable, limits_line))
    return 0
