# space stage rules (see docs/ARCHITECTURE.md)
