"""PIPL right to deletion (`DELETE /v1/users/{id}`, CONTRACTS §3): one function that asks
every domain to erase what it holds about a user. A domain that keeps personal data adds
one line here.

The profile goes first, leaving a tombstone (CONTRACTS §8): from then on no worker in any
process applies a message of the user sent before the erasure, so what is purged after it
(queued and dead-lettered items, reply state and log) cannot be refilled from the queue.
"""

from __future__ import annotations

import logging

from app.services import INBOX, Services
from bot.inbox import erase_queued

log = logging.getLogger("mingpian.erasure")


def erase_user(services: Services, user_id: str) -> list[str]:
    """Erase the user from every domain; return the domains that were asked, in order."""
    done: list[str] = []
    if services.pipeline is not None:  # profile, retained messages (nlp)
        services.pipeline.erase_user(user_id)
        done.append("nlp")
    elif services.profiles is not None:
        services.profiles.erase_user(user_id)
        done.append("nlp")
    # Queued and dead-lettered messages, events and reply jobs of the user (bot).
    queued = erase_queued(services.store, INBOX, user_id)
    done.append("queue")
    if services.bot is not None:  # the reply log and reply-rate state (bot)
        services.bot.replier.erase_user(user_id)
        done.append("replies")
    if services.cards is not None:  # visits, clicks, share codes; ledger pseudonymised
        services.cards.erase_user(user_id)
        done.append("cards")
    if services.recommender is not None:  # what the user bought (recommendation filter)
        services.recommender.forget_user(user_id)
        done.append("recommendations")
    log.info("erased user %s from %s (%d queued items)", user_id, ", ".join(done) or "nothing",
             queued)
    return done
