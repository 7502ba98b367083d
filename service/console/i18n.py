"""The console's words in Korean and English (§12), chosen by the browser or the switch."""

from __future__ import annotations

LANGUAGES = ("ko", "en")

_WORDS: dict[str, tuple[str, str]] = {
    # key: (Korean, English)
    "title": ("대체발송 콘솔", "Fallback console"),
    "channels": ("대체 발송 관리", "Channels"),
    "sender_numbers": ("발신번호", "Sender numbers"),
    "fallbacks": ("발송 조회", "Send query"),
    "dead_letters": ("처리 실패 메시지", "Dead letters"),
    "audit": ("변경 이력", "Audit"),
    "logout": ("로그아웃", "Log out"),
    "login": ("로그인", "Log in"),
    "username": ("사용자", "User"),
    "password": ("비밀번호", "Password"),
    "login_failed": ("사용자 또는 비밀번호가 맞지 않습니다.", "Wrong user or password."),
    "session_expired": (
        "세션이 만료되었습니다. 다시 로그인하세요.",
        "Session expired: log in again.",
    ),
    "role_viewer": ("조회 전용", "viewer"),
    "role_operator": ("운영자", "operator"),
    "sender_key": ("발신 프로필 키", "Sender key"),
    "enabled": ("대체 발송", "Fallback"),
    "on": ("사용", "on"),
    "off": ("사용 안 함", "off"),
    "send_no": ("발신번호", "Sender number"),
    "lms_title": ("LMS 제목", "LMS title"),
    "unsubscribe_no": ("080 수신거부 번호", "080 opt-out number"),
    "ad_name": ("광고 발신자명", "Ad sender name"),
    "result_codes": ("대체 발송할 결과 코드", "Result codes that fall back"),
    "result_codes_hint": ("쉼표로 구분, 비우면 모든 코드", "comma-separated; empty: every code"),
    "edit": ("수정", "Edit"),
    "save": ("저장", "Save"),
    "delete": ("삭제", "Delete"),
    "turn_on": ("켜기", "Turn on"),
    "turn_off": ("끄기", "Turn off"),
    "new_channel": ("채널 추가", "Add a channel"),
    "no_channels": ("설정된 채널이 없습니다.", "No channel is configured."),
    "saved": ("저장했습니다.", "Saved."),
    "unchanged": ("바뀐 것이 없어 저장하지 않았습니다.", "Nothing changed; nothing written."),
    "deleted": ("삭제했습니다.", "Deleted."),
    "warning": ("주의", "Warning"),
    "number": ("번호", "Number"),
    "status": ("상태", "Status"),
    "register": ("등록", "Register"),
    "block": ("차단", "Block"),
    "activate": ("활성화", "Activate"),
    "no_sender_numbers": ("등록된 발신번호가 없습니다.", "No sender number is registered."),
    "request_id": ("요청 ID", "Request ID"),
    "fallback_id": ("대체발송 ID", "Fallback ID"),
    "from": ("시작", "From"),
    "to": ("끝", "To"),
    "reason": ("사유", "Reason"),
    "any": ("전체", "any"),
    "search": ("조회", "Search"),
    "csv": ("CSV 다운로드", "Download CSV"),
    "time": ("시각", "Time"),
    "type": ("유형", "Type"),
    "request_status": ("요청 상태", "Request"),
    "send_status": ("발송 상태", "Send"),
    "final_status": ("결과", "Result"),
    "provider": ("발송 업체", "Provider"),
    "no_results": ("조회 결과가 없습니다.", "Nothing found."),
    "next_page": ("다음", "Next"),
    "story": ("처리 내역", "Story"),
    "answer": ("고객이 받았나요?", "Did the customer get it?"),
    "outcomes": ("처리 결과", "Outcomes"),
    "request": ("SMS 요청 (번호 가림)", "SMS request (numbers masked)"),
    "request_not_on_kafka": (
        "SMS 요청은 발송 업체 API로 바로 보냈습니다 (출력 토픽에 없음).",
        "The SMS request went straight to the provider's API (not on the output topic).",
    ),
    "request_not_found": (
        "출력 토픽에서 SMS 요청을 찾지 못했습니다 (보존 기간이 지났을 수 있음).",
        "The SMS request was not found on the output topic (past its retention?).",
    ),
    "not_found": ("찾을 수 없습니다.", "Not found."),
    "error": ("오류", "Error"),
    "detail": ("상세", "Detail"),
    "key": ("키", "Key"),
    "value_text": ("값 (텍스트, 번호 가림)", "Value (text, numbers masked)"),
    "value_hex": ("값 (16진수, 번호 가림)", "Value (hex, numbers masked)"),
    "headers": ("헤더", "Headers"),
    "replay": ("다시 보내기", "Replay"),
    "replay_preview": ("다시 보낼 메시지", "What a replay would send"),
    "replay_confirm": ("확인: 입력 토픽으로 다시 보내기", "Confirm: send them to the input topic"),
    "replay_none": ("다시 보낼 메시지가 없습니다.", "Nothing to replay."),
    "replayed": ("{n}건을 입력 토픽으로 다시 보냈습니다.", "{n} sent back to the input topic."),
    "filter": ("필터", "Filter"),
    "no_dead_letters": ("처리 실패 메시지가 없습니다.", "No dead letter."),
    "actor": ("변경자", "Who"),
    "via": ("경로", "Through"),
    "table": ("대상", "Table"),
    "before": ("변경 전", "Before"),
    "after": ("변경 후", "After"),
    "no_audit": ("변경 이력이 없습니다.", "No change recorded."),
    "index_caught_up": ("색인 최신", "Index caught up"),
    "index_behind": ("색인 따라가는 중: 남은 레코드", "Index catching up: records behind"),
    "index_newest": ("마지막 결과", "newest outcome"),
    "index_error": ("Kafka를 읽지 못함", "Cannot read Kafka"),
    "index_starting": ("색인 시작 중", "Index starting"),
    "forbidden": ("권한이 없습니다.", "Not allowed."),
    "viewer_note": ("조회 전용 계정입니다.", "This account can only read."),
    "bad_time": ("RFC 3339 시각이 아닙니다", "not an RFC 3339 time"),
    "capped": ("건까지만 보여줍니다", "shown at most"),
    "language": ("English", "한국어"),
}


def choose(accept_language: str | None, chosen: str | None) -> str:
    """The language: the switch's cookie, else the browser's first of ours, else Korean."""
    if chosen in LANGUAGES:
        return chosen
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag[:2] in LANGUAGES:
            return tag[:2]
    return "ko"


def words(language: str) -> dict[str, str]:
    """Every key's text in `language`."""
    at = LANGUAGES.index(language)
    return {key: pair[at] for key, pair in _WORDS.items()}
