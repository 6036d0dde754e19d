"""The WeCom chat archive (会话内容存档): Tencent's Finance SDK through ctypes, the mapping
of its messages, consent and the puller that never loses one (issue 14 points 4-6)."""
