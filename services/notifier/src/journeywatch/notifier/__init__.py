"""JourneyWatch notifier: delivers anomaly lifecycle changes to webhooks, Slack and PagerDuty."""
