# train stage rules (see docs/ARCHITECTURE.md)
