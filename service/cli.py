"""`fallback-service`: run the service, or preview how a text will be sent."""

from __future__ import annotations

import argparse
import sys
import unicodedata
from collections import Counter
from collections.abc import Sequence

from service.config import ConfigError, load_settings
from service.models import MessageKind, Reason
from service.rules import AdFrame, Message, ad_format_ok, build_message, phone_digits
from service.text import LOOKALIKES, Unencodable, normalise


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fallback-service",
        description="AlimTalk to SMS/LMS fallback delivery (대체발송).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser(
        "run",
        help="run the service in the foreground (configured by FALLBACK_* variables)",
        description="Run the service in the foreground. SIGTERM or SIGINT stops it cleanly.",
    )

    preview = commands.add_parser(
        "preview",
        help="show how a text will be sent: type, bytes, final text, what was changed",
        description=(
            "Show how a fallback text will be sent, using the limits of the FALLBACK_* "
            "environment. Exit status 0 when it would be sent, 1 when it would be rejected."
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
        help="policy for characters CP949 cannot carry (default: FALLBACK_UNENCODABLE)",
    )
    return parser


def _codepoints(cluster: str) -> str:
    return " ".join(f"U+{ord(ch):04X}" for ch in cluster)


def _describe_char(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X} {name}".strip()


def _report(message: Message, text: str, policy: Unencodable, limits_line: str) -> str:
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


def preview(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Print how `args.text` would be sent; 0 when it would be sent, 1 when rejected."""
    text = args.text
    if text is None:
        if sys.stdin.isatty():
            parser.error("preview needs TEXT or text on standard input")
        text = sys.stdin.read()
    settings = load_settings()
    policy = Unencodable(args.unencodable) if args.unencodable else settings.unencodable
    limits = settings.policy().limits

    ad = None
    if args.ad:
        if not args.unsubscribe_no:
            parser.error("--ad needs --unsubscribe-no")
        digits = phone_digits(args.unsubscribe_no)
        if digits is None:
            parser.error("--unsubscribe-no must be digits (with -, spaces or . allowed)")
        if args.framed and not ad_format_ok(normalise(text), digits):
            print(
                f"REJECTED {Reason.AD_FORMAT_INVALID.value}: the text must start with (광고) "
                f"and carry 무료수신거부 {digits}"
            )
            return 1
        ad = AdFrame(unsubscribe_no=digits, given=args.framed)
    elif args.framed:
        parser.error("--framed goes with --ad")

    requested = MessageKind(args.type) if args.type else None
    result = build_message(
        text,
        titles=(args.title, args.plus_friend_id),
        ad=ad,
        requested=requested,
        international=args.international,
        limits=limits,
        unencodable=policy,
    )
    if isinstance(result, Reason):
        print(f"REJECTED {result.value}")
        return 1
    limit = limits.sms_max_bytes if result.kind is MessageKind.SMS else limits.lms_max_bytes
    how = "forced" if requested else "chosen"
    limits_line = f"{how}; limit {limit} bytes, SMS up to {limits.sms_max_bytes}"
    print(_report(result, text, policy, limits_line))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fallback-service` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "preview":
            return preview(args, parser)
        from service.app import run  # the service pulls in Kafka; preview does not need it

        return run()
    except ConfigError as exc:
        print(f"fallback-service: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
