"""The plan's settings (`MINGPIAN_PLAN__*`, CONTRACTS §7) and the one place they are clamped.

The settings keep what the operator wrote (so an event records it, and `Settings` shows it);
`PlanConfig.limits()` is what the engine applies: compliance (CONTRACTS §7.6) holds whatever
the settings say.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

DAY_S = 86_400
BP_DENOMINATOR = 10_000
MAX_LEVELS_CEILING = 2
MAX_TOTAL_BP_CEILING = 3_000


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


@dataclass(frozen=True)
class PlanLimits:
    """The settings as the engine applies them, whatever the configuration says."""

    threshold_cents: int
    slide_count: int
    direct_bp: int
    team_bp: int
    peer_bp: int
    max_levels: int
    max_total_bp: int
    freeze_s: int


class PlanConfig(BaseModel):
    """Plan settings (`MINGPIAN_PLAN__*`), integers, rates in basis points."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    agent_threshold_cents: int = 1
    slide_count: int = 2
    direct_bp: int = 1000
    team_bp: int = 500
    peer_bp: int = 2000
    max_levels: int = 2
    max_total_bp: int = 3000
    freeze_days: int = 7

    def limits(self) -> PlanLimits:
        """Return the settings clamped to what the engine may apply.

        Rates to 0..10000, `slide_count` and `freeze_days` to >= 0, the agent threshold to at
        least 1 cent (E = 0 never promotes), `max_levels` to 0..2, `max_total_bp` to 0..3000.
        """
        return PlanLimits(
            threshold_cents=max(1, self.agent_threshold_cents),
            slide_count=max(0, self.slide_count),
            direct_bp=_clamp(self.direct_bp, 0, BP_DENOMINATOR),
            team_bp=_clamp(self.team_bp, 0, BP_DENOMINATOR),
            peer_bp=_clamp(self.peer_bp, 0, BP_DENOMINATOR),
            max_levels=_clamp(self.max_levels, 0, MAX_LEVELS_CEILING),
            max_total_bp=_clamp(self.max_total_bp, 0, MAX_TOTAL_BP_CEILING),
            freeze_s=max(0, self.freeze_days) * DAY_S,
        )


def effective_max_levels(config: PlanConfig) -> int:
    """Return the max_levels the engine enforces (clamped to 0..2)."""
    return config.limits().max_levels


def effective_max_total_bp(config: PlanConfig) -> int:
    """Return the max_total_bp the engine enforces (clamped to 0..3000)."""
    return config.limits().max_total_bp
