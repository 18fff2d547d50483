"""Tools and environments for multi-turn rollouts (TRL's ``tools`` / ``environment_factory``), and the code sandbox."""
