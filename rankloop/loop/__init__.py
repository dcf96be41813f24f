"""Closed feedback loops: rankers and recommenders served, clicked on, logged, relearned and
served again, round after round (`rankloop loop CONFIG`).

The contract lives in `rankloop.loop.base`; worlds and learners in `search` and `recommend`;
exploration layers in `explore`; online learners in `online`; interleaving in `interleave`;
measures in `measures`; running, checkpoints and resume in `run`; tables and plots in `report`.
"""
