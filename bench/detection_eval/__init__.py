"""The labelled journey-incident corpus and its evaluation of the pure detector core (`make eval-detection`)."""
