"""Training and evaluation of callveil's models; development only, never shipped or imported
by ``gateway``."""
