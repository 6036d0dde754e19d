"""The chat bot: WeChat/WeCom callbacks (callback.py), dedup keys (dedup.py), the durable
front door (inbox.py), the inbox worker (handlers.py), replies (replies.py), the platform
send APIs and shared access tokens (platform.py) and chat-archive ingest (ingest.py)."""
