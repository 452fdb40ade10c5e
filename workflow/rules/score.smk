# score stage rules (see docs/ARCHITECTURE.md)
