"""``moesif_users_backfill``: send every existing user profile to Moesif."""
