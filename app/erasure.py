"""PIPL right to deletion (`DELETE /v1/users/{id}`, CONTRACTS §3): one function that asks
every domain to erase what it holds about a user. A domain that keeps personal data adds
one line here.

The profile goes first, leaving a tombstone (CONTRACTS §8): from then on no worker in any
process applies a message of the user sent before the erasure, so what is purged after it
(queued and dead-lettered items, reply state and log) cannot be refilled from the queue.
"""

from __future__ import annotations

import logging

from app.services import Services

log = logging.getLogger("mingpian.erasure")


def erase_user(services: Services, user_id: str) -> list[str]:
    """Erase the person this id belongs to: every id linked to it (issue 15) from every
    domain, then the links; return the domains that were asked, in order."""
    done: list[str] = []
    for uid in services.identities.all_ids(user_id):
        done = erase_one_id(services, uid)
    services.identities.forget(user_id)  # after the tombstones: no message slips between
    return [*done, "identities"]


def erase_one_id(services: Services, user_id: str) -> list[str]:
    """Erase one raw user id from every domain; return the domains that were asked."""
    services.pipeline.erase_user(user_id)  # profile, retained messages (nlp)
    # Queued and dead-lettered messages, events and reply jobs of the user (bot).
    queued = services.bot.inbox.erase_user(user_id)
    services.bot.replier.erase_user(user_id)  # the reply log and reply-rate state (bot)
    services.cards.erase_user(user_id)  # visits, clicks, share codes; ledger pseudonymised
    services.recommender.forget_user(user_id)  # what the user bought (recommendation filter)
    # The console's member name and tag index (its counters are keyed by a hash: anonymous).
    services.console.recorder.forget_member(user_id, services.tagger.taxonomy.names())
    # The contact's consent answer (issue 15); the tombstone makes the next tag sync take
    # mingpian's WeCom tags off the contact (bot/tags.py).
    services.customers.consent.forget(user_id)
    done = ["nlp", "queue", "replies", "cards", "recommendations", "console", "customers"]
    log.info("erased user %s from %s (%d queued items)", user_id, ", ".join(done),
             queued)
    return done
