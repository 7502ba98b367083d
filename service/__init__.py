"""AlimTalk to SMS/LMS fallback delivery service (대체발송)."""
