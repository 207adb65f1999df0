"""JourneyWatch api: live journey state, anomalies and alert lifecycle over REST."""
