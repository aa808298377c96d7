"""Alignment: what preference optimisation, reward models and RL from feedback share (completion log-probs,
the reference model)."""
