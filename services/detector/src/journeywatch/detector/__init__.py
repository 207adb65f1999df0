"""JourneyWatch detector: sessionizes touchpoints, scores journey metrics online, publishes anomalies."""
