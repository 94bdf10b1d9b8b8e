"""The library call behind each command that spans stages (plan or train, then export)."""
