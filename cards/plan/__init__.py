"""The compliant "链动2+1" referral plan (CONTRACTS §7), a file per role.

    config.py   PlanConfig (MINGPIAN_PLAN__*) and its compliance clamping, in one place
    records.py  what the plan stores and hands on, as pydantic models (their dumps are the docs)
    errors.py   typed refusals (AppErrors), raised where the refusal is found
    state.py    PlanState, the one write buffer of users and orders
    engine.py   PlanEngine: the rules, bindings and orders in, ledger drafts out
    views.py    the HTTP answers of /v1/rewards and /v1/referrals as response models
"""

from cards.plan.config import (
    BP_DENOMINATOR,
    DAY_S,
    MAX_LEVELS_CEILING,
    MAX_TOTAL_BP_CEILING,
    PlanConfig,
    PlanLimits,
    effective_max_levels,
    effective_max_total_bp,
)
from cards.plan.engine import (
    REASON_MAX_LEVELS,
    REASON_MAX_TOTAL,
    REASON_REFUND,
    PlanEngine,
    replay,
)
from cards.plan.errors import (
    BindingRefusedError,
    InvalidEventError,
    InvalidOrderError,
    OrderConflictError,
    PlanRefusal,
    Refusal,
    refusal_from_stored,
)
from cards.plan.records import (
    BindEvent,
    BindPolicy,
    EntryKind,
    JSONDict,
    LedgerDraft,
    OrderEvent,
    OrderItem,
    OrderRecord,
    OrderStatus,
    RewardRecord,
    Role,
    Rule,
    UserNode,
)
from cards.plan.state import NS_ORDER, NS_USER, MemoryPlanState, PlanState
from cards.plan.views import (
    Balance,
    EntryStatus,
    ReferralView,
    RewardEntry,
    RewardsView,
    balances,
    entry_status,
    referral_view,
    rewards_view,
)

__all__ = [
    "BP_DENOMINATOR",
    "DAY_S",
    "MAX_LEVELS_CEILING",
    "MAX_TOTAL_BP_CEILING",
    "NS_ORDER",
    "NS_USER",
    "REASON_MAX_LEVELS",
    "REASON_MAX_TOTAL",
    "REASON_REFUND",
    "Balance",
    "BindEvent",
    "BindPolicy",
    "BindingRefusedError",
    "EntryKind",
    "EntryStatus",
    "InvalidEventError",
    "InvalidOrderError",
    "JSONDict",
    "LedgerDraft",
    "MemoryPlanState",
    "OrderConflictError",
    "OrderEvent",
    "OrderItem",
    "OrderRecord",
    "OrderStatus",
    "PlanConfig",
    "PlanEngine",
    "PlanLimits",
    "PlanRefusal",
    "PlanState",
    "ReferralView",
    "Refusal",
    "RewardEntry",
    "RewardRecord",
    "RewardsView",
    "Role",
    "Rule",
    "UserNode",
    "balances",
    "effective_max_levels",
    "effective_max_total_bp",
    "entry_status",
    "referral_view",
    "refusal_from_stored",
    "replay",
    "rewards_view",
]
