"""`fallback-service preview`: how a text will be sent, decided by the service's own `decide`."""

import dataclasses
import sys
import unicodedata
from collections import Counter
from datetime import UTC, datetime
from typing import Annotated

import typer
from pydantic import ValidationError

from service.config import load_settings
from service.core.models import (
    ChannelSettings,
    FailureEvent,
    MessageKind,
    Reason,
    describe_errors,
)
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


def preview(
    text: Annotated[
        str | None, typer.Argument(help="The body; read from standard input if omitted.")
    ] = None,
    kind: Annotated[
        MessageKind | None, typer.Option("--type", case_sensitive=False, help="Force a type.")
    ] = None,
    title: Annotated[
        str | None, typer.Option(help="LMS title (resendTitle or the channel's title).")
    ] = None,
    plus_friend_id: Annotated[
        str | None, typer.Option(help="The channel's search ID, a title fallback.")
    ] = None,
    ad: Annotated[bool, typer.Option("--ad", help="An advertising fallback.")] = False,
    unsubscribe_no: Annotated[
        str | None, typer.Option(help="080 opt-out number, required with --ad.")
    ] = None,
    framed: Annotated[
        bool,
        typer.Option(
            "--framed",
            help="With --ad: the text already carries (광고) and the opt-out (a resendContent).",
        ),
    ] = False,
    international: Annotated[
        bool, typer.Option("--international", help="Recipient outside Korea (SMS only).")
    ] = False,
    unencodable: Annotated[
        Unencodable | None,
        typer.Option(
            case_sensitive=False,
            help="Policy for characters the charset cannot carry (default: FALLBACK_UNENCODABLE).",
        ),
    ] = None,
    charset: Annotated[
        Charset | None,
        typer.Option(
            case_sensitive=False,
            help="What the SMS service carries: cp949, or euc-kr (KS X 1001 only; default: "
            "FALLBACK_CHARSET).",
        ),
    ] = None,
    ad_name: Annotated[
        str | None,
        typer.Option(help="With --ad: the sender's name after (광고) (the channel's adName)."),
    ] = None,
) -> None:
    """Show how a fallback text will be sent: type, bytes, the text as sent, what changed.

    Uses the limits and text policy of the FALLBACK_* environment and the service's own decision
    (the sender-number registry and quiet hours are not consulted). Exit status 0 when it would
    be sent, 1 when it would be rejected.
    """
    if ad and not unsubscribe_no:
        raise typer.BadParameter("--ad needs --unsubscribe-no", param_hint="--ad")
    if framed and not ad:
        raise typer.BadParameter("--framed goes with --ad", param_hint="--framed")
    if ad_name and not ad:
        raise typer.BadParameter("--ad-name goes with --ad", param_hint="--ad-name")
    if text is None:
        if sys.stdin.isatty():
            raise typer.BadParameter("preview needs TEXT or text on standard input")
        text = sys.stdin.read()
    settings = load_settings()
    policy_unencodable = unencodable or settings.unencodable
    chosen_charset = charset or settings.charset
    policy = dataclasses.replace(
        settings.policy(), unencodable=policy_unencodable, charset=chosen_charset
    )
    requested = kind
    try:
        decision = preview_decision(
            text,
            policy,
            kind=requested,
            title=title,
            plus_friend_id=plus_friend_id,
            ad=ad,
            unsubscribe_no=unsubscribe_no,
            framed=framed,
            international=international,
            ad_name=ad_name,
        )
    except ValidationError as exc:
        print(f"REJECTED invalid_event: {describe_errors(exc)}")
        raise typer.Exit(1) from None
    message = decision.message
    if message is None:
        reason = decision.outcome.reason
        assert reason is not None
        hint = _HINTS.get(reason)
        print(f"REJECTED {reason.value}" + (f": {hint}" if hint else ""))
        raise typer.Exit(1)
    limits = policy.limits
    limit = limits.sms_max_bytes if message.kind is MessageKind.SMS else limits.lms_max_bytes
    how = "forced" if requested else "chosen"
    limits_line = (
        f"{how}; limit {limit} bytes, SMS up to {limits.sms_max_bytes}; {chosen_charset.value}"
    )
    print(report(message, text, policy_unencodable, limits_line))
