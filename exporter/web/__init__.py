"""The HTTP side: a Falcon app that serves what the refresher built, never the broker."""
