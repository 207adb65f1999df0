"""JourneyWatch ingest service: validates touchpoint events and writes them to Kafka."""
