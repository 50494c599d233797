"""The migration toolkit (to come): stages, sticky buckets, shadow traffic, diffs, rollout."""
