"""JourneyWatch shared code: the event contract, journeys, settings and adapters every service uses."""

__version__ = "0.1.0"
