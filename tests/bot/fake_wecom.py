"""The WeCom / Official Account API stand-in the tests talk to (bot/standin.py, also used by
`mingpian demo`): a real local HTTP server speaking the platforms' protocol."""

from bot.standin import SEND_PATHS, Recorded
from bot.standin import WeComStandIn as FakeWeCom

__all__ = ["SEND_PATHS", "FakeWeCom", "Recorded"]
