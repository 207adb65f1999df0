"""`python -m journeywatch.notifier` runs the notifier service."""

from journeywatch.notifier.app import main

main()
