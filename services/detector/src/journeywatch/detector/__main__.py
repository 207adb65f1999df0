"""`python -m journeywatch.detector` runs the detector service."""

from journeywatch.detector.settings import DetectorSettings
from journeywatch.shared.settings import (
    journeys_or_exit,
    parse_service_args,
    settings_or_exit,
)

PROG = "python -m journeywatch.detector"
# --help prints and exits, a bad variable is one line and exit 2, before anything starts.
parse_service_args(PROG, "Consume touchpoints, detect anomalies, publish them.", DetectorSettings)
journeys_or_exit(settings_or_exit(DetectorSettings, PROG), PROG)

from journeywatch.detector.app import main  # noqa: E402 (after the checks above, on purpose)

main()
