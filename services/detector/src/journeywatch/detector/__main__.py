"""`python -m journeywatch.detector` runs the detector service."""

from journeywatch.detector.app import main

main()
