"""Business cards, share codes, referral binding and the compliant 2+1 referral plan."""
