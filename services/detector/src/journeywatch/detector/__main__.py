"""`python -m journeywatch.detector [--stage both|sessionize|score]` runs the detector service."""

import os

from journeywatch.detector.settings import DetectorSettings
from journeywatch.shared.settings import (
    journeys_or_exit,
    service_parser,
    settings_or_exit,
)

PROG = "python -m journeywatch.detector"
# --help prints and exits, a bad variable is one line and exit 2, before anything starts.
parser = service_parser(
    PROG, "Consume touchpoints, detect anomalies, publish them.", DetectorSettings
)
parser.add_argument(
    "--stage",
    choices=("both", "sessionize", "score"),
    help=(
        "run one stage of the scale-out (sessionize: touchpoints → partials; score: partials → "
        "anomalies) or both in one process (the default); overrides JOURNEYWATCH_DETECTOR_STAGE"
    ),
)
args = parser.parse_args()
if args.stage is not None:
    os.environ["JOURNEYWATCH_DETECTOR_STAGE"] = args.stage
journeys_or_exit(settings_or_exit(DetectorSettings, PROG), PROG)

from journeywatch.detector.app import main  # noqa: E402 (after the checks above, on purpose)

main()
