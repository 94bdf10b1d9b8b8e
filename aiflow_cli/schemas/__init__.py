"""File contracts between stages: every file aiflow reads or writes has a model here."""
