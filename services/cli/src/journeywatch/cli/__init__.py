"""The journeywatch command line: run the local stack, simulate traffic, replay history."""
