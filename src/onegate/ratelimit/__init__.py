"""Rate limits at the edge, in memory or shared through Redis."""
